"""Shared helpers for the security config tests: build a sidecar's inbound listener from the
Bookinfo push context plus extra YAML, and look into its chains and filters."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.listener_inbound import build_virtual_inbound_listener
from pistio.pilot.security.proto_validate import validate_message
from pistio.xds.any_codec import unpack
from tests.unit.pilot.bookinfo_fixture import bookinfo_push, sidecar_proxy


def inbound(
    extra_yaml: str = "", proxy: Proxy | None = None, push: PushContext | None = None
) -> listener_pb2.Listener:
    """virtualInbound of productpage (or ``proxy``), checked against Envoy's PGV rules."""
    lst = build_virtual_inbound_listener(
        push or bookinfo_push(extra_yaml), proxy or sidecar_proxy()
    )
    assert validate_message(lst) == []
    return lst


def chains_for_port(lst: listener_pb2.Listener, port: int) -> list[lc.FilterChain]:
    return [
        c
        for c in lst.filter_chains
        if c.filter_chain_match.HasField("destination_port")
        and c.filter_chain_match.destination_port.value == port
    ]


def passthrough_chains(lst: listener_pb2.Listener) -> list[lc.FilterChain]:
    return [
        c
        for c in lst.filter_chains
        if c.name in ("virtualInbound", "virtualInbound-catchall-http")
        and not c.filter_chain_match.HasField("destination_port")
    ]


def hcm_of(chain: lc.FilterChain) -> hcm_pb2.HttpConnectionManager:
    f = chain.filters[-1]
    assert f.name == "envoy.filters.network.http_connection_manager"
    return unpack(f.typed_config)


def http_filters(chain: lc.FilterChain) -> list[hcm_pb2.HttpFilter]:
    return list(hcm_of(chain).http_filters)


def http_filter_names(chain: lc.FilterChain) -> list[str]:
    return [f.name for f in http_filters(chain)]


def shape(chain: lc.FilterChain) -> tuple[str, tuple[str, ...], bool]:
    """(transport protocol, ALPNs matched, terminates TLS)."""
    m = chain.filter_chain_match
    return (
        m.transport_protocol,
        tuple(m.application_protocols),
        chain.HasField("transport_socket"),
    )
