"""Envoy's stat families as per-worker handle objects: one slotted attribute per stat.

Envoy roots each family at a prefix (Envoy docs, "Statistics" pages of the cluster manager,
HTTP connection manager, listeners and server):

- ``cluster.<cluster name>.``: upstream connections and requests, retries, timeouts, circuit
  breakers, membership, outlier detection, latency (``upstream_rq_time``);
- ``http.<stat_prefix>.``: downstream connections and requests of an HTTP connection manager,
  and its router's counters (``no_route``, ``rq_total``...), latency (``downstream_rq_time``);
- ``listener.<address>.``: accepted connections, filter chain misses;
- ``cluster_manager.``, ``listener_manager.``, ``server.``: process-wide state.

A handle is created when config is compiled (one per cluster, connection manager, listener) and
kept by the objects that count, so the request path does ``stats.upstream_rq_total += 1`` on a
slotted attribute: no name lookup, no string formatting. Handles survive config updates (the
store returns the same handle for the same name), as Envoy keeps a cluster's stats across CDS
updates.

Each family declares its stats as ``(attribute, stat name suffix)`` pairs; gauges also say how
workers' values merge: summed (connections active in each worker add up) or the maximum (a value
every worker computes identically, such as a cluster's membership).
"""

from __future__ import annotations

from collections.abc import Iterable

from pistio.proxy.stats.histogram import Histogram

SUM, MAX = "sum", "max"

Decl = tuple[str, str]  # (attribute, stat suffix)


def _decl(*names: str | tuple[str, str]) -> tuple[Decl, ...]:
    return tuple((n, n) if isinstance(n, str) else n for n in names)


def _gauges(*names: str | tuple[str, str], merge: str = SUM) -> tuple[tuple[str, str, str], ...]:
    return tuple((a, s, merge) for a, s in _decl(*names))


class StatsGroup:
    """Base of the families: ``prefix`` plus the declared counters, gauges and histograms."""

    KIND = ""  # the family's key in worker dumps
    PREFIX = ""  # "{}" stands for the key
    COUNTERS: tuple[Decl, ...] = ()
    GAUGES: tuple[tuple[str, str, str], ...] = ()  # (attribute, suffix, merge)
    HISTOGRAMS: tuple[Decl, ...] = ()

    __slots__ = ("prefix", "key")

    def __init__(self, prefix: str, key: str = "") -> None:
        self.prefix = prefix
        self.key = key  # the name the family was created for (cluster name, stat prefix...)
        for attr, _ in self.COUNTERS:
            setattr(self, attr, 0)
        for attr, _, _ in self.GAUGES:
            setattr(self, attr, 0)
        for attr, _ in self.HISTOGRAMS:
            setattr(self, attr, Histogram())

    @classmethod
    def prefix_for(cls, key: str) -> str:
        return cls.PREFIX.format(key)

    def dump(self) -> list:
        """The compact form a worker sends: ``[kind, key, counters, gauges, histograms,
        extra]`` with values in declaration order and names left out."""
        histograms = []
        for attr, _ in self.HISTOGRAMS:
            h = getattr(self, attr)
            histograms.append([h.counts, h.sum, h.count, h.min, h.max] if h.count else 0)
        return [
            self.KIND,
            self.key,
            [getattr(self, a) for a, _ in self.COUNTERS],
            [getattr(self, a) for a, _, _ in self.GAUGES],
            histograms,
            self.dump_extra(),
        ]

    def dump_extra(self) -> dict[str, int] | None:
        """Counters outside the declaration (by suffix), e.g. per response code."""
        return None

    def counter_values(self) -> Iterable[tuple[str, int]]:
        prefix = self.prefix
        for attr, suffix in self.COUNTERS:
            yield prefix + suffix, getattr(self, attr)

    def gauge_values(self) -> Iterable[tuple[str, int, str]]:
        prefix = self.prefix
        for attr, suffix, merge in self.GAUGES:
            yield prefix + suffix, getattr(self, attr), merge

    def histogram_values(self) -> Iterable[tuple[str, Histogram]]:
        prefix = self.prefix
        for attr, suffix in self.HISTOGRAMS:
            yield prefix + suffix, getattr(self, attr)


def _slots(cls_counters, cls_gauges, cls_histograms, *extra: str) -> tuple[str, ...]:
    return (
        tuple(a for a, _ in cls_counters)
        + tuple(a for a, _, _ in cls_gauges)
        + tuple(a for a, _ in cls_histograms)
        + extra
    )


_CLUSTER_COUNTERS = _decl(
    "upstream_cx_total",
    "upstream_cx_http1_total",
    "upstream_cx_http2_total",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_overflow",
    "upstream_cx_destroy",
    "upstream_cx_destroy_local",
    "upstream_cx_destroy_remote",
    "upstream_cx_destroy_with_active_rq",
    "upstream_cx_destroy_local_with_active_rq",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_close_notify",
    "upstream_cx_protocol_error",
    "upstream_cx_max_requests",
    "upstream_cx_none_healthy",
    "upstream_cx_idle_timeout",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_tx_bytes_total",
    "upstream_rq_total",
    "upstream_rq_completed",
    "upstream_rq_1xx",
    "upstream_rq_2xx",
    "upstream_rq_3xx",
    "upstream_rq_4xx",
    "upstream_rq_5xx",
    "upstream_rq_pending_total",
    "upstream_rq_pending_overflow",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_cancelled",
    "upstream_rq_maintenance_mode",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_rx_reset",
    "upstream_rq_tx_reset",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_retry_backoff_exponential",
    "upstream_rq_max_duration_reached",
    "retry_or_shadow_abandoned",
    "lb_healthy_panic",
    "lb_local_cluster_not_ok",
    "lb_recalculate_zone_structures",
    "lb_zone_no_capacity_left",
    "membership_change",
    "update_attempt",
    "update_success",
    "update_failure",
    "update_empty",
    "update_no_rebuild",
    "assignment_stale",
    "assignment_timeout_received",
    ("outlier_ejections_enforced_total", "outlier_detection.ejections_enforced_total"),
    ("outlier_ejections_overflow", "outlier_detection.ejections_overflow"),
    (
        "outlier_ejections_enforced_consecutive_5xx",
        "outlier_detection.ejections_enforced_consecutive_5xx",
    ),
    (
        "outlier_ejections_detected_consecutive_5xx",
        "outlier_detection.ejections_detected_consecutive_5xx",
    ),
    (
        "outlier_ejections_enforced_consecutive_gateway_failure",
        "outlier_detection.ejections_enforced_consecutive_gateway_failure",
    ),
    (
        "outlier_ejections_detected_consecutive_gateway_failure",
        "outlier_detection.ejections_detected_consecutive_gateway_failure",
    ),
    (
        "outlier_ejections_enforced_consecutive_local_origin_failure",
        "outlier_detection.ejections_enforced_consecutive_local_origin_failure",
    ),
    (
        "outlier_ejections_detected_consecutive_local_origin_failure",
        "outlier_detection.ejections_detected_consecutive_local_origin_failure",
    ),
    (
        "outlier_ejections_enforced_success_rate",
        "outlier_detection.ejections_enforced_success_rate",
    ),
    (
        "outlier_ejections_detected_success_rate",
        "outlier_detection.ejections_detected_success_rate",
    ),
)
_CLUSTER_GAUGES = _gauges(
    "upstream_cx_active",
    "upstream_rq_active",
    "upstream_rq_pending_active",
    "upstream_cx_rx_bytes_buffered",
    "upstream_cx_tx_bytes_buffered",
    ("outlier_ejections_active", "outlier_detection.ejections_active"),
) + _gauges(
    "membership_healthy",
    "membership_degraded",
    "membership_excluded",
    "membership_total",
    "max_host_weight",
    "version",
    ("cb_default_cx_open", "circuit_breakers.default.cx_open"),
    ("cb_default_cx_pool_open", "circuit_breakers.default.cx_pool_open"),
    ("cb_default_rq_pending_open", "circuit_breakers.default.rq_pending_open"),
    ("cb_default_rq_open", "circuit_breakers.default.rq_open"),
    ("cb_default_rq_retry_open", "circuit_breakers.default.rq_retry_open"),
    ("cb_high_cx_open", "circuit_breakers.high.cx_open"),
    ("cb_high_cx_pool_open", "circuit_breakers.high.cx_pool_open"),
    ("cb_high_rq_pending_open", "circuit_breakers.high.rq_pending_open"),
    ("cb_high_rq_open", "circuit_breakers.high.rq_open"),
    ("cb_high_rq_retry_open", "circuit_breakers.high.rq_retry_open"),
    merge=MAX,
)
_CLUSTER_HISTOGRAMS = _decl("upstream_cx_connect_ms", "upstream_cx_length_ms", "upstream_rq_time")


class ClusterStats(StatsGroup):
    """``cluster.<name>.*``: one per cluster, held by the cluster's runtime objects."""

    KIND = "cluster"
    PREFIX = "cluster.{}."
    COUNTERS = _CLUSTER_COUNTERS
    GAUGES = _CLUSTER_GAUGES
    HISTOGRAMS = _CLUSTER_HISTOGRAMS
    __slots__ = _slots(_CLUSTER_COUNTERS, _CLUSTER_GAUGES, _CLUSTER_HISTOGRAMS, "response_codes")

    def __init__(self, cluster_name: str) -> None:
        super().__init__(f"cluster.{cluster_name}.", cluster_name)
        self.response_codes: dict[int, int] = {}

    def record_response(self, code: int) -> None:
        """An upstream response: ``upstream_rq_<code>``, ``upstream_rq_<N>xx`` and
        ``upstream_rq_completed``, as Envoy's router charges them."""
        codes = self.response_codes
        codes[code] = codes.get(code, 0) + 1
        self.upstream_rq_completed += 1
        klass = code // 100
        if klass == 2:
            self.upstream_rq_2xx += 1
        elif klass == 5:
            self.upstream_rq_5xx += 1
        elif klass == 4:
            self.upstream_rq_4xx += 1
        elif klass == 3:
            self.upstream_rq_3xx += 1
        elif klass == 1:
            self.upstream_rq_1xx += 1

    def dump_extra(self) -> dict[str, int] | None:
        if not self.response_codes:
            return None
        return {f"upstream_rq_{code}": n for code, n in self.response_codes.items()}

    def counter_values(self) -> Iterable[tuple[str, int]]:
        yield from super().counter_values()
        prefix = self.prefix
        for code, n in self.response_codes.items():
            yield f"{prefix}upstream_rq_{code}", n


_HC_COUNTERS = _decl(
    "attempt", "success", "failure", "passive_failure", "network_failure", "verify_cluster",
)
# Each worker checks on its own (pistio.proxy.upstream.health_check): the merged gauge is the
# largest worker's view.
_HC_GAUGES = _gauges("healthy", "degraded", merge=MAX)


class HealthCheckStats(StatsGroup):
    """``cluster.<name>.health_check.*``: only for clusters with active health checking."""

    KIND = "health_check"
    PREFIX = "cluster.{}.health_check."
    COUNTERS = _HC_COUNTERS
    GAUGES = _HC_GAUGES
    __slots__ = _slots(_HC_COUNTERS, _HC_GAUGES, ())

    def __init__(self, cluster_name: str) -> None:
        super().__init__(f"cluster.{cluster_name}.health_check.", cluster_name)


_HCM_COUNTERS = _decl(
    "downstream_cx_total",
    "downstream_cx_ssl_total",
    "downstream_cx_http1_total",
    "downstream_cx_upgrades_total",
    "downstream_cx_http2_total",
    "downstream_cx_destroy",
    "downstream_cx_destroy_remote",
    "downstream_cx_destroy_local",
    "downstream_cx_destroy_active_rq",
    "downstream_cx_destroy_local_active_rq",
    "downstream_cx_destroy_remote_active_rq",
    "downstream_cx_protocol_error",
    "downstream_cx_rx_bytes_total",
    "downstream_cx_tx_bytes_total",
    "downstream_cx_drain_close",
    "downstream_cx_idle_timeout",
    "downstream_cx_max_duration_reached",
    "downstream_cx_max_requests_reached",
    "downstream_cx_overload_disable_keepalive",
    "downstream_flow_control_paused_reading_total",
    "downstream_flow_control_resumed_reading_total",
    "downstream_rq_total",
    "downstream_rq_http1_total",
    "downstream_rq_http2_total",
    "downstream_rq_completed",
    "downstream_rq_1xx",
    "downstream_rq_2xx",
    "downstream_rq_3xx",
    "downstream_rq_4xx",
    "downstream_rq_5xx",
    "downstream_rq_rx_reset",
    "downstream_rq_tx_reset",
    "downstream_rq_non_relative_path",
    "downstream_rq_too_large",
    "downstream_rq_timeout",
    "downstream_rq_idle_timeout",
    "downstream_rq_max_duration_reached",
    "downstream_rq_header_timeout",
    "downstream_rq_ws_on_non_ws_route",
    "downstream_rq_response_before_rq_complete",
    "downstream_rq_failed_path_normalization",
    "downstream_rq_redirected_with_normalized_path",
    "rs_too_large",
    # The router filter's stats share the connection manager's prefix.
    "no_route",
    "no_cluster",
    "rq_redirect",
    "rq_direct_response",
    "rq_total",
    "rq_reset_after_downstream_response_started",
)
_HCM_GAUGES = _gauges(
    "downstream_cx_active",
    "downstream_cx_ssl_active",
    "downstream_cx_http1_active",
    "downstream_cx_upgrades_active",
    "downstream_cx_http2_active",
    "downstream_cx_rx_bytes_buffered",
    "downstream_cx_tx_bytes_buffered",
    "downstream_rq_active",
)
_HCM_HISTOGRAMS = _decl("downstream_cx_length_ms", "downstream_rq_time")


class HttpConnectionManagerStats(StatsGroup):
    """``http.<stat_prefix>.*``: one per HTTP connection manager config."""

    KIND = "http"
    PREFIX = "http.{}."
    COUNTERS = _HCM_COUNTERS
    GAUGES = _HCM_GAUGES
    HISTOGRAMS = _HCM_HISTOGRAMS
    __slots__ = _slots(_HCM_COUNTERS, _HCM_GAUGES, _HCM_HISTOGRAMS)

    def __init__(self, stat_prefix: str) -> None:
        super().__init__(f"http.{stat_prefix}.", stat_prefix)

    def record_response(self, code: int) -> None:
        """A response sent downstream: ``downstream_rq_<N>xx`` and ``downstream_rq_completed``."""
        self.downstream_rq_completed += 1
        klass = code // 100
        if klass == 2:
            self.downstream_rq_2xx += 1
        elif klass == 5:
            self.downstream_rq_5xx += 1
        elif klass == 4:
            self.downstream_rq_4xx += 1
        elif klass == 3:
            self.downstream_rq_3xx += 1
        elif klass == 1:
            self.downstream_rq_1xx += 1


_LISTENER_COUNTERS = _decl(
    "downstream_cx_total",
    "downstream_cx_destroy",
    "downstream_cx_overflow",
    "downstream_cx_overload_reject",
    "downstream_global_cx_overflow",
    "downstream_pre_cx_timeout",
    "downstream_listener_filter_remote_close",
    "downstream_listener_filter_error",
    "no_filter_chain_match",
    "extension_config_missing",
)
_LISTENER_GAUGES = _gauges("downstream_cx_active", "downstream_pre_cx_active")
_LISTENER_HISTOGRAMS = _decl("downstream_cx_length_ms")


def listener_stat_name(host: str, port: int) -> str:
    """Envoy's stat name for a listener address: ``0.0.0.0_9080`` (``:`` becomes ``_``)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return address.replace(":", "_")


class ListenerStats(StatsGroup):
    """``listener.<address>.*``: one per listener (by its address or ``stat_prefix``)."""

    KIND = "listener"
    PREFIX = "listener.{}."
    COUNTERS = _LISTENER_COUNTERS
    GAUGES = _LISTENER_GAUGES
    HISTOGRAMS = _LISTENER_HISTOGRAMS
    __slots__ = _slots(_LISTENER_COUNTERS, _LISTENER_GAUGES, _LISTENER_HISTOGRAMS)

    def __init__(self, stat_name: str) -> None:
        super().__init__(f"listener.{stat_name}.", stat_name)


_CM_COUNTERS = _decl(
    "cluster_added",
    "cluster_modified",
    "cluster_removed",
    "cluster_updated",
    "cluster_updated_via_merge",
    "update_merge_cancelled",
    "update_out_of_merge_window",
    ("cds_update_attempt", "cds.update_attempt"),
    ("cds_update_success", "cds.update_success"),
    ("cds_update_failure", "cds.update_failure"),
    ("cds_update_rejected", "cds.update_rejected"),
    ("cds_init_fetch_timeout", "cds.init_fetch_timeout"),
)
_CM_GAUGES = _gauges(
    "active_clusters", "warming_clusters", ("cds_version", "cds.version"), merge=MAX
)


class ClusterManagerStats(StatsGroup):
    """``cluster_manager.*``: owned by the process that applies CDS."""

    KIND = "cluster_manager"
    PREFIX = "cluster_manager."
    COUNTERS = _CM_COUNTERS
    GAUGES = _CM_GAUGES
    __slots__ = _slots(_CM_COUNTERS, _CM_GAUGES, ())

    def __init__(self, key: str = "") -> None:
        super().__init__("cluster_manager.")


_LM_COUNTERS = _decl(
    "listener_added",
    "listener_modified",
    "listener_removed",
    "listener_stopped",
    "listener_create_success",
    "listener_create_failure",
    "listener_in_place_updated",
    ("lds_update_attempt", "lds.update_attempt"),
    ("lds_update_success", "lds.update_success"),
    ("lds_update_failure", "lds.update_failure"),
    ("lds_update_rejected", "lds.update_rejected"),
)
_LM_GAUGES = _gauges(
    "total_listeners_warming",
    "total_listeners_active",
    "total_listeners_draining",
    "workers_started",
    ("lds_version", "lds.version"),
    merge=MAX,
)


class ListenerManagerStats(StatsGroup):
    """``listener_manager.*``: owned by the process that applies LDS."""

    KIND = "listener_manager"
    PREFIX = "listener_manager."
    COUNTERS = _LM_COUNTERS
    GAUGES = _LM_GAUGES
    __slots__ = _slots(_LM_COUNTERS, _LM_GAUGES, ())

    def __init__(self, key: str = "") -> None:
        super().__init__("listener_manager.")


_SERVER_COUNTERS = _decl(
    "debug_assertion_failures",
    "envoy_bug_failures",
    "static_unknown_fields",
    "dynamic_unknown_fields",
    "dropped_stat_flushes",
)
_SERVER_GAUGES = _gauges(
    "live",
    "state",
    "uptime",
    "concurrency",
    "memory_allocated",
    "memory_heap_size",
    "memory_physical_size",
    "hot_restart_epoch",
    "hot_restart_generation",
    "version",
    "days_until_first_cert_expiring",
    "seconds_until_first_ocsp_response_expiring",
    merge=MAX,
) + _gauges("total_connections", "parent_connections")


class ServerStats(StatsGroup):
    """``server.*``: process state; the admin process sets it before each scrape."""

    KIND = "server"
    PREFIX = "server."
    COUNTERS = _SERVER_COUNTERS
    GAUGES = _SERVER_GAUGES
    __slots__ = _slots(_SERVER_COUNTERS, _SERVER_GAUGES, ())

    def __init__(self, key: str = "") -> None:
        super().__init__("server.")


_CODEC_COUNTERS = _decl(
    "dropped_headers_with_underscores",
    "requests_rejected_with_underscores_in_headers",
)


class CodecStats(StatsGroup):
    """``http1.*`` and ``http2.*``: the downstream codecs' counters (Envoy roots them there,
    shared by every connection manager)."""

    KIND = "codec"
    PREFIX = "{}."
    COUNTERS = _CODEC_COUNTERS
    __slots__ = _slots(_CODEC_COUNTERS, (), ())

    def __init__(self, protocol: str) -> None:
        super().__init__(f"{protocol}.", protocol)


FAMILIES: dict[str, type[StatsGroup]] = {
    cls.KIND: cls
    for cls in (
        CodecStats,
        ClusterStats,
        HealthCheckStats,
        HttpConnectionManagerStats,
        ListenerStats,
        ClusterManagerStats,
        ListenerManagerStats,
        ServerStats,
    )
}
