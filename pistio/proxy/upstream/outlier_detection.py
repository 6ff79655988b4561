"""Envoy's outlier detection (passive health checking) for one cluster on one worker.

The router reports each upstream result; a per-host monitor counts consecutive failures:

- *consecutive 5xx*: any 5xx response (and, unless local-origin errors are split out,
  connect failures, timeouts and resets, which count as 503/504);
- *consecutive gateway failures*: 502, 503, 504 (and the same mapped local-origin errors);
  a non-gateway 5xx resets this counter, any non-5xx resets both;
- *consecutive local-origin failures*, only with ``split_external_local_origin_errors``:
  connect failures, timeouts and resets; a successful connect resets it.

When a counter reaches its threshold the host is ejected — with probability
``enforcing_*`` percent, and only while fewer than ``max_ejection_percent`` of the cluster's
hosts are ejected (so at least one host can always be ejected). An ejected host stays out for
``base_ejection_time × times ejected``, capped at ``max(base_ejection_time,
max_ejection_time)``; the multiplier goes down by one on every interval the host spends in
service. Every ``interval`` a sweep returns hosts whose time is up and, when
``enforcing_success_rate`` > 0 and enough hosts had enough requests, ejects hosts whose
success rate is below ``mean − stdev × success_rate_stdev_factor / 1000``.

Time is injected (``now``) and randomness too (``rng``), so timelines are testable. Ejections
mark ``Host.ejected`` and call ``on_change`` so the load balancer refreshes.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable, Iterable

from pistio.proxy.config.cluster_config import OutlierDetectionConfig
from pistio.proxy.upstream.host import Host


class EjectionType(enum.Enum):
    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
    SUCCESS_RATE = "success_rate"


class LocalOrigin(enum.Enum):
    """Results the proxy observes itself rather than reads from a response."""

    CONNECT_SUCCESS = "connect_success"
    CONNECT_FAILED = "connect_failed"
    TIMEOUT = "timeout"
    RESET = "reset"


# Without split_external_local_origin_errors, local-origin failures count as these codes.
_LOCAL_AS_HTTP = {
    LocalOrigin.CONNECT_FAILED: 503,
    LocalOrigin.TIMEOUT: 504,
    LocalOrigin.RESET: 503,
}


class HostMonitor:
    """Per-host detector state."""

    __slots__ = (
        "host",
        "consecutive_5xx",
        "consecutive_gateway",
        "consecutive_local",
        "ejections",  # the ejection-time multiplier
        "ejected_at",
        "ejected_for",
        "successes",
        "requests",
    )

    def __init__(self, host: Host) -> None:
        self.host = host
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        self.ejections = 0
        self.ejected_at = 0.0
        self.ejected_for = 0.0
        self.successes = 0  # for success rate, reset each interval
        self.requests = 0


class OutlierDetector:
    def __init__(
        self,
        config: OutlierDetectionConfig,
        hosts: Iterable[Host],
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._now = now
        self._rng = rng or random.Random()
        self.on_change = on_change
        self._monitors: dict[Host, HostMonitor] = {}
        self.ejections_active = 0
        self.stats = {
            "ejections_enforced_total": 0,
            "ejections_overflow": 0,
            "ejections_enforced_consecutive_5xx": 0,
            "ejections_detected_consecutive_5xx": 0,
            "ejections_enforced_consecutive_gateway_failure": 0,
            "ejections_detected_consecutive_gateway_failure": 0,
            "ejections_enforced_consecutive_local_origin_failure": 0,
            "ejections_detected_consecutive_local_origin_failure": 0,
            "ejections_enforced_success_rate": 0,
            "ejections_detected_success_rate": 0,
        }
        self.set_hosts(hosts)

    def set_hosts(self, hosts: Iterable[Host]) -> None:
        """Follow an EDS update: keep monitors of hosts that stay, drop the others."""
        monitors = {}
        for h in hosts:
            monitors[h] = self._monitors.get(h) or HostMonitor(h)
        self._monitors = monitors
        self.ejections_active = sum(1 for h in monitors if h.ejected)

    def uneject(self, host: Host) -> None:
        """Put an ejected host back now (a successful active health check does, by
        Envoy's ``successful_active_health_check_uneject_host`` default); its ejection count,
        which lengthens the next ejection, stays."""
        if host.ejected and host in self._monitors:
            host.ejected = False
            self.ejections_active -= 1

    def monitor(self, host: Host) -> HostMonitor | None:
        return self._monitors.get(host)

    # -- results from the router --

    def report_http_status(self, host: Host, status: int) -> None:
        m = self._monitors.get(host)
        if m is None:
            return
        cfg = self.config
        m.requests += 1
        if status >= 500:
            if status in (502, 503, 504):
                m.consecutive_gateway += 1
                if m.consecutive_gateway == cfg.consecutive_gateway_failure:
                    self._on_consecutive(m, EjectionType.CONSECUTIVE_GATEWAY_FAILURE)
            else:
                m.consecutive_gateway = 0
            m.consecutive_5xx += 1
            if m.consecutive_5xx == cfg.consecutive_5xx:
                self._on_consecutive(m, EjectionType.CONSECUTIVE_5XX)
        else:
            m.successes += 1
            m.consecutive_5xx = 0
            m.consecutive_gateway = 0

    def report_local_origin(self, host: Host, result: LocalOrigin) -> None:
        m = self._monitors.get(host)
        if m is None:
            return
        cfg = self.config
        if not cfg.split_external_local_origin_errors:
            # A successful connect says nothing yet: the response code will.
            code = _LOCAL_AS_HTTP.get(result)
            if code is not None:
                self.report_http_status(host, code)
            return
        if result is LocalOrigin.CONNECT_SUCCESS:
            m.consecutive_local = 0
            return
        m.consecutive_local += 1
        if m.consecutive_local == cfg.consecutive_local_origin_failure:
            self._on_consecutive(m, EjectionType.CONSECUTIVE_LOCAL_ORIGIN_FAILURE)

    # -- ejection --

    def _enforcing(self, kind: EjectionType) -> int:
        cfg = self.config
        if kind is EjectionType.CONSECUTIVE_5XX:
            return cfg.enforcing_consecutive_5xx
        if kind is EjectionType.CONSECUTIVE_GATEWAY_FAILURE:
            return cfg.enforcing_consecutive_gateway_failure
        if kind is EjectionType.CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
            return cfg.enforcing_consecutive_local_origin_failure
        return cfg.enforcing_success_rate

    def _on_consecutive(self, m: HostMonitor, kind: EjectionType) -> None:
        # Reset so the next run of errors is detected afresh even without a success between.
        if kind is EjectionType.CONSECUTIVE_5XX:
            m.consecutive_5xx = 0
        elif kind is EjectionType.CONSECUTIVE_GATEWAY_FAILURE:
            m.consecutive_gateway = 0
        else:
            m.consecutive_local = 0
        if not m.host.ejected and self._eject(m, kind):
            self._changed()

    def _eject(self, m: HostMonitor, kind: EjectionType) -> bool:
        cfg = self.config
        self.stats[f"ejections_detected_{kind.value}"] += 1
        ejected_percent = 100.0 * self.ejections_active / max(1, len(self._monitors))
        allowed = ejected_percent < min(100, cfg.max_ejection_percent) or (
            cfg.always_eject_one_host and self.ejections_active == 0
        )
        if not allowed:
            self.stats["ejections_overflow"] += 1
            return False
        enforcing = self._enforcing(kind)
        if enforcing <= 0 or (enforcing < 100 and self._rng.randrange(100) >= enforcing):
            return False
        m.ejections += 1
        m.ejected_at = self._now()
        m.ejected_for = min(cfg.base_ejection_time * m.ejections, cfg.max_ejection_time)
        m.host.ejected = True
        self.ejections_active += 1
        self.stats["ejections_enforced_total"] += 1
        self.stats[f"ejections_enforced_{kind.value}"] += 1
        return True

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- the interval sweep --

    def tick(self) -> None:
        """Run one interval sweep (the worker calls this every ``config.interval``)."""
        now = self._now()
        changed = False
        for m in self._monitors.values():
            if m.host.ejected:
                if now - m.ejected_at >= m.ejected_for:
                    m.host.ejected = False
                    self.ejections_active -= 1
                    changed = True
            elif m.ejections > 0:
                m.ejections -= 1
        if self.config.enforcing_success_rate > 0 and self._success_rate_sweep():
            changed = True
        for m in self._monitors.values():
            m.successes = 0
            m.requests = 0
        if changed:
            self._changed()

    def _success_rate_sweep(self) -> bool:
        cfg = self.config
        eligible = [
            m for m in self._monitors.values()
            if not m.host.ejected and m.requests >= cfg.success_rate_request_volume
        ]
        if len(eligible) < cfg.success_rate_minimum_hosts:
            return False
        rates = [100.0 * m.successes / m.requests for m in eligible]
        mean = sum(rates) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
        threshold = mean - stdev * cfg.success_rate_stdev_factor / 1000.0
        changed = False
        for m, rate in zip(eligible, rates, strict=True):
            if rate < threshold and self._eject(m, EjectionType.SUCCESS_RATE):
                changed = True
        return changed
