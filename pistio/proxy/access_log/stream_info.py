"""The per-request record access logs are rendered from: Envoy's ``StreamInfo``.

Envoy keeps, for every stream, the facts its access loggers and stats need: when it started,
when its milestones happened, how many bytes went each way, which upstream host and cluster
served it, what response went back and why (code, details, response flags), and a view of the
request and response headers. The HTTP path fills these slots as it goes; nothing here is
formatted until a log line is rendered, so an unlogged request pays only for the assignments.

Facts about the downstream connection (addresses, SNI, peer certificate) are the same for every
request on it, so they live in a :class:`DownstreamConnectionInfo` created once per connection
and shared by its streams, as Envoy's connection info provider is.

Times: ``start_time_ns`` is wall-clock (``time.time_ns()``), printed by ``%START_TIME%``; every
milestone is ``time.monotonic_ns()`` (``None`` until reached) and durations are milestone minus
``start_monotonic_ns``, printed in whole milliseconds (truncated, as Envoy does).

Addresses are ``(host, port)`` tuples as asyncio's ``get_extra_info`` gives them, or already
formatted ``"ip:port"`` strings (an upstream host's key); both print as Envoy does
(``[v6]:port`` for IPv6).

Headers are any object with ``get(lower_case_name: bytes) -> bytes | None`` (the codecs' header
records). Pseudo-headers (``:method``, ``:path``, ``:authority``) are answered by the record
itself when it keeps them, or by its ``method`` / ``target`` / ``authority`` attributes.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from pistio.proxy.http.http2_grpc import GRPC_STATUS

Address = tuple[str, int] | str


class HeaderLookup(Protocol):
    def get(self, lower_name: bytes, /) -> bytes | None: ...


class DownstreamConnectionInfo:
    """What Envoy knows about a downstream connection (``downstreamAddressProvider`` and the
    TLS connection info): shared by all the streams of that connection."""

    __slots__ = (
        "local_address",
        "remote_address",
        "direct_remote_address",
        "requested_server_name",
        "peer_uri_san",
        "local_uri_san",
        "peer_subject",
        "tls_version",
        "peer_certificate",
        "connection_id",
    )

    def __init__(
        self,
        local_address: Address | None = None,
        remote_address: Address | None = None,
        connection_id: int | None = None,
    ) -> None:
        self.local_address = local_address
        self.remote_address = remote_address
        # The peer address of the socket itself, before any x-forwarded-for trust.
        self.direct_remote_address = remote_address
        self.requested_server_name: str | None = None
        self.peer_uri_san: str | None = None
        self.local_uri_san: str | None = None
        self.peer_subject: str | None = None
        self.tls_version: str | None = None
        # pistio.proxy.tls.peer.PeerCertificate of a mutual TLS connection (XFCC, RBAC).
        self.peer_certificate: Any = None
        self.connection_id = connection_id


_NO_CONNECTION = DownstreamConnectionInfo()


class StreamInfo:
    """One request's facts for access logs (Envoy's ``StreamInfo::StreamInfo``)."""

    __slots__ = (
        "start_time_ns",
        "start_monotonic_ns",
        "last_downstream_rx_byte_received",
        "first_upstream_tx_byte_sent",
        "last_upstream_tx_byte_sent",
        "first_upstream_rx_byte_received",
        "last_upstream_rx_byte_received",
        "first_downstream_tx_byte_sent",
        "last_downstream_tx_byte_sent",
        "protocol",
        "upstream_protocol",
        "response_code",
        "response_code_details",
        "response_flags",
        "connection_termination_details",
        "bytes_received",
        "bytes_sent",
        "upstream_host",
        "upstream_cluster",
        "upstream_cluster_observability_name",
        "upstream_local_address",
        "upstream_transport_failure_reason",
        "upstream_connection_id",
        "attempt_count",
        "route_name",
        "virtual_cluster_name",
        "downstream",
        "request_headers",
        "response_headers",
        "response_trailers",
        "dynamic_metadata",
        "filter_state",
        "local_reply_body",
        "trace_id",
        "downstream_peer",
        "upstream_peer",
    )

    def __init__(
        self,
        downstream: DownstreamConnectionInfo | None = None,
        start_time_ns: int | None = None,
        start_monotonic_ns: int | None = None,
    ) -> None:
        self.start_time_ns = time.time_ns() if start_time_ns is None else start_time_ns
        self.start_monotonic_ns = (
            time.monotonic_ns() if start_monotonic_ns is None else start_monotonic_ns
        )
        self.last_downstream_rx_byte_received: int | None = None
        self.first_upstream_tx_byte_sent: int | None = None
        self.last_upstream_tx_byte_sent: int | None = None
        self.first_upstream_rx_byte_received: int | None = None
        self.last_upstream_rx_byte_received: int | None = None
        self.first_downstream_tx_byte_sent: int | None = None
        # Set when the stream is complete: %DURATION% is measured up to here.
        self.last_downstream_tx_byte_sent: int | None = None
        self.protocol: str | None = None  # "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"
        self.upstream_protocol: str | None = None
        self.response_code = 0  # 0: no response was sent (Envoy prints 0)
        self.response_code_details: str | None = None  # "via_upstream", "route_not_found"...
        self.response_flags = 0  # bits from response_flags.py
        self.connection_termination_details: str | None = None
        self.bytes_received = 0  # request body bytes
        self.bytes_sent = 0  # response body bytes
        self.upstream_host: Address | None = None
        self.upstream_cluster: str | None = None
        # The cluster's alt_stat_name, printed by %UPSTREAM_CLUSTER% when set.
        self.upstream_cluster_observability_name: str | None = None
        self.upstream_local_address: Address | None = None
        self.upstream_transport_failure_reason: str | None = None
        self.upstream_connection_id: int | None = None
        self.attempt_count = 0  # upstream attempts (1 + retries)
        self.route_name: str | None = None
        self.virtual_cluster_name: str | None = None
        self.downstream = _NO_CONNECTION if downstream is None else downstream
        self.request_headers: HeaderLookup | None = None
        self.response_headers: HeaderLookup | None = None
        self.response_trailers: HeaderLookup | None = None
        # filter namespace -> JSON-like dict (Envoy's dynamic metadata Struct per filter).
        self.dynamic_metadata: dict[str, dict[str, Any]] | None = None
        # key -> plain string value (filter state objects serialized as PLAIN).
        self.filter_state: dict[str, str] | None = None
        self.local_reply_body: str | None = None
        self.trace_id: str | None = None
        # Istio peer metadata (pistio.proxy.telemetry.peer_metadata.PeerInfo) found by the
        # istio.metadata_exchange filter: the client (inbound) or the server (outbound).
        self.downstream_peer: Any = None
        self.upstream_peer: Any = None

    def grpc_status(self) -> int | None:
        """The response's ``grpc-status`` (Envoy's ``Grpc::Common::getGrpcStatus``): the
        trailers', else a trailers-only response's headers'; None when neither has a number."""
        for headers in (self.response_trailers, self.response_headers):
            if headers is not None:
                raw = headers.get(GRPC_STATUS)
                if raw is not None and raw.isdigit():
                    return int(raw)
        return None
