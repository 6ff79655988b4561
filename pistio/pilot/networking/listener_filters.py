"""Listener filters and the TCP proxy network filter shared by sidecar listeners (Istio's
``xds/filters`` and ``networkfilter.go``).

``original_dst`` recovers the address iptables redirected from; ``tls_inspector`` reads SNI
and ALPN; ``http_inspector`` sniffs HTTP/1.x and h2c so a listener can choose between its
HTTP and TCP filter chains (protocol sniffing).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pistio.xds.any_codec import pack

ORIGINAL_DST = "envoy.filters.listener.original_dst"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
RAW_BUFFER = "raw_buffer"
TLS = "tls"
# Sniffed by the HTTP inspector; HTTP/1.0 is matched only with Istio's HTTP10 feature.
PLAINTEXT_HTTP_ALPNS = ("http/1.1", "h2c")
# Istio reads only the first 512 bytes for the ClientHello (Envoy's default is 64 KiB).
TLS_INSPECTOR_BUFFER = 512


def original_dst_filter() -> lc.ListenerFilter:
    return lc.ListenerFilter(name=ORIGINAL_DST, typed_config=pack(original_dst_pb2.OriginalDst()))


def tls_inspector_filter() -> lc.ListenerFilter:
    inspector = tls_inspector_pb2.TlsInspector()
    inspector.initial_read_buffer_size.value = TLS_INSPECTOR_BUFFER
    return lc.ListenerFilter(name=TLS_INSPECTOR, typed_config=pack(inspector))


def http_inspector_filter() -> lc.ListenerFilter:
    return lc.ListenerFilter(
        name=HTTP_INSPECTOR, typed_config=pack(http_inspector_pb2.HttpInspector())
    )


def tcp_proxy_filter(
    stat_prefix: str,
    cluster: str = "",
    weighted: list[tuple[str, int]] | None = None,
    access_log: Sequence[accesslog_pb2.AccessLog] = (),
) -> lc.Filter:
    """A terminal ``tcp_proxy`` to one cluster, or to weighted clusters."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, access_log=access_log)
    if weighted:
        for name, weight in weighted:
            proxy.weighted_clusters.clusters.add(name=name, weight=weight)
    else:
        proxy.cluster = cluster
    return lc.Filter(name=TCP_PROXY, typed_config=pack(proxy))


def socket_address(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )
