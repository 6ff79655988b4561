"""PeerAuthentication: Istio's inheritance table, the inbound chains each mode produces
(names, matches, DownstreamTlsContext) and the client side staying consistent with them."""

from __future__ import annotations

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from pistio.pilot.networking.cluster_builder import build_clusters
from pistio.pilot.networking.endpoint_builder import workload_mtls_disabled
from pistio.pilot.security.peer_authn import (
    MtlsMode,
    compose_peer_authentication,
    peer_authentication_for,
)
from pistio.pilot.security.proto_validate import validate_message
from pistio.xds.any_codec import unpack
from tests.unit.pilot.bookinfo_fixture import (
    bookinfo_endpoints,
    bookinfo_push,
    parse_configs,
    sidecar_proxy,
)
from tests.unit.pilot.security.helpers import (
    chains_for_port,
    inbound,
    passthrough_chains,
    shape,
)

PRODUCTPAGE = {"app": "productpage", "version": "v1"}


def pa(
    name: str,
    ns: str,
    mode: str | None = None,
    selector: str | None = None,
    ports: dict[int, str] | None = None,
    created: str = "",
) -> str:
    lines = [
        "apiVersion: security.istio.io/v1",
        "kind: PeerAuthentication",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {ns}",
    ]
    if created:
        lines.append(f"  creationTimestamp: '{created}'")
    lines.append("spec:" if (selector or mode or ports) else "spec: {}")
    if selector:
        lines += ["  selector:", "    matchLabels:", f"      app: {selector}"]
    if mode:
        lines += ["  mtls:", f"    mode: {mode}"]
    if ports:
        lines.append("  portLevelMtls:")
        for port, m in ports.items():
            lines += [f"    {port}:", f"      mode: {m}"]
    return "\n".join(lines) + "\n"


def docs(*parts: str) -> str:
    return "---\n".join(parts)


def effective(yaml: str, port: int = 9080) -> MtlsMode:
    configs = sorted(
        parse_configs(yaml) if yaml else [], key=lambda r: r.metadata.creation_timestamp or ""
    )
    applicable = [
        c
        for c in configs
        if c.namespace in ("default", "istio-system")
        and (c.spec.selector is None or c.spec.selector.match_labels.items() <= PRODUCTPAGE.items())
    ]
    return compose_peer_authentication("istio-system", applicable).mode_for_port(port)


# Istio's inheritance rules: narrowest scope wins, UNSET inherits, port-level only on the
# workload policy, root-namespace selector policies ignored.
INHERITANCE = [
    ("no policy: PERMISSIVE", "", MtlsMode.PERMISSIVE),
    ("mesh STRICT", pa("default", "istio-system", "STRICT"), MtlsMode.STRICT),
    ("mesh UNSET", pa("default", "istio-system", "UNSET"), MtlsMode.PERMISSIVE),
    ("mesh without mtls", pa("default", "istio-system"), MtlsMode.PERMISSIVE),
    (
        "namespace overrides mesh",
        docs(pa("default", "istio-system", "STRICT"), pa("ns", "default", "PERMISSIVE")),
        MtlsMode.PERMISSIVE,
    ),
    (
        "namespace UNSET inherits mesh",
        docs(pa("default", "istio-system", "STRICT"), pa("ns", "default", "UNSET")),
        MtlsMode.STRICT,
    ),
    (
        "workload overrides namespace",
        docs(pa("ns", "default", "STRICT"), pa("pp", "default", "DISABLE", "productpage")),
        MtlsMode.DISABLE,
    ),
    (
        "workload UNSET inherits namespace",
        docs(pa("ns", "default", "DISABLE"), pa("pp", "default", "UNSET", "productpage")),
        MtlsMode.DISABLE,
    ),
    (
        "workload for another app does not apply",
        docs(pa("ns", "default", "STRICT"), pa("rv", "default", "DISABLE", "reviews")),
        MtlsMode.STRICT,
    ),
    (
        "port-level overrides workload",
        pa("pp", "default", "STRICT", "productpage", {9080: "DISABLE"}),
        MtlsMode.DISABLE,
    ),
    (
        "port-level UNSET inherits workload, which inherits mesh",
        docs(
            pa("default", "istio-system", "STRICT"),
            pa("pp", "default", None, "productpage", {9080: "UNSET"}),
        ),
        MtlsMode.STRICT,
    ),
    (
        "port-level for another port",
        pa("pp", "default", "STRICT", "productpage", {8080: "DISABLE"}),
        MtlsMode.STRICT,
    ),
    (
        "selector policy in the root namespace is ignored",
        pa("pp", "istio-system", "DISABLE", "productpage"),
        MtlsMode.PERMISSIVE,
    ),
    (
        "oldest namespace policy wins",
        docs(
            pa("new", "default", "DISABLE", created="2024-02-01T00:00:00Z"),
            pa("old", "default", "STRICT", created="2024-01-01T00:00:00Z"),
        ),
        MtlsMode.STRICT,
    ),
]


@pytest.mark.parametrize(
    ("yaml", "expected"), [c[1:] for c in INHERITANCE], ids=[c[0] for c in INHERITANCE]
)
def test_inheritance_table(yaml: str, expected: MtlsMode) -> None:
    assert effective(yaml) is expected
    # The push context's selection gives the same answer.
    push = bookinfo_push(yaml)
    assert peer_authentication_for(push, "default", PRODUCTPAGE).mode_for_port(9080) is expected


def test_permissive_default_chains() -> None:
    lst = inbound()
    app = chains_for_port(lst, 9080)
    assert [c.name for c in app] == ["0.0.0.0_9080", "0.0.0.0_9080"]
    assert [shape(c) for c in app] == [
        (
            "tls",
            ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"),
            True,
        ),
        ("raw_buffer", (), False),
    ]
    passthrough = passthrough_chains(lst)
    assert [(c.name, *shape(c)) for c in passthrough] == [
        (
            "virtualInbound-catchall-http",
            "tls",
            ("istio-http/1.0", "istio-http/1.1", "istio-h2"),
            True,
        ),
        ("virtualInbound-catchall-http", "raw_buffer", ("http/1.1", "h2c"), False),
        ("virtualInbound", "tls", ("istio-peer-exchange", "istio"), True),
        ("virtualInbound", "raw_buffer", (), False),
        ("virtualInbound", "tls", (), False),  # one-way TLS from an app: passed through
    ]
    filters = [f.name for f in lst.listener_filters]
    assert filters == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
    ]


def test_tls_context_is_istios() -> None:
    (tls_chain, _) = chains_for_port(inbound(), 9080)
    assert tls_chain.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = unpack(tls_chain.transport_socket.typed_config)
    assert isinstance(ctx, tls_pb2.DownstreamTlsContext)
    assert ctx.require_client_certificate.value is True
    common = ctx.common_tls_context
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]  # an HTTP chain
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert common.tls_params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    assert list(common.tls_params.cipher_suites)[:2] == [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ]
    (cert,) = common.tls_certificate_sds_secret_configs
    assert cert.name == "default"
    grpc = cert.sds_config.api_config_source.grpc_services[0]
    assert grpc.envoy_grpc.cluster_name == "sds-grpc"
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "ROOTCA"
    assert combined.HasField("default_validation_context")
    assert not combined.default_validation_context.match_subject_alt_names
    # TCP passthrough chains negotiate istio-peer-exchange.
    tcp_tls = [
        c
        for c in passthrough_chains(inbound())
        if c.name == "virtualInbound" and c.HasField("transport_socket")
    ]
    tcp_ctx = unpack(tcp_tls[0].transport_socket.typed_config)
    assert list(tcp_ctx.common_tls_context.alpn_protocols) == [
        "istio-peer-exchange",
        "h2",
        "http/1.1",
    ]


def test_trust_domain_aliases_and_min_tls_version() -> None:
    from pistio.api.mesh import MeshConfig
    from pistio.pilot.model.push_context import PushContext
    from tests.unit.pilot.bookinfo_fixture import bookinfo_services

    mesh = MeshConfig.model_validate(
        {
            "trustDomain": "td1",
            "trustDomainAliases": ["old-td"],
            "meshMTLS": {"minProtocolVersion": "TLSV1_3"},
        }
    )
    push = PushContext([], bookinfo_services(), bookinfo_endpoints(), mesh)
    (tls_chain, _) = chains_for_port(inbound(push=push), 9080)
    common = unpack(tls_chain.transport_socket.typed_config).common_tls_context
    sans = common.combined_validation_context.default_validation_context.match_subject_alt_names
    assert [m.prefix for m in sans] == ["spiffe://td1/", "spiffe://old-td/"]
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_3


def test_strict_chains() -> None:
    lst = inbound(pa("default", "istio-system", "STRICT"))
    assert [shape(c) for c in chains_for_port(lst, 9080)] == [("tls", (), True)]
    assert [(c.name, *shape(c)) for c in passthrough_chains(lst)] == [
        (
            "virtualInbound-catchall-http",
            "tls",
            ("istio-http/1.0", "istio-http/1.1", "istio-h2"),
            True,
        ),
        ("virtualInbound", "tls", (), True),
    ]
    # No plaintext chain anywhere except the loop-breaking blackhole.
    plaintext = [c.name for c in lst.filter_chains if not c.HasField("transport_socket")]
    assert plaintext == ["virtualInbound-blackhole"]


def test_disable_chains() -> None:
    lst = inbound(pa("default", "default", "DISABLE"))
    assert [shape(c) for c in chains_for_port(lst, 9080)] == [("raw_buffer", (), False)]
    assert [(c.name, *shape(c)) for c in passthrough_chains(lst)] == [
        ("virtualInbound-catchall-http", "raw_buffer", ("http/1.1", "h2c"), False),
        ("virtualInbound", "raw_buffer", (), False),
    ]
    assert "envoy.filters.listener.tls_inspector" not in [f.name for f in lst.listener_filters]


def test_port_level_for_undeclared_port_gets_passthrough_chains() -> None:
    # Istio's mTLS migration example: STRICT workload, port 8080 (no service) DISABLE.
    lst = inbound(pa("pp", "default", "STRICT", "productpage", {8080: "DISABLE"}))
    assert [shape(c) for c in chains_for_port(lst, 9080)] == [("tls", (), True)]
    extra = chains_for_port(lst, 8080)
    assert [(c.name, *shape(c)) for c in extra] == [
        ("virtualInbound-catchall-http", "raw_buffer", ("http/1.1", "h2c"), False),
        ("virtualInbound", "raw_buffer", (), False),
    ]
    tls_inspector = next(
        f for f in lst.listener_filters if f.name == "envoy.filters.listener.tls_inspector"
    )
    # Enabled by default (the passthrough needs it), disabled on 8080 (and on 15006).
    rules = tls_inspector.filter_disabled.or_match.rules
    assert [(r.destination_port_range.start, r.destination_port_range.end) for r in rules] == [
        (8080, 8081),
        (15006, 15007),
    ]


def test_client_side_follows_server_mode() -> None:
    """Auto mTLS: endpoints whose server side is DISABLE lose the tlsMode metadata that
    selects the mTLS socket; the others keep it; a namespace DISABLE drops auto mTLS."""
    push = bookinfo_push(pa("rv", "default", "DISABLE", "reviews"))
    by_ip = {ep.address: ep for ep in bookinfo_endpoints()}
    assert workload_mtls_disabled(push, by_ip["10.244.0.12"]) is True  # reviews-v1
    assert workload_mtls_disabled(push, by_ip["10.244.0.15"]) is False  # ratings
    push = bookinfo_push(pa("pp", "default", "STRICT", "productpage", {9080: "DISABLE"}))
    assert workload_mtls_disabled(push, by_ip["10.244.0.10"]) is True

    def reviews_cluster(yaml: str):
        clusters = {c.name: c for c in build_clusters(bookinfo_push(yaml), sidecar_proxy())}
        return clusters["outbound|9080||reviews.default.svc.cluster.local"]

    auto = reviews_cluster("")
    assert [m.name for m in auto.transport_socket_matches] == ["tlsMode-istio", "tlsMode-disabled"]
    upstream = unpack(auto.transport_socket_matches[0].transport_socket.typed_config)
    assert upstream.sni == "outbound_.9080_._.reviews.default.svc.cluster.local"
    assert list(upstream.common_tls_context.alpn_protocols) == ["istio-peer-exchange", "istio"]
    assert validate_message(auto) == []
    off = reviews_cluster(pa("ns", "default", "DISABLE"))
    assert not off.transport_socket_matches and not off.HasField("transport_socket")


def test_endpoints_drop_tls_mode_for_disabled_workloads() -> None:
    from pistio.pilot.networking.endpoint_builder import build_cluster_load_assignment

    push = bookinfo_push(pa("rv", "default", "DISABLE", "reviews"))
    cla: endpoint_pb2.ClusterLoadAssignment = build_cluster_load_assignment(
        push, sidecar_proxy(), "outbound|9080||reviews.default.svc.cluster.local"
    )
    marked = {
        lb.endpoint.address.socket_address.address: "envoy.transport_socket_match"
        in lb.metadata.filter_metadata
        for group in cla.endpoints
        for lb in group.lb_endpoints
    }
    assert marked == {"10.244.0.12": False, "10.244.0.13": False, "10.244.0.14": False}
