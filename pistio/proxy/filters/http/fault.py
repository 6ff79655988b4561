"""Envoy's fault injection filter (``envoy.filters.http.fault``): delay, then abort.

The filter's own config (from the connection manager's ``http_filters``; Istio's is empty) is
replaced entirely by a route's ``typed_per_filter_config`` for the filter's name (Istio puts a
VirtualService's ``fault`` there). A fault applies only when the route's cluster is
``upstream_cluster`` (if set), the ``x-envoy-downstream-service-node`` header names one of
``downstream_nodes`` (if set), every ``headers`` matcher matches, and fewer than
``max_active_faults`` faults are in progress on this worker.

Then, each by its own percentage: a **delay** holds the request for ``fixed_delay`` (or the
milliseconds in ``x-envoy-fault-delay-request`` for a header-controlled delay), flag ``DI``,
``<stat_prefix>.fault.delays_injected``; after it an **abort** answers with ``http_status``
(or the code in ``x-envoy-fault-abort-request``) and the body ``fault filter abort``, flag
``FI``, ``fault.aborts_injected``. A gRPC abort answers 200 with ``grpc-status``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from pistio.proxy.access_log import response_flags as rf
from pistio.proxy.config.route_action import FaultAbort, FaultDelay, HttpFault
from pistio.proxy.http.headers import Fields

if TYPE_CHECKING:
    from pistio.proxy.config.route_table import Route
    from pistio.proxy.http.connection_manager import ActiveStream
    from pistio.proxy.stats.store import Counter, StatsStore

ABORT_BODY = b"fault filter abort"
_DELAY_HEADER = b"x-envoy-fault-delay-request"
_ABORT_HEADER = b"x-envoy-fault-abort-request"
_ABORT_GRPC_HEADER = b"x-envoy-fault-abort-grpc-request"
_DOWNSTREAM_NODE = b"x-envoy-downstream-service-node"


class FaultFilter:
    """One ``envoy.filters.http.fault`` entry of a connection manager."""

    __slots__ = ("name", "config", "active", "delays_injected", "aborts_injected",
                 "faults_overflow")

    def __init__(self, name: str, config: HttpFault, store: StatsStore, stat_prefix: str) -> None:
        self.name = name
        self.config = config
        self.active = 0  # faults in progress on this worker (for max_active_faults)
        prefix = f"http.{stat_prefix}.fault."
        self.delays_injected: Counter = store.counter(prefix + "delays_injected")
        self.aborts_injected: Counter = store.counter(prefix + "aborts_injected")
        self.faults_overflow: Counter = store.counter(prefix + "faults_overflow")

    # The connection manager asks ``applies`` once per route (its filter plan) and skips the
    # filter for routes where it has nothing to do; ``encode_headers`` is a no-op.
    route_scoped = True
    encodes = False

    def applies(self, route: Route | None) -> bool:
        """Could a fault be injected on ``route``: its effective config (the route's
        ``typed_per_filter_config`` over the filter's own) has a delay or an abort?"""
        config = route.config_for(self.name, self.config) if route is not None else self.config
        return isinstance(config, HttpFault) and (config.delay is not None
                                                  or config.abort is not None)

    def _settings(self, s: ActiveStream) -> HttpFault | None:
        route = s.route()
        config = route.config_for(self.name, self.config) if route is not None else self.config
        if not isinstance(config, HttpFault):
            return None  # disabled for the route
        if config.upstream_cluster:
            action = route.action if route is not None else None
            if action is None or action.cluster != config.upstream_cluster:
                return None
        index = s.stream.head.index
        if config.downstream_nodes:
            node = index.get(_DOWNSTREAM_NODE)
            if node is None or node.decode("latin-1") not in config.downstream_nodes:
                return None
        for matcher in config.headers:
            if not matcher.matches_headers(index):
                return None
        return config

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        config = self._settings(s)
        if config is None or (config.delay is None and config.abort is None):
            return True
        limit = config.max_active_faults
        if limit is not None and self.active >= limit:
            self.faults_overflow.value += 1
            return True
        delay = _delay_seconds(config.delay, s) if config.delay is not None else None
        if delay is not None and delay > 0:
            self.delays_injected.value += 1
            s.info.response_flags |= rf.DELAY_INJECTED
            self.active += 1
            s.on_end(self._fault_ended)
            s.pause_decoding(delay, lambda: self._after_delay(s, config, position))
            return False
        return self._abort(s, config, position)

    def _after_delay(self, s: ActiveStream, config: HttpFault, position: int) -> None:
        if self._abort(s, config, position):
            s.continue_decoding(position + 1)

    def _fault_ended(self) -> None:
        self.active -= 1

    def _abort(self, s: ActiveStream, config: HttpFault, position: int) -> bool:
        abort = config.abort
        if abort is None:
            return True
        status, grpc = _abort_status(abort, s)
        if status is None and grpc is None:
            return True
        self.aborts_injected.value += 1
        if grpc is not None:
            fields: Fields = [(b"content-type", b"application/grpc"),
                              (b"grpc-status", b"%d" % grpc),
                              (b"grpc-message", ABORT_BODY)]
            s.send_local_reply(200, b"", fields, flag=rf.FAULT_INJECTED,
                               details="fault_filter_abort", filter_position=position)
        else:
            s.send_local_reply(status, ABORT_BODY, flag=rf.FAULT_INJECTED,  # type: ignore[arg-type]
                               details="fault_filter_abort", filter_position=position)
        return False

    def encode_headers(self, s: ActiveStream, status: int, fields: Fields) -> Fields:
        return fields


def _delay_seconds(delay: FaultDelay, s: ActiveStream) -> float | None:
    if not delay.fraction.enabled(random.getrandbits(32)):
        return None
    if delay.header_controlled:
        raw = s.stream.head.index.get(_DELAY_HEADER)
        if raw is None or not raw.isdigit():
            return None
        return int(raw) / 1000.0
    return delay.fixed_delay


def _abort_status(abort: FaultAbort, s: ActiveStream) -> tuple[int | None, int | None]:
    if not abort.fraction.enabled(random.getrandbits(32)):
        return None, None
    if abort.header_controlled:
        index = s.stream.head.index
        raw = index.get(_ABORT_HEADER)
        if raw is not None and raw.isdigit() and 200 <= int(raw) < 600:
            return int(raw), None
        raw = index.get(_ABORT_GRPC_HEADER)
        if raw is not None and raw.isdigit():
            return None, int(raw)
        return None, None
    return abort.http_status, abort.grpc_status
