"""A push request: what changed, and how much of each proxy's config to rebuild.

Istio's `model.PushRequest`. Config events become push requests; the debouncer
merges them; the server stamps the merged request with the next push version
and fans it out to every connection. The transport reads only `full`: a full
push regenerates every type a proxy watches, an incremental one (endpoint
changes only) regenerates endpoints (EDS) only. Everything else is carried for
the generators, which decide what a change means.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple


class ConfigKey(NamedTuple):
    """One changed config object. `name`/`namespace` may be empty when a whole kind changed."""

    kind: str
    name: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class PushRequest:
    # Full: rebuild every watched type. Not full: endpoints changed and nothing
    # else, so only EDS is regenerated and sent (Istio's incremental EDS push).
    full: bool = True
    configs_updated: frozenset[ConfigKey] = frozenset()
    reasons: frozenset[str] = frozenset()
    # When the oldest change in this request happened (time.monotonic()): the
    # start of the convergence-time measurement.
    start: float = field(default_factory=time.monotonic)
    # Assigned by the server when the debounced push fires; strictly increasing.
    version: int = 0
    # Opaque to the transport: the control plane attaches its push context.
    context: Any = None

    @property
    def eds_only(self) -> bool:
        return not self.full

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(key.kind for key in self.configs_updated)

    @property
    def version_info(self) -> str:
        """The push version as it goes on the wire."""
        return str(self.version)

    def merge(self, other: PushRequest) -> PushRequest:
        """Both requests as one: full wins, changes and reasons add up, the oldest start counts.

        The newer request's version and context win, since they describe the
        more recent state of the world.
        """
        return PushRequest(
            full=self.full or other.full,
            configs_updated=self.configs_updated | other.configs_updated,
            reasons=self.reasons | other.reasons,
            start=min(self.start, other.start),
            version=max(self.version, other.version),
            context=other.context if other.context is not None else self.context,
        )

    def with_version(self, version: int) -> PushRequest:
        return replace(self, version=version)


def merge(a: PushRequest | None, b: PushRequest) -> PushRequest:
    return b if a is None else a.merge(b)
