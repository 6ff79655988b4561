"""Listener compilation for every listener our LDS generator builds, and Envoy's filter
chain match precedence (the examples of ``FilterChainMatch``'s documentation)."""

from __future__ import annotations

import pytest
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from pistio.pilot.networking.listener_builder import build_sidecar_listeners
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import (
    ConnInfo,
    ListenerFilterKind,
    compile_listener,
    original_dst_listener,
    select_filter_chain,
)
from tests.unit.pilot.bookinfo_fixture import bookinfo_push, sidecar_proxy
from tests.unit.pilot.test_listeners import extended_push

POD_IP = "10.244.0.10"


def generated(push=None):
    return {
        lst.name: compile_listener(lst)
        for lst in build_sidecar_listeners(push or extended_push(), sidecar_proxy())
    }


def test_every_generated_listener_compiles():
    assert set(generated(bookinfo_push())) >= {"0.0.0.0_9080", "virtualOutbound",
                                               "virtualInbound"}
    assert len(generated()) == 8


def test_virtual_outbound_hands_off_by_original_destination():
    out = generated()
    vo = out["virtualOutbound"]
    assert (vo.port, vo.bind_to_port, vo.use_original_dst) == (15001, True, True)
    table = {(lst.address, lst.port): lst for lst in out.values() if not lst.bind_to_port}
    assert original_dst_listener(table, "10.96.0.12", 9080).name == "0.0.0.0_9080"
    assert original_dst_listener(table, "10.96.0.20", 3306).name == "10.96.0.20_3306"
    assert original_dst_listener(table, "10.96.0.99", 1234) is None
    # Unmatched traffic stays on virtualOutbound: a loop to 15001 is blackholed.
    assert select_filter_chain(vo, ConnInfo("10.0.0.1", 15001)).name == \
        "virtualOutbound-blackhole"
    passthrough = select_filter_chain(vo, ConnInfo("1.2.3.4", 443))
    assert passthrough.tcp_proxy.cluster == "PassthroughCluster"


def test_outbound_http_listener_sniffs_protocol():
    lst = generated()["0.0.0.0_9080"]
    kinds = [f.kind for f in lst.listener_filters]
    assert kinds == [ListenerFilterKind.TLS_INSPECTOR, ListenerFilterKind.HTTP_INSPECTOR]
    http = select_filter_chain(lst, ConnInfo("10.96.0.12", 9080,
                                             application_protocols=("http/1.1",)))
    assert http.http.rds_route_config_name == "9080"
    assert [f.name for f in http.http.http_filters][-1] == "envoy.filters.http.router"
    # Not HTTP: the listener's default chain (TCP to PassthroughCluster).
    other = select_filter_chain(lst, ConnInfo("10.96.0.12", 9080))
    assert other is lst.default_filter_chain and other.tcp_proxy is not None


def test_virtual_inbound_chains():
    vi = generated()["virtualInbound"]
    assert (vi.port, vi.bind_to_port, vi.use_original_dst) == (15006, True, False)
    assert [f.kind for f in vi.listener_filters][0] is ListenerFilterKind.ORIGINAL_DST
    chain = select_filter_chain(vi, ConnInfo(POD_IP, 9080, application_protocols=("h2c",)))
    assert chain.name == "0.0.0.0_9080" and chain.http is not None
    assert chain.http.route_config is not None  # inline route config
    assert chain.http.forward_client_cert_details != 0
    http_any = select_filter_chain(vi, ConnInfo(POD_IP, 7777, application_protocols=("http/1.1",)))
    assert http_any.name == "virtualInbound-catchall-http"
    tcp_any = select_filter_chain(vi, ConnInfo(POD_IP, 7777))
    assert tcp_any.tcp_proxy.cluster == "InboundPassthroughCluster"
    assert select_filter_chain(vi, ConnInfo(POD_IP, 15006)).name == "virtualInbound-blackhole"


# --- Envoy's precedence rules ----------------------------------------------------------------


def chain(name: str, **match) -> lc.FilterChain:
    fc = lc.FilterChain(name=name)
    for key, value in match.items():
        if key == "destination_port":
            fc.filter_chain_match.destination_port.value = value
        elif key in ("prefix_ranges", "source_prefix_ranges", "direct_source_prefix_ranges"):
            for cidr in value:
                ip, plen = cidr.split("/")
                r = getattr(fc.filter_chain_match, key).add(address_prefix=ip)
                r.prefix_len.value = int(plen)
        elif key in ("server_names", "application_protocols", "source_ports"):
            getattr(fc.filter_chain_match, key).extend(value)
        else:
            setattr(fc.filter_chain_match, key, value)
    f = fc.filters.add(name="envoy.filters.network.tcp_proxy")
    f.typed_config.Pack(tcp_proxy_pb2.TcpProxy(stat_prefix=name, cluster=name))
    return fc


def listener(*chains: lc.FilterChain, default: lc.FilterChain | None = None):
    lst = listener_pb2.Listener(name="test", filter_chains=chains)
    lst.address.socket_address.address = "0.0.0.0"
    lst.address.socket_address.port_value = 15006
    if default is not None:
        lst.default_filter_chain.CopyFrom(default)
    return compile_listener(lst)


def pick(lst, **conn) -> str | None:
    conn.setdefault("dst_ip", "10.0.0.1")
    conn.setdefault("dst_port", 80)
    chosen = select_filter_chain(lst, ConnInfo(**conn))
    return chosen.name if chosen else None


def test_server_name_most_specific_wins():
    lst = listener(
        chain("exact", server_names=["www.example.com"]),
        chain("wild", server_names=["*.example.com"]),
        chain("tld", server_names=["*.com"]),
        chain("none"),
    )
    assert pick(lst, server_name="www.example.com") == "exact"
    assert pick(lst, server_name="api.example.com") == "wild"
    assert pick(lst, server_name="foo.com") == "tld"
    assert pick(lst, server_name="example.org") == "none"
    assert pick(lst) == "none"


def test_destination_port_beats_everything_and_no_backtracking():
    lst = listener(
        chain("port", destination_port=80, server_names=["a.example.com"]),
        chain("sni", server_names=["b.example.com"]),
        default=chain("default"),
    )
    assert pick(lst, dst_port=80, server_name="a.example.com") == "port"
    # Port 80 chains exist, so the portless chain is out even though its SNI would match:
    # Envoy does not backtrack; the default chain takes the connection.
    assert pick(lst, dst_port=80, server_name="b.example.com") == "default"
    assert pick(lst, dst_port=81, server_name="b.example.com") == "sni"


def test_longest_destination_prefix_then_transport_and_alpn():
    lst = listener(
        chain("wide", prefix_ranges=["10.0.0.0/8"]),
        chain("narrow-tls", prefix_ranges=["10.1.0.0/16"], transport_protocol="tls"),
        chain("narrow-h2", prefix_ranges=["10.1.0.0/16"], transport_protocol="raw_buffer",
              application_protocols=["h2c"]),
        chain("narrow-raw", prefix_ranges=["10.1.0.0/16"], transport_protocol="raw_buffer"),
    )
    assert pick(lst, dst_ip="10.2.3.4") == "wide"
    assert pick(lst, dst_ip="10.1.3.4", transport_protocol="tls") == "narrow-tls"
    assert pick(lst, dst_ip="10.1.3.4", application_protocols=("h2c",)) == "narrow-h2"
    assert pick(lst, dst_ip="10.1.3.4", application_protocols=("http/1.1",)) == "narrow-raw"
    assert pick(lst, dst_ip="192.168.0.1") is None  # no match, no default: close


def test_source_criteria():
    lst = listener(
        chain("local", source_type=1),
        chain("net", source_prefix_ranges=["192.168.0.0/16"], source_type=2),
        chain("net-port", source_prefix_ranges=["192.168.0.0/16"], source_type=2,
              source_ports=[5555]),
        chain("external", source_type=2),
    )
    assert pick(lst, src_ip="127.0.0.1") == "local"
    assert pick(lst, src_ip="10.0.0.1") == "local"  # same IP as the destination
    assert pick(lst, src_ip="192.168.1.1", src_port=5555) == "net-port"
    assert pick(lst, src_ip="192.168.1.1", src_port=1) == "net"
    assert pick(lst, src_ip="8.8.8.8") == "external"


def test_listener_filter_disabled_by_port_predicate():
    vi = generated()["virtualInbound"]
    inspector = next(f for f in vi.listener_filters
                     if f.kind is ListenerFilterKind.HTTP_INSPECTOR)
    assert inspector.disabled_when is not None
    # Ports with a declared protocol (and the blackhole port) skip sniffing: [start, end).
    disabled = [p for p in (9079, 9080, 9081, 15006, 3306) if not inspector.enabled_for(p)]
    assert disabled == [9080, 15006]


def test_unsupported_listener_parts_are_nacked():
    lst = listener_pb2.Listener(name="bad")
    lst.address.socket_address.address = "0.0.0.0"
    lst.transparent.value = True
    fc = lst.filter_chains.add(name="x")
    fc.filter_chain_match.address_suffix = "0.0.0.1"
    fc.filters.add(name="envoy.filters.network.rbac").typed_config.Pack(
        tcp_proxy_pb2.TcpProxy.WeightedCluster()
    )
    lst.filter_chains.append(chain("a", destination_port=80))
    lst.filter_chains.append(chain("b", destination_port=80))
    lst.listener_filters.add(name="envoy.filters.listener.proxy_protocol")
    with pytest.raises(ConfigError) as err:
        compile_listener(lst)
    problems = err.value.problems
    assert "Listener bad: transparent: field not supported by pistio" in problems
    assert ("Listener bad: filter_chains[0].filter_chain_match.address_suffix: field not "
            "supported by pistio") in problems
    assert any("network filter 'envoy.filters.network.rbac'" in p for p in problems)
    assert "Listener bad: filter_chains[2]: same filter_chain_match as chain 'a'" in problems
    assert any("listener filter 'envoy.filters.listener.proxy_protocol'" in p for p in problems)
