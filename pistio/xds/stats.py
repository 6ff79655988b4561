"""Transport counters, as plain values a metrics endpoint can read.

Named after Istio's pilot metrics: `pilot_xds_pushes{type}`,
`pilot_total_xds_rejects{type}` (NACKs), `pilot_xds` (connected proxies),
`pilot_proxy_convergence_time` (from the first config change of a push to
the push reaching a proxy). No metrics library here: the exporter decides.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Keep the last N convergence samples: enough for percentiles, bounded memory.
CONVERGENCE_SAMPLES = 10_000


@dataclass
class XdsStats:
    pushes: Counter[str] = field(default_factory=Counter)  # responses sent, by short type
    rejects: Counter[str] = field(default_factory=Counter)  # NACKs, by short type
    push_triggers: Counter[str] = field(default_factory=Counter)  # debounced pushes, by reason
    full_pushes: int = 0
    eds_pushes: int = 0
    push_timeouts: int = 0
    connections: int = 0  # currently connected
    connects_total: int = 0
    disconnects_total: int = 0
    convergence_seconds: list[float] = field(default_factory=list)

    def observe_convergence(self, seconds: float) -> None:
        samples = self.convergence_seconds
        samples.append(seconds)
        if len(samples) > 2 * CONVERGENCE_SAMPLES:
            del samples[:-CONVERGENCE_SAMPLES]
