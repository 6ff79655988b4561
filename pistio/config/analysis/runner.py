"""Running analysis over files: load, validate, analyze, filter — what ``istioctl analyze`` does
with ``--use-kube=false``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pistio.config.analysis import util as u
from pistio.config.analysis.analyzers import all_analyzers, by_name
from pistio.config.analysis.core import (
    Analyzer,
    Context,
    LooseResource,
    PseudoResource,
    SchemaFinding,
)
from pistio.config.analysis.messages import TYPES, Message, level_rank
from pistio.config.issues import ConfigIssue, FieldErrors
from pistio.config.loader import read_paths
from pistio.config.resource import Resource
from pistio.config.schema import kind_of, type_document
from pistio.config.validation import check_document


class InputError(Exception):
    """The input cannot be read or parsed (istioctl exits 65)."""

    def __init__(self, issues: Sequence[ConfigIssue | str]) -> None:
        super().__init__("; ".join(str(i) for i in issues))
        self.issues = list(issues)


class UsageError(Exception):
    """Bad options (istioctl exits 64)."""


@dataclass
class Options:
    analyzers: Sequence[str] = ()  # names; empty = istioctl's default set
    mesh_config_file: str | None = None
    mesh_networks_file: str | None = None
    istio_namespace: str = "istio-system"
    recursive: bool = False


def select_analyzers(names: Sequence[str]) -> list[Analyzer]:
    """The analyzers to run: the named ones, or every analyzer istioctl runs by default."""
    if not names:
        return [a() for a in all_analyzers() if a.default]
    known = by_name()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown analyzer(s): {', '.join(unknown)} (see --list-analyzers for the names)"
        )
    return [known[n]() for n in dict.fromkeys(names)]


# --- mesh config --------------------------------------------------------------------------------


def _read_yaml(path: str) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError([f"{path}: {exc}"]) from exc


def load_mesh(options: Options) -> tuple[Any, Any]:
    """The mesh config (defaults, with the given file laid over) and the mesh networks, if any."""
    from pistio.api import mesh

    mesh_config: Any = mesh.default_mesh_config()
    if options.mesh_config_file:
        mesh_config = _load_with(mesh.load_mesh_config, options.mesh_config_file)
    networks: Any = None
    if options.mesh_networks_file:
        networks = _load_with(mesh.load_mesh_networks, options.mesh_networks_file)
    return mesh_config, networks


def _load_with(loader: Any, path: str) -> Any:
    if not Path(path).is_file():
        raise InputError([f"{path}: no such file"])
    value, issues = loader(Path(path))
    errors = [i for i in issues if i.level == "error"]
    if value is None or errors:
        raise InputError(errors or [f"{path}: cannot be read"])
    return value


# --- analysis -----------------------------------------------------------------------------------


def load(
    paths: Iterable[str], recursive: bool
) -> tuple[list[Resource | LooseResource], list[SchemaFinding]]:
    """Every resource to analyze, and the validation findings to report.

    As in istioctl, a resource that fails validation is still analyzed (its errors are reported
    as IST0106): only a document that cannot be read at all is left out. Validation findings
    are reported for Istio's kinds; for other kinds (Kubernetes' own), only documents that cannot
    be typed are reported, as checking those is the API server's business.
    """
    docs, issues = read_paths(paths, recursive=recursive)
    if issues:
        raise InputError(issues)
    resources: list[Resource | LooseResource] = []
    findings: list[SchemaFinding] = []
    for doc in docs:
        try:
            info = kind_of(doc)
        except ValueError:
            continue  # kinds the mesh does not know are not analyzed, as with istioctl
        checked = check_document(doc)
        res: Resource | LooseResource | None = checked.resource
        if res is None:
            res = type_document(doc, info, FieldErrors())
        istio_kind = info.group in u.ISTIO_GROUPS
        if istio_kind or res is None:
            findings += [SchemaFinding(doc, info.group, info.kind, i) for i in checked.issues]
        if res is None and not istio_kind:
            res = LooseResource(doc, info)
        if res is not None:
            resources.append(res)
    return resources, findings


def run(
    resources: list[Resource],
    findings: list[SchemaFinding],
    analyzers: Sequence[Analyzer],
    mesh_config: Any = None,
    mesh_networks: Any = None,
    options: Options | None = None,
) -> list[Message]:
    options = options or Options()
    ctx = Context(
        resources=resources,
        mesh_config=mesh_config if mesh_config is not None else {},
        mesh_networks=mesh_networks,
        mesh_config_origin=PseudoResource(
            "MeshConfig", options.istio_namespace, "meshconfig", options.mesh_config_file
        ),
        mesh_networks_origin=PseudoResource(
            "MeshNetworks", options.istio_namespace, "meshnetworks", options.mesh_networks_file
        ),
        istio_namespace=options.istio_namespace,
        schema_findings=findings,
    )
    for analyzer in analyzers:
        ctx.analyzer = analyzer.name
        try:
            analyzer.analyze(ctx)
        except Exception as exc:  # a bug in one analyzer must not hide the others' findings
            ctx.report(
                None,
                "InternalError",
                f"analyzer {analyzer.name} failed: {type(exc).__name__}: {exc}",
            )
    return sorted_deduped(ctx.messages)


def analyze_paths(paths: Iterable[str], options: Options) -> list[Message]:
    analyzers = select_analyzers(options.analyzers)
    resources, findings = load(paths, options.recursive)
    mesh_config, mesh_networks = load_mesh(options)
    return run(resources, findings, analyzers, mesh_config, mesh_networks, options)


def sorted_deduped(messages: list[Message]) -> list[Message]:
    """istioctl's order (errors first, then by code, resource, text) without exact repeats."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for m in messages:
        key = (m.code, m.origin, m.reference, m.text)
        if key not in seen:
            seen.add(key)
            out.append(m)
    out.sort(key=lambda m: (-level_rank(m.level), m.code, m.origin != "", m.origin, str(m)))
    return out


# --- output filtering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Suppression:
    code: str
    resource: str  # glob over "Kind ns/name" (or istioctl's older "Kind name.ns")

    @classmethod
    def parse(cls, text: str) -> Suppression:
        code, sep, resource = text.partition("=")
        code, resource = code.strip(), resource.strip()
        if not sep or not code or not resource:
            raise UsageError(f'invalid suppression "{text}": expected "<code>=<resource>"')
        if code != "*" and code not in {t.code for t in TYPES.values()}:
            raise UsageError(f'invalid suppression "{text}": unknown message code {code}')
        return cls(code, resource)

    def matches(self, m: Message) -> bool:
        if self.code not in ("*", m.code):
            return False
        candidates = [m.origin]
        kind, _, rest = m.origin.partition(" ")
        if "/" in rest:
            ns, _, name = rest.partition("/")
            candidates.append(f"{kind} {name}.{ns}")
        return any(fnmatch.fnmatchcase(c, self.resource) for c in candidates)


def filter_messages(
    messages: list[Message],
    namespace: str | None = None,
    suppressions: Sequence[Suppression] = (),
) -> list[Message]:
    """Drop suppressed messages and, with a namespace, those about other namespaces' resources."""
    out = []
    for m in messages:
        if m.code in m.suppressed_codes or "*" in m.suppressed_codes:
            continue
        if any(s.matches(m) for s in suppressions):
            continue
        if namespace and m.namespace and m.namespace != namespace:
            continue
        out.append(m)
    return out


def at_or_above(messages: list[Message], level: str) -> list[Message]:
    rank = level_rank(level)
    return [m for m in messages if level_rank(m.level) >= rank]
