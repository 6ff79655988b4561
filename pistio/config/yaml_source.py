"""Parse YAML/JSON text into plain documents that remember where each field was written.

Kubernetes reads YAML as JSON (sigs.k8s.io/yaml): mapping keys are strings, timestamps stay
strings, duplicate keys are an error. Input of any shape must end in a clear one-line
error, never a crash, so nesting depth, size and alias expansion are bounded before the
document is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # libyaml when present: several times faster on large inputs.
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _BaseLoader = yaml.SafeLoader

MAX_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 100
MAX_NODES = 2_000_000


class SourceError(Exception):
    """Input that cannot be read as configuration; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass
class ParsedDocument:
    """One YAML document: its value, the 1-based line it starts at, and a line per field path.

    Field paths look like ``spec.http[0].route[1].weight``.
    """

    data: Any
    line: int
    lines: dict[str, int] = field(default_factory=dict)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe loader with Kubernetes' reading of YAML."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping, found {node.id}", node.start_mark
            )
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise SourceError("mapping key must be a string", key_node.start_mark.line + 1)
            if not isinstance(key, str):
                key = _scalar_text(key)
            if key in mapping:
                raise SourceError(f'duplicate key "{key}"', key_node.start_mark.line + 1)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> str:  # type: ignore[override]
        return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
# Binary, sets and ordered maps have no JSON form: Kubernetes rejects them too.
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", None)


def _scalar_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_shape(text: str) -> None:
    """Bound nesting depth with libyaml's event stream (no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise SourceError(
                    f"document nested deeper than {MAX_DEPTH} levels",
                    event.start_mark.line + 1,
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _walk_lines(node: yaml.Node, lines: dict[str, int]) -> None:
    """Record the line of every field path under ``node``; iterative, bounded in node count."""
    stack: list[tuple[yaml.Node, str]] = [(node, "")]
    visited = 0
    while stack:
        cur, path = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise SourceError(
                f"document has more than {MAX_NODES} nodes (too large, or aliases expand too far)"
            )
        if isinstance(cur, yaml.MappingNode):
            for key_node, value_node in cur.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                sub = f"{path}.{key}" if path else str(key)
                lines.setdefault(sub, key_node.start_mark.line + 1)
                stack.append((value_node, sub))
        elif isinstance(cur, yaml.SequenceNode):
            for i, item in enumerate(cur.value):
                sub = f"{path}[{i}]"
                lines.setdefault(sub, item.start_mark.line + 1)
                stack.append((item, sub))


def _problem_line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else None


def _describe(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        return f"{context} {problem}".strip() if context else str(problem)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def parse_text(text: str | bytes) -> Iterator[ParsedDocument]:
    """Yield the non-empty documents of a YAML/JSON stream; raise SourceError on bad input."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise SourceError(f"input is larger than {MAX_BYTES // (1024 * 1024)} MiB")
        if b"\x00" in text:
            raise SourceError("input is binary, not YAML or JSON")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SourceError(f"input is not UTF-8 text (byte {exc.start})") from None
    if len(text) > MAX_BYTES:
        raise SourceError(f"input is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    if "\x00" in text:
        raise SourceError("input is binary, not YAML or JSON")
    try:
        _check_shape(text)
        loader = _Loader(text)
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                lines: dict[str, int] = {}
                _walk_lines(node, lines)
                data = loader.construct_document(node)
                if data is None:
                    continue  # an empty document between separators
                yield ParsedDocument(data=data, line=node.start_mark.line + 1, lines=lines)
        finally:
            loader.dispose()
    except SourceError:
        raise
    except yaml.YAMLError as exc:
        raise SourceError(f"invalid YAML: {_describe(exc)}", _problem_line(exc)) from None
    except RecursionError:
        raise SourceError(f"document nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise SourceError(f"invalid YAML: {exc}") from None
