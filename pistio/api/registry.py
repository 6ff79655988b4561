"""The table of resource kinds: group, versions, kind → typed model.

Each API module registers its kinds when imported; :func:`lookup` imports them all first, so
callers never see a half-filled table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, create_model

from pistio.api.meta import SpecObject, TypedObject

# Modules whose import registers kinds. Order does not matter.
_API_MODULES = (
    "pistio.api.networking",
    "pistio.api.security",
    "pistio.api.telemetry",
    "pistio.api.extensions",
    "pistio.api.gateway_api",
    "pistio.api.kube",
)


@dataclass(frozen=True)
class KindInfo:
    group: str  # "" for the Kubernetes core group
    kind: str
    versions: tuple[str, ...]
    model: type[TypedObject]
    namespaced: bool = True
    plural: str = ""
    spec: type[BaseModel] | None = None
    # Kinds we recognise but do not type in depth (the spec stays a free-form mapping).
    shallow: bool = False
    short_names: tuple[str, ...] = field(default=())

    @property
    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)

    @property
    def preferred_api_version(self) -> str:
        return self.api_versions[0]


_BY_GROUP_KIND: dict[tuple[str, str], KindInfo] = {}
_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _API_MODULES:
            importlib.import_module(name)


def register_kind(
    group: str,
    kind: str,
    versions: tuple[str, ...],
    model: type[TypedObject],
    *,
    namespaced: bool = True,
    plural: str | None = None,
    spec: type[BaseModel] | None = None,
    shallow: bool = False,
    short_names: tuple[str, ...] = (),
) -> KindInfo:
    info = KindInfo(
        group=group,
        kind=kind,
        versions=versions,
        model=model,
        namespaced=namespaced,
        plural=plural or (kind.lower() + ("es" if kind.endswith("s") else "s")),
        spec=spec,
        shallow=shallow,
        short_names=short_names,
    )
    _BY_GROUP_KIND[(group, kind)] = info
    return info


def register_spec_kind(
    group: str,
    kind: str,
    versions: tuple[str, ...],
    spec: type[BaseModel],
    *,
    namespaced: bool = True,
    plural: str | None = None,
    shallow: bool = False,
    short_names: tuple[str, ...] = (),
) -> type[SpecObject]:
    """Register an Istio-style kind (envelope + ``spec``) and return its object model."""
    model = create_model(
        f"{kind}Object",
        __base__=SpecObject,
        spec=(spec, Field(default_factory=spec)),
    )
    register_kind(
        group,
        kind,
        versions,
        model,
        namespaced=namespaced,
        plural=plural,
        spec=spec,
        shallow=shallow,
        short_names=short_names,
    )
    return model


def split_api_version(api_version: str) -> tuple[str, str]:
    """``networking.istio.io/v1`` → (group, version); ``v1`` → ("", "v1")."""
    if "/" in api_version:
        group, _, version = api_version.partition("/")
        return group, version
    return "", api_version


def lookup(api_version: str, kind: str) -> KindInfo:
    """The kind for an apiVersion/kind pair; ValueError with a kubectl-like reason if unknown."""
    _ensure_loaded()
    group, version = split_api_version(api_version)
    info = _BY_GROUP_KIND.get((group, kind))
    if info is None:
        known = [i for i in _BY_GROUP_KIND.values() if i.kind == kind]
        if known:
            allowed = ", ".join(v for i in known for v in i.api_versions)
            raise ValueError(
                f'no matches for kind "{kind}" in version "{api_version}" (known versions: {allowed})'
            )
        raise ValueError(f'no matches for kind "{kind}" in version "{api_version}"')
    if version not in info.versions:
        raise ValueError(
            f'no matches for kind "{kind}" in version "{api_version}" '
            f"(known versions: {', '.join(info.api_versions)})"
        )
    return info


def find_kind(kind: str) -> KindInfo | None:
    """A kind by name alone (first registered group wins), or by plural or short name."""
    _ensure_loaded()
    low = kind.lower()
    for info in _BY_GROUP_KIND.values():
        if low in (info.kind.lower(), info.plural, *info.short_names):
            return info
    return None


def all_kinds() -> list[KindInfo]:
    _ensure_loaded()
    return list(_BY_GROUP_KIND.values())
