"""PeerAuthentication: the effective mTLS mode of a workload port and the inbound TLS it
implies (Istio's ``authn.ComposePeerAuthentication``, ``utils.BuildInboundTLS`` and
``core/filterchain_options.go``).

Inheritance, exactly as Istio composes it:

- candidates are the mesh policy (root namespace, no selector), the namespace policy (the
  workload's namespace, no selector) and the workload policy (workload's namespace,
  selector matching); within each scope the oldest policy wins; selector policies in the
  root namespace are ignored;
- the mode starts PERMISSIVE; a mesh, then namespace, then workload policy whose ``mtls``
  is set (not UNSET) overrides it, in that order;
- ``portLevelMtls`` is honoured only on the workload policy; an UNSET port inherits the
  workload-level result.

The server side accepts: STRICT — mTLS only (``require_client_certificate``); PERMISSIVE —
mTLS (TLS chains matched by Istio's ALPNs) and plaintext chains; DISABLE — plaintext only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from pistio.api.mesh import MeshConfig
from pistio.config.resource import Resource
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking import tls as tlsctx
from pistio.pilot.security.policies import PEER_AUTHENTICATION, policies_for_workload

RAW_BUFFER = "raw_buffer"
TLS = "tls"

# ALPNs the server side matches on (Istio's listener.go).
MTLS_HTTP_ALPNS = ("istio-http/1.0", "istio-http/1.1", "istio-h2")
ALL_ISTIO_MTLS_ALPNS = (
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
)
MTLS_TCP_WITH_MXC_ALPNS = ("istio-peer-exchange", "istio")
PLAINTEXT_HTTP_ALPNS = ("http/1.1", "h2c")  # http/1.0 only with Istio's PILOT_HTTP10
# ALPNs the server's DownstreamTlsContext negotiates (Istio's util.ALPNHttp and
# util.ALPNDownstreamWithMxc); "istio" itself is never negotiated, only matched on.
ALPN_HTTP = ("h2", "http/1.1")
ALPN_DOWNSTREAM_WITH_MXC = ("istio-peer-exchange", "h2", "http/1.1")
# Istio's SupportedCiphers for server-side mesh TLS.
SUPPORTED_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
)
SPIFFE_PREFIX = "spiffe://"


class MtlsMode(StrEnum):
    """Istio's model.MutualTLSMode."""

    UNKNOWN = "UNKNOWN"
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


def _mode_of(mtls: object | None) -> MtlsMode | None:
    """The mode a MutualTLS block sets; None for an absent block or UNSET."""
    mode = getattr(mtls, "mode", "UNSET") if mtls is not None else "UNSET"
    return None if mode == "UNSET" else MtlsMode(mode)


@dataclass(frozen=True)
class MergedPeerAuthentication:
    """Istio's MergedPeerAuthentication: the workload mode and its per-port overrides."""

    mode: MtlsMode = MtlsMode.PERMISSIVE
    per_port: Mapping[int, MtlsMode] = field(default_factory=lambda: MappingProxyType({}))

    def mode_for_port(self, port: int) -> MtlsMode:
        return self.per_port.get(port, self.mode)


def compose_peer_authentication(
    root_namespace: str, configs: Iterable[Resource]
) -> MergedPeerAuthentication:
    """Istio's ComposePeerAuthentication over the policies that apply to one workload,
    given oldest first."""
    mesh = namespace = workload = None
    for res in configs:
        ns = res.namespace or "default"
        if res.spec.selector is None or not res.spec.selector.match_labels:
            if ns == root_namespace:
                mesh = mesh or res
            else:
                namespace = namespace or res
        elif ns != root_namespace:
            workload = workload or res
    mode = MtlsMode.PERMISSIVE
    for scope in (mesh, namespace, workload):
        if scope is not None and (set_mode := _mode_of(scope.spec.mtls)) is not None:
            mode = set_mode
    per_port: dict[int, MtlsMode] = {}
    if workload is not None:
        for port, mtls in workload.spec.port_level_mtls.items():
            per_port[int(port)] = _mode_of(mtls) or mode
    return MergedPeerAuthentication(mode, MappingProxyType(per_port))


def peer_authentication_for(
    push: PushContext, namespace: str, labels: dict[str, str]
) -> MergedPeerAuthentication:
    """The effective PeerAuthentication of a workload (memoized per push context)."""
    memo: dict[tuple, MergedPeerAuthentication] = push.memo.setdefault("peer_authn", {})
    key = (namespace, tuple(sorted(labels.items())))
    found = memo.get(key)
    if found is None:
        configs = policies_for_workload(push, PEER_AUTHENTICATION, namespace, labels)
        found = memo[key] = compose_peer_authentication(push.root_namespace, configs)
    return found


# --- inbound TLS ------------------------------------------------------------------------------


def trust_domains_for_validation(mesh: MeshConfig) -> tuple[str, ...]:
    """Istio's TrustDomainsForValidation: nothing extra without aliases, else the trust
    domain and its aliases (peers from any of them are accepted)."""
    if not mesh.trust_domain_aliases:
        return ()
    return (mesh.trust_domain or "cluster.local", *mesh.trust_domain_aliases)


def _min_tls_version(mesh: MeshConfig) -> int:
    setting = mesh.mesh_mtls
    if setting is not None and setting.min_protocol_version == "TLSV1_3":
        return common_pb2.TlsParameters.TLSv1_3
    return common_pb2.TlsParameters.TLSv1_2


def build_inbound_tls(
    mode: MtlsMode, tcp: bool, mesh: MeshConfig
) -> tls_pb2.DownstreamTlsContext | None:
    """Istio's BuildInboundTLS: the workload certificate (SDS ``default``), client
    certificates required and verified against the mesh root (SDS ``ROOTCA``), TLS 1.2+
    with Istio's ciphers; None for DISABLE (plaintext)."""
    if mode in (MtlsMode.DISABLE, MtlsMode.UNKNOWN):
        return None
    ctx = tls_pb2.DownstreamTlsContext()
    ctx.require_client_certificate.value = True
    common = ctx.common_tls_context
    # TCP chains advertise istio-peer-exchange so sidecars can exchange metadata; HTTP
    # chains must not negotiate "istio" (it would hide the real protocol, h2 or HTTP/1.1).
    common.alpn_protocols.extend(ALPN_DOWNSTREAM_WITH_MXC if tcp else ALPN_HTTP)
    ciphers = (
        list(mesh.mesh_mtls.cipher_suites)
        if mesh.mesh_mtls and mesh.mesh_mtls.cipher_suites
        else list(SUPPORTED_CIPHERS)
    )
    common.tls_params.CopyFrom(
        common_pb2.TlsParameters(
            cipher_suites=ciphers,
            tls_minimum_protocol_version=_min_tls_version(mesh),
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        )
    )
    common.tls_certificate_sds_secret_configs.append(
        tlsctx.sds_secret_config(tlsctx.SDS_DEFAULT_RESOURCE)
    )
    combined = common.combined_validation_context
    combined.default_validation_context.SetInParent()
    for td in trust_domains_for_validation(mesh):
        combined.default_validation_context.match_subject_alt_names.add(
            prefix=f"{SPIFFE_PREFIX}{td}/"
        )
    combined.validation_context_sds_secret_config.CopyFrom(
        tlsctx.sds_secret_config(tlsctx.SDS_ROOT_RESOURCE)
    )
    return ctx


@dataclass(frozen=True)
class MTLSSettings:
    """Istio's authn.MTLSSettings: the mode of one port and its TLS contexts."""

    port: int
    mode: MtlsMode
    tcp: tls_pb2.DownstreamTlsContext | None = None
    http: tls_pb2.DownstreamTlsContext | None = None


def mtls_settings(push: PushContext, merged: MergedPeerAuthentication, port: int) -> MTLSSettings:
    """Istio's InboundMTLSSettings for a workload port (0: the passthrough chains)."""
    mode = merged.mode_for_port(port)
    return MTLSSettings(
        port=port,
        mode=mode,
        tcp=build_inbound_tls(mode, True, push.mesh),
        http=build_inbound_tls(mode, False, push.mesh),
    )


# --- filter chain match options ---------------------------------------------------------------


class ListenerProtocol(StrEnum):
    HTTP = "HTTP"
    TCP = "TCP"
    AUTO = "AUTO"  # protocol sniffing: split into HTTP and TCP chains


@dataclass(frozen=True)
class MatchOption:
    """Istio's FilterChainMatchOptions."""

    http: bool
    transport_protocol: str
    application_protocols: tuple[str, ...] = ()
    tls: bool = False  # the chain terminates (m)TLS

    def tls_context(self, mtls: MTLSSettings) -> tls_pb2.DownstreamTlsContext | None:
        if not self.tls:
            return None
        return mtls.http if self.http else mtls.tcp


_HTTP, _TCP = True, False
_PERMISSIVE_AUTO = (
    MatchOption(_HTTP, TLS, MTLS_HTTP_ALPNS, tls=True),
    MatchOption(_HTTP, RAW_BUFFER, PLAINTEXT_HTTP_ALPNS),
    MatchOption(_TCP, TLS, MTLS_TCP_WITH_MXC_ALPNS, tls=True),
    MatchOption(_TCP, RAW_BUFFER),
    # One-way TLS from an application (HTTPS straight to the pod): passed through as TCP.
    MatchOption(_TCP, TLS),
)
_PERMISSIVE_HTTP = (
    MatchOption(_HTTP, TLS, ALL_ISTIO_MTLS_ALPNS, tls=True),
    MatchOption(_HTTP, RAW_BUFFER),
)
_PERMISSIVE_TCP = (
    MatchOption(_TCP, TLS, ALL_ISTIO_MTLS_ALPNS, tls=True),
    MatchOption(_TCP, RAW_BUFFER),
    MatchOption(_TCP, TLS),
)
_STRICT_AUTO = (
    MatchOption(_HTTP, TLS, MTLS_HTTP_ALPNS, tls=True),
    MatchOption(_TCP, TLS, tls=True),
)
_STRICT_HTTP = (MatchOption(_HTTP, TLS, tls=True),)
_STRICT_TCP = (MatchOption(_TCP, TLS, tls=True),)
_PLAINTEXT_AUTO = (
    MatchOption(_HTTP, RAW_BUFFER, PLAINTEXT_HTTP_ALPNS),
    MatchOption(_TCP, RAW_BUFFER),
)
_PLAINTEXT_HTTP = (MatchOption(_HTTP, RAW_BUFFER),)
_PLAINTEXT_TCP = (MatchOption(_TCP, RAW_BUFFER),)

_OPTIONS: dict[tuple[ListenerProtocol, MtlsMode], tuple[MatchOption, ...]] = {
    (ListenerProtocol.HTTP, MtlsMode.STRICT): _STRICT_HTTP,
    (ListenerProtocol.HTTP, MtlsMode.PERMISSIVE): _PERMISSIVE_HTTP,
    (ListenerProtocol.AUTO, MtlsMode.STRICT): _STRICT_AUTO,
    (ListenerProtocol.AUTO, MtlsMode.PERMISSIVE): _PERMISSIVE_AUTO,
    (ListenerProtocol.TCP, MtlsMode.STRICT): _STRICT_TCP,
    (ListenerProtocol.TCP, MtlsMode.PERMISSIVE): _PERMISSIVE_TCP,
}
_PLAINTEXT = {
    ListenerProtocol.HTTP: _PLAINTEXT_HTTP,
    ListenerProtocol.AUTO: _PLAINTEXT_AUTO,
    ListenerProtocol.TCP: _PLAINTEXT_TCP,
}


def filter_chain_match_options(
    mode: MtlsMode, protocol: ListenerProtocol
) -> tuple[MatchOption, ...]:
    """Istio's getFilterChainMatchOptions (DISABLE and UNKNOWN are plaintext)."""
    return _OPTIONS.get((protocol, mode)) or _PLAINTEXT[protocol]
