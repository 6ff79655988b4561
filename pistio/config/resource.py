"""Resources as loaded: where they came from, what they say, and their typed model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from pistio.api.meta import ObjectMeta, TypedObject
from pistio.api.registry import KindInfo


@dataclass(frozen=True)
class Source:
    """Where a resource was written: file (or ``-`` for stdin) and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(eq=False)
class Document:
    """One untyped object from the input, as a mapping, with its field lines."""

    data: dict[str, Any]
    source: Source
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        kind = self.data.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def api_version(self) -> str:
        v = self.data.get("apiVersion")
        return v if isinstance(v, str) else ""

    @property
    def _metadata(self) -> dict[str, Any]:
        meta = self.data.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str:
        name = self._metadata.get("name")
        return name if isinstance(name, str) else ""

    @property
    def namespace(self) -> str | None:
        ns = self._metadata.get("namespace")
        return ns if isinstance(ns, str) and ns else None

    @property
    def ref(self) -> str:
        return format_ref(self.kind or "<unknown kind>", self.namespace, self.name)

    def line_of(self, path: str) -> int:
        """The line of a field path, or of its nearest written ancestor, or of the resource."""
        while path:
            line = self.lines.get(path)
            if line is not None:
                return line
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.source.line


def format_ref(kind: str, namespace: str | None, name: str) -> str:
    """``VirtualService default/reviews``, or ``Kind name`` for objects without a namespace."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


@dataclass(eq=False)
class Resource:
    """A document that passed schema typing: ``obj`` is its typed model."""

    doc: Document
    info: KindInfo
    obj: TypedObject

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def group(self) -> str:
        return self.info.group

    @property
    def metadata(self) -> ObjectMeta:
        return self.obj.metadata

    @property
    def name(self) -> str:
        return self.obj.metadata.name

    @property
    def namespace(self) -> str | None:
        """The namespace as written (None when the YAML sets none)."""
        return self.obj.metadata.namespace or None

    @property
    def spec(self) -> Any:
        return getattr(self.obj, "spec", None)

    @property
    def source(self) -> Source:
        return self.doc.source

    @property
    def ref(self) -> str:
        return format_ref(self.kind, self.namespace, self.name)

    def line_of(self, path: str) -> int:
        return self.doc.line_of(path)

    def spec_as(self, cls: type[BaseModel]) -> Any:
        return self.spec if isinstance(self.spec, cls) else None
