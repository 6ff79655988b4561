"""Kubernetes object metadata and the envelope every resource shares."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pistio.api.base import Int64, IstioModel, KubeModel


class OwnerReference(KubeModel):
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class ObjectMeta(KubeModel):
    name: str = ""
    generate_name: str = ""
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str = ""
    resource_version: str = ""
    generation: Int64 = 0
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)


class TypedObject(IstioModel):
    """apiVersion, kind and metadata: the part every resource has."""

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


class SpecObject(TypedObject):
    """An Istio-style resource: envelope, a typed ``spec``, and a free-form ``status``.

    Subclasses are made by :func:`pistio.api.registry.register_spec_kind`.
    """

    status: dict[str, Any] | None = None
