"""What the user applied: every object by kind, namespace and name, as ``kubectl`` keeps it.

``apply`` and ``delete`` are all-or-nothing per call: the whole batch is checked with the same
validation ``pistio validate`` uses (and the namespace rule the API server applies) before
anything changes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pistio.api.registry import lookup
from pistio.config.resource import Document, Source
from pistio.config.validation import check_document

# Namespaces a Kubernetes cluster starts with.
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "istio-system"})

Key = tuple[str, str, str]  # (kind, namespace or "", name)


@dataclass
class StoredObject:
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str
    data: dict[str, Any]
    source_dir: str  # where relative container paths resolve (the manifest's directory)
    created: float = field(default_factory=time.time)
    generation: int = 1

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)

    @property
    def labels(self) -> dict[str, str]:
        meta = self.data.get("metadata") or {}
        return dict(meta.get("labels") or {})


class BatchError(ValueError):
    """The batch was refused; ``errors`` says why, one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Incoming:
    data: dict[str, Any]
    file: str
    line: int = 1
    source_dir: str = "."


def _normalise(item: Incoming, default_namespace: str) -> tuple[StoredObject | None, list[str]]:
    data = copy.deepcopy(item.data)
    where = f"{item.file}:{item.line}"
    try:
        info = lookup(str(data.get("apiVersion", "")), str(data.get("kind", "")))
    except ValueError as exc:
        return None, [f"{where}: {exc}"]
    meta = data.setdefault("metadata", {})
    if not isinstance(meta, dict):
        return None, [f"{where}: metadata: must be a mapping"]
    namespace = ""
    if info.namespaced:
        namespace = str(meta.get("namespace") or default_namespace)
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    doc = Document(data=data, source=Source(item.file, item.line))
    checked = check_document(doc)
    if checked.errors:
        return None, [f"{e}" for e in checked.errors]
    name = str(meta.get("name") or "")
    return StoredObject(info.kind, namespace, name, data, item.source_dir), []


class Store:
    def __init__(self) -> None:
        self.objects: dict[Key, StoredObject] = {}

    def of_kind(self, kind: str, namespace: str | None = None) -> list[StoredObject]:
        return [o for o in self.objects.values()
                if o.kind == kind and (namespace is None or o.namespace == namespace)]

    def namespaces(self) -> dict[str, dict[str, str]]:
        """Namespace name → labels, the built-in ones included."""
        out = {ns: {} for ns in BUILTIN_NAMESPACES}
        for obj in self.of_kind("Namespace"):
            out[obj.name] = obj.labels
        return out

    def check_apply(self, items: Iterable[Incoming], default_namespace: str) -> list[StoredObject]:
        objects: list[StoredObject] = []
        errors: list[str] = []
        for item in items:
            obj, errs = _normalise(item, default_namespace)
            errors += errs
            if obj is not None:
                objects.append(obj)
        known = set(self.namespaces()) | {o.name for o in objects if o.kind == "Namespace"}
        for obj in objects:
            if obj.namespace and obj.namespace not in known:
                errors.append(f'{obj.kind} {obj.namespace}/{obj.name}: namespaces '
                              f'"{obj.namespace}" not found')
        if errors:
            raise BatchError(errors)
        if not objects:
            raise BatchError(["no objects passed to apply"])
        return objects

    def apply(self, objects: list[StoredObject]) -> list[tuple[StoredObject, str]]:
        """Store the checked batch; (object, "created"|"configured"|"unchanged") per object."""
        out = []
        for obj in objects:
            old = self.objects.get(obj.key)
            if old is None:
                self.objects[obj.key] = obj
                out.append((obj, "created"))
            elif _comparable(old.data) == _comparable(obj.data):
                out.append((old, "unchanged"))
            else:
                obj.created = old.created
                obj.generation = old.generation + 1
                _keep_allocated(old.data, obj.data)
                self.objects[obj.key] = obj
                out.append((obj, "configured"))
        return out

    def check_delete(self, items: Iterable[Incoming], default_namespace: str,
                     ignore_not_found: bool) -> list[Key]:
        keys: list[Key] = []
        errors: list[str] = []
        for item in items:
            data = item.data
            try:
                info = lookup(str(data.get("apiVersion", "")), str(data.get("kind", "")))
            except ValueError as exc:
                errors.append(f"{item.file}:{item.line}: {exc}")
                continue
            meta = data.get("metadata") or {}
            ns = str(meta.get("namespace") or default_namespace) if info.namespaced else ""
            key = (info.kind, ns, str(meta.get("name") or ""))
            if key in self.objects:
                keys.append(key)
            elif not ignore_not_found:
                plural = info.plural + (f".{info.group}" if info.group else "")
                errors.append(f'{plural} "{key[2]}" not found')
        if errors:
            raise BatchError(errors)
        return keys

    def delete(self, keys: Iterable[Key]) -> list[StoredObject]:
        return [self.objects.pop(k) for k in keys if k in self.objects]


def _comparable(data: Mapping[str, Any]) -> Any:
    out = copy.deepcopy(dict(data))
    out.pop("status", None)
    spec = out.get("spec")
    if out.get("kind") == "Service" and isinstance(spec, dict):
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    return out


def _keep_allocated(old: Mapping[str, Any], new: dict[str, Any]) -> None:
    """A re-applied Service without a clusterIP keeps the one it was given."""
    if new.get("kind") != "Service":
        return
    spec = new.setdefault("spec", {})
    old_ip = (old.get("spec") or {}).get("clusterIP")
    if old_ip and not spec.get("clusterIP"):
        spec["clusterIP"] = old_ip
