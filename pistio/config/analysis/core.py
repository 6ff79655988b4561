"""The analysis framework: the context analyzers read from and report to, and the analyzer base.

An analyzer looks at the whole set of resources at once (cross-resource checks, unlike
validation) and reports :class:`~pistio.config.analysis.messages.Message` objects tied to a
resource, as istioctl's analyzers do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pistio.api.registry import KindInfo
from pistio.config.analysis.messages import TYPES, Message
from pistio.config.issues import ConfigIssue
from pistio.config.resource import Document, Resource, format_ref

SUPPRESS_ANNOTATION = "galley.istio.io/analyze-suppress"
Key = tuple[str, str]  # (group, kind)


@dataclass
class PseudoResource:
    """Something messages can point at that is not a loaded resource (MeshConfig, MeshNetworks)."""

    kind: str
    namespace: str | None
    name: str
    file: str | None = None
    line: int = 1
    data: Any = None

    @property
    def ref(self) -> str:
        return format_ref(self.kind, self.namespace, self.name)

    def line_of(self, path: str) -> int:
        return self.line


class _Meta:
    """Metadata read from a raw document."""

    def __init__(self, data: dict[str, Any]) -> None:
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        labels, annotations = meta.get("labels"), meta.get("annotations")
        self.labels = (
            {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
        )
        self.annotations = (
            {str(k): str(v) for k, v in annotations.items()}
            if isinstance(annotations, dict)
            else {}
        )


class LooseResource:
    """A Kubernetes document the models cannot type, analyzed from its raw mapping.

    Istio reads Kubernetes kinds leniently; so do the analyzers, through the same accessors.
    """

    def __init__(self, doc: Document, info: KindInfo) -> None:
        self.doc = doc
        self.info = info
        self.obj = doc.data
        self.metadata = _Meta(doc.data)

    kind = property(lambda self: self.info.kind)
    group = property(lambda self: self.info.group)
    name = property(lambda self: self.doc.name)
    namespace = property(lambda self: self.doc.namespace)
    spec = property(lambda self: self.doc.data.get("spec"))
    source = property(lambda self: self.doc.source)
    ref = property(lambda self: format_ref(self.kind, self.namespace, self.name))

    def line_of(self, path: str) -> int:
        return self.doc.line_of(path)


@dataclass
class SchemaFinding:
    """A document that failed validation, or a validation warning on a valid resource."""

    doc: Document
    group: str
    kind: str
    issue: ConfigIssue


@dataclass
class Context:
    """Resources indexed by kind and name, the mesh config, and the messages reported so far."""

    resources: list[Resource]
    mesh_config: Any = None
    mesh_networks: Any = None
    mesh_config_origin: PseudoResource | None = None
    mesh_networks_origin: PseudoResource | None = None
    istio_namespace: str = "istio-system"
    schema_findings: list[SchemaFinding] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    analyzer: str = ""

    def __post_init__(self) -> None:
        self._by_kind: dict[Key, list[Resource]] = defaultdict(list)
        self._by_name: dict[tuple[Key, str, str], Resource] = {}
        for res in self.resources:
            key = (res.group, res.kind)
            self._by_kind[key].append(res)
            self._by_name.setdefault((key, res.namespace or "", res.name), res)

    def each(self, key: Key) -> list[Resource]:
        """Resources of a kind, in input order."""
        return self._by_kind.get(key, [])

    def find(self, key: Key, namespace: str, name: str) -> Resource | None:
        return self._by_name.get((key, namespace or "", name))

    def exists(self, key: Key, namespace: str, name: str) -> bool:
        return self.find(key, namespace, name) is not None

    def report(self, res: Any, name: str, *args: Any, path: str | None = None) -> None:
        """Report message ``name`` (Istio's message name) on ``res``; ``path`` sets the line."""
        mtype = TYPES[name]
        file = None
        line = None
        namespace = ""
        suppressed: frozenset[str] = frozenset()
        if isinstance(res, PseudoResource):
            file, line, namespace = res.file, (res.line if res.file else None), res.namespace or ""
        elif res is not None:
            file = res.source.file
            line = res.line_of(path) if path else res.source.line
            namespace = res.namespace or ""
            anno = (getattr(res.metadata, "annotations", None) or {}).get(SUPPRESS_ANNOTATION, "")
            suppressed = frozenset(c.strip() for c in anno.split(",") if c.strip())
        self.messages.append(
            Message(
                type=mtype,
                args=args,
                origin=res.ref if res is not None else "",
                file=file,
                line=line,
                namespace=namespace,
                suppressed_codes=suppressed,
                analyzer=self.analyzer,
            )
        )

    def report_doc(self, doc: Document, name: str, *args: Any, line: int | None = None) -> None:
        """Report on a document that could not be typed (a schema error)."""
        self.messages.append(
            Message(
                type=TYPES[name],
                args=args,
                origin=doc.ref,
                file=doc.source.file,
                line=line or doc.source.line,
                namespace=doc.namespace or "",
                analyzer=self.analyzer,
            )
        )


class Analyzer:
    """One of Istio's analyzers, by the name ``istioctl analyze --list-analyzers`` prints."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Istio leaves some analyzers out of the default run (too noisy); they run when named.
    default: ClassVar[bool] = True

    def analyze(self, ctx: Context) -> None:
        raise NotImplementedError
