"""TLS contexts for Envoy clusters and listeners, with certificates delivered over SDS.

Istio never puts key material in CDS/LDS: a TLS context names SDS secrets that the
pilot-agent serves on the ``sds-grpc`` cluster — ``default`` (the workload's SPIFFE
certificate and key) and ``ROOTCA`` (the mesh trust bundle) for Istio mutual TLS,
``file-cert:<cert>~<key>`` / ``file-root:<ca>`` for files named in a DestinationRule, and,
for a ``credentialName``, ``kubernetes://<name>`` (plus ``kubernetes://<name>-cacert``) served
by the discovery itself over ADS from Kubernetes Secrets (Istio's
``pilot/pkg/networking/core/cluster_tls.go`` and ``pkg/model/authentication.go``).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2, message

from pistio.api import networking as net
from pistio.pilot.security.credentials import SDS_CA_SUFFIX, to_resource_name

SDS_CLUSTER = "sds-grpc"
SDS_DEFAULT_RESOURCE = "default"
SDS_ROOT_RESOURCE = "ROOTCA"
FILE_CERT_PREFIX = "file-cert:"
FILE_ROOT_PREFIX = "file-root:"
SYSTEM_CA = "system"

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_TRANSPORT_SOCKET = "envoy.transport_sockets.raw_buffer"

# ALPN Istio advertises on in-mesh mTLS connections: "istio" marks in-mesh traffic, and
# "istio-peer-exchange" announces TCP metadata exchange (Istio's util.ALPNInMesh*WithMxc).
ALPN_IN_MESH = ("istio-peer-exchange", "istio")
ALPN_IN_MESH_H2 = ("istio-peer-exchange", "istio", "h2")
ALPN_H2_ONLY = ("h2",)


def type_url(msg: message.Message) -> str:
    return "type.googleapis.com/" + msg.DESCRIPTOR.full_name


def to_any(msg: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def sds_secret_config(name: str) -> secret_pb2.SdsSecretConfig:
    """An SDS reference to ``name`` served by the agent on ``sds-grpc``.

    Istio's workload secrets (``default``, ``ROOTCA``) have a zero initial fetch timeout so
    Envoy waits for them instead of starting with a cluster that cannot handshake."""
    api = config_source_pb2.ApiConfigSource(
        api_type=config_source_pb2.ApiConfigSource.GRPC,
        set_node_on_first_message_only=True,
        transport_api_version=config_source_pb2.V3,
        grpc_services=[
            grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER)
            )
        ],
    )
    source = config_source_pb2.ConfigSource(
        api_config_source=api, resource_api_version=config_source_pb2.V3
    )
    if name in (SDS_DEFAULT_RESOURCE, SDS_ROOT_RESOURCE):
        source.initial_fetch_timeout.CopyFrom(duration_pb2.Duration(seconds=0))
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def credential_sds_secret_config(name: str) -> secret_pb2.SdsSecretConfig:
    """Istio's ``ConstructSdsSecretConfigForCredential``: a ``credentialName`` as an SDS
    reference to the discovery over ADS (``kubernetes://<name>``), with no initial fetch
    timeout set, so Envoy's 15 s default applies: a Secret that does not exist must not block
    the listener or cluster for ever. ``builtin://`` is the workload's own certificate."""
    if name == BUILTIN_CREDENTIAL:
        return sds_secret_config(SDS_DEFAULT_RESOURCE)
    if name == BUILTIN_CREDENTIAL + SDS_CA_SUFFIX:
        return sds_secret_config(SDS_ROOT_RESOURCE)
    source = config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
    return secret_pb2.SdsSecretConfig(name=to_resource_name(name), sds_config=source)


BUILTIN_CREDENTIAL = "builtin://"


def file_cert_resource(cert: str, key: str) -> str:
    """SDS name of a certificate/key pair read from files (Istio's SdsCertificateConfig)."""
    return f"{FILE_CERT_PREFIX}{cert}~{key}"


def file_root_resource(ca: str) -> str:
    return f"{FILE_ROOT_PREFIX}{ca}"


def exact_matchers(values: list[str] | tuple[str, ...]) -> list[string_pb2.StringMatcher]:
    return [string_pb2.StringMatcher(exact=v) for v in values]


def default_upstream_common_tls_context() -> tls_pb2.CommonTlsContext:
    """Istio's client defaults: TLS 1.2 to 1.3 (Envoy's client default maximum is 1.2)."""
    return tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        )
    )


def istio_mutual_upstream_tls(
    sni: str, subject_alt_names: list[str] | tuple[str, ...], http2: bool
) -> tls_pb2.UpstreamTlsContext:
    """ISTIO_MUTUAL: the workload certificate, the mesh root, and the peer's SPIFFE ids."""
    common = default_upstream_common_tls_context()
    common.tls_certificate_sds_secret_configs.append(sds_secret_config(SDS_DEFAULT_RESOURCE))
    combined = common.combined_validation_context
    combined.default_validation_context.match_subject_alt_names.extend(
        exact_matchers(subject_alt_names)
    )
    combined.validation_context_sds_secret_config.CopyFrom(sds_secret_config(SDS_ROOT_RESOURCE))
    common.alpn_protocols.extend(ALPN_IN_MESH_H2 if http2 else ALPN_IN_MESH)
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=sni)


def user_upstream_tls(
    settings: net.ClientTLSSettings, http2: bool, allow_credential_name: bool = True
) -> tls_pb2.UpstreamTlsContext | None:
    """SIMPLE or MUTUAL TLS origination as a DestinationRule describes it.

    None when the settings cannot be honoured for this proxy: a ``credentialName`` on a
    sidecar without a workload-selecting DestinationRule (Istio refuses to hand every
    sidecar a secret), or MUTUAL without a client certificate. Raises nothing: Istio logs
    and sends the cluster without TLS in the latter case."""
    mutual = settings.mode == "MUTUAL"
    ctx = tls_pb2.UpstreamTlsContext(
        common_tls_context=default_upstream_common_tls_context(), sni=settings.sni
    )
    common = ctx.common_tls_context
    sans = exact_matchers(settings.subject_alt_names)
    if settings.credential_name:
        if not allow_credential_name:
            return None
        # Istio's ApplyCustomSDSToClientCommonTLSContext.
        if mutual:
            common.tls_certificate_sds_secret_configs.append(
                credential_sds_secret_config(settings.credential_name)
            )
        combined = common.combined_validation_context
        combined.default_validation_context.match_subject_alt_names.extend(sans)
        combined.validation_context_sds_secret_config.CopyFrom(
            credential_sds_secret_config(settings.credential_name + SDS_CA_SUFFIX)
        )
    else:
        if mutual:
            if not settings.client_certificate or not settings.private_key:
                return None
            common.tls_certificate_sds_secret_configs.append(
                sds_secret_config(
                    file_cert_resource(settings.client_certificate, settings.private_key)
                )
            )
        ca = settings.ca_certificates or SYSTEM_CA
        if settings.insecure_skip_verify:
            common.validation_context.SetInParent()
        else:
            combined = common.combined_validation_context
            default = combined.default_validation_context
            default.match_subject_alt_names.extend(sans)
            if settings.ca_crl:
                default.crl.filename = settings.ca_crl
            combined.validation_context_sds_secret_config.CopyFrom(
                sds_secret_config(file_root_resource(ca))
            )
    if http2:
        common.alpn_protocols.extend(ALPN_H2_ONLY)
    return ctx


def tls_transport_socket(ctx: message.Message) -> base_pb2.TransportSocket:
    """``envoy.transport_sockets.tls`` wrapping an Upstream/DownstreamTlsContext."""
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=to_any(ctx))


def raw_buffer_transport_socket() -> base_pb2.TransportSocket:
    """Plaintext: ``envoy.transport_sockets.raw_buffer``."""
    return base_pb2.TransportSocket(
        name=RAW_BUFFER_TRANSPORT_SOCKET, typed_config=to_any(raw_buffer_pb2.RawBuffer())
    )
