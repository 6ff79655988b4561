"""What a metrics source hands the graph builder: the query results, and what went wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pistio.dashboard.promql import Vector


@dataclass
class Traffic:
    vectors: dict[str, Vector] = field(default_factory=dict)
    # A failure that leaves no graph at all (no node, Prometheus unreachable).
    error: str | None = None
    # Partial failures: one sidecar that did not answer, one query that failed.
    warnings: list[str] = field(default_factory=list)


class TrafficSource(Protocol):
    description: str

    def collect(self) -> Traffic: ...
