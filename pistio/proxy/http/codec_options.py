"""Settings of a downstream HTTP/1 connection, with Envoy's defaults.

The fields mirror ``HttpConnectionManager`` and ``HttpProtocolOptions``: the listener compiles
them once per filter chain; every connection shares the same frozen instance.
"""

from __future__ import annotations

from dataclasses import dataclass

# envoy.config.core.v3.HttpProtocolOptions.HeadersWithUnderscoresAction.
UNDERSCORES_ALLOW, UNDERSCORES_REJECT, UNDERSCORES_DROP = 0, 1, 2


@dataclass(frozen=True, slots=True)
class HttpConnectionOptions:
    # max_request_headers_kb (Envoy default 60 KiB) and max_headers_count (default 100):
    # beyond either, 431 and the connection closes.
    max_request_headers_bytes: int = 60 * 1024
    max_headers_count: int = 100
    # request_headers_timeout: from the first byte of a request to the end of its headers;
    # 0 disables it (Envoy's default). On expiry: 408 and close.
    request_headers_timeout: float = 0.0
    # common_http_protocol_options.idle_timeout: a connection with no active request closes
    # after this long (Envoy's default is one hour); 0 disables it.
    idle_timeout: float = 3600.0
    # http_protocol_options.accept_http_10: Envoy (and Istio, unless the proxy's HTTP10
    # metadata is set) answers HTTP/1.0 requests with 426 Upgrade Required.
    accept_http_10: bool = False
    # default_host_for_http_10: the Host given to HTTP/1.0 requests that carry none.
    default_host_for_http_10: bytes = b""
    # server_name with server_header_transformation OVERWRITE (Envoy's default "envoy";
    # Istio's inbound sidecar listeners say "istio-envoy").
    server_name: bytes = b"envoy"
    # The scheme set in x-forwarded-proto when the request has none (TLS listeners: https).
    forwarded_proto: bytes = b"http"
    # request_id_extension / generate_request_id (default true).
    generate_request_id: bool = True
    # common_http_protocol_options.headers_with_underscores_action: ALLOW, REJECT_REQUEST
    # (HTTP/1: 400 and close; HTTP/2: the stream is reset), DROP_HEADER.
    headers_with_underscores: int = 0
    # common_http_protocol_options.max_requests_per_connection (0: no limit): the response
    # to the last request says connection: close (HTTP/2: GOAWAY after that stream).
    max_requests_per_connection: int = 0
    # common_http_protocol_options.max_connection_duration (0: none): then the connection
    # closes when idle, else drains (connection: close / GOAWAY).
    max_connection_duration: float = 0.0

    @property
    def server_line(self) -> bytes:
        return b"server: " + self.server_name + b"\r\n"
