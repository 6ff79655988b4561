"""Read configuration from files, directories and stdin into documents.

Follows ``kubectl apply -f``: a directory contributes its ``.yaml``, ``.yml`` and ``.json``
files (sub-directories only with ``recursive``), a file may hold many documents, and
``List`` kinds are unpacked into their items.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from pistio.config.issues import ConfigIssue
from pistio.config.resource import Document, Source
from pistio.config.yaml_source import MAX_BYTES, SourceError, parse_text

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def read_text(text: str | bytes, file: str) -> tuple[list[Document], list[ConfigIssue]]:
    """Documents in one YAML/JSON stream; a stream that cannot be parsed yields one issue."""
    docs: list[Document] = []
    try:
        for parsed in parse_text(text):
            docs.extend(_documents(parsed.data, parsed.lines, parsed.line, file))
    except SourceError as exc:
        return docs, [ConfigIssue(exc.message, file=file, line=exc.line)]
    issues = [
        ConfigIssue(
            f"document must be a mapping with apiVersion, kind and metadata, found {_json_kind(d.data)}",
            file=file,
            line=d.source.line,
        )
        for d in docs
        if not isinstance(d.data, dict)
    ]
    return [d for d in docs if isinstance(d.data, dict)], issues


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _documents(data: object, lines: dict[str, int], line: int, file: str) -> list[Document]:
    if (
        isinstance(data, dict)
        and isinstance(data.get("kind"), str)
        and data["kind"].endswith("List")
        and isinstance(data.get("items"), list)
    ):
        out = []
        for i, item in enumerate(data["items"]):
            prefix = f"items[{i}]"
            sub = {
                k[len(prefix) + 1 :]: v
                for k, v in lines.items()
                if k.startswith(prefix + ".")
            }
            out.extend(_documents(item, sub, lines.get(prefix, line), file))
        return out
    return [Document(data=data, source=Source(file, line), lines=lines)]  # type: ignore[arg-type]


def config_files(path: Path, recursive: bool) -> list[Path]:
    """Configuration files in a directory, sorted, as kubectl would pick them."""
    if recursive:
        found = [
            Path(root) / name
            for root, _, names in os.walk(path)
            for name in names
            if name.endswith(CONFIG_SUFFIXES)
        ]
    else:
        found = [p for p in path.iterdir() if p.is_file() and p.name.endswith(CONFIG_SUFFIXES)]
    return sorted(found)


def read_paths(
    paths: Iterable[str], recursive: bool = False
) -> tuple[list[Document], list[ConfigIssue]]:
    """Documents from files, directories, or ``-`` (stdin), in the order given."""
    docs: list[Document] = []
    issues: list[ConfigIssue] = []
    for raw in paths:
        if raw == "-":
            data = sys.stdin.buffer.read(MAX_BYTES + 1)
            d, i = read_text(data, "-")
            docs += d
            issues += i
            continue
        path = Path(raw)
        if path.is_dir():
            files = config_files(path, recursive)
        elif path.exists():
            files = [path]
        else:
            issues.append(ConfigIssue("no such file or directory", file=raw))
            continue
        for f in files:
            try:
                with f.open("rb") as fh:
                    data = fh.read(MAX_BYTES + 1)
            except OSError as exc:
                issues.append(ConfigIssue(f"cannot read: {exc.strerror}", file=str(f)))
                continue
            d, i = read_text(data, str(f))
            docs += d
            issues += i
    return docs, issues
