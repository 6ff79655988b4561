"""The node's view of the cluster, written where ``pistio discovery`` watches it.

One file per object (``<Kind>.<namespace>.<name>.yaml``), written aside and renamed, so the
discovery's watcher sees whole files and a change to one pod rewrites one file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class DiscoveryFeed:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._written: dict[str, str] = {}
        for old in directory.glob("*.yaml"):  # a previous node's leftovers
            old.unlink()

    def publish(self, objects: Mapping[str, Mapping[str, Any]]) -> int:
        """Make the directory hold exactly ``objects`` (file stem → manifest); returns the
        number of files written or removed."""
        changed = 0
        wanted = {f"{stem}.yaml": yaml.safe_dump(dict(obj), sort_keys=False)
                  for stem, obj in objects.items()}
        for name in list(self._written):
            if name not in wanted:
                (self.directory / name).unlink(missing_ok=True)
                del self._written[name]
                changed += 1
        for name, text in wanted.items():
            if self._written.get(name) == text:
                continue
            tmp = self.directory / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(self.directory / name)
            self._written[name] = text
            changed += 1
        return changed


def stem(kind: str, namespace: str, name: str) -> str:
    return f"{kind}.{namespace or '_'}.{name}"
