"""MeshConfig and MeshNetworks: Istio's defaults, the ConfigMap form, merging, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pistio.api.mesh import (
    MeshConfig,
    apply_proxy_config,
    default_mesh_config,
    load_mesh_config,
    load_mesh_networks,
)
from tests.shared_data import shared_dir

TESTDATA = shared_dir() / "conformance" / "analyze" / "testdata"


def _need_testdata() -> None:
    assert TESTDATA.is_dir(), f"{TESTDATA} is absent: Istio's analyzer mesh configs cannot be checked"



def _errors(issues: list) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in issues if i.level == "error"]


def _warnings(issues: list) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in issues if i.level == "warning"]


# --- Defaults ---------------------------------------------------------------------------------


def test_defaults_match_istio() -> None:
    mesh = default_mesh_config()
    assert mesh.root_namespace == "istio-system"
    assert mesh.trust_domain == "cluster.local"
    assert mesh.outbound_traffic_policy is not None
    assert mesh.outbound_traffic_policy.mode == "ALLOW_ANY"
    assert mesh.inbound_traffic_policy is not None
    assert mesh.inbound_traffic_policy.mode == "PASSTHROUGH"
    assert mesh.ingress_controller_mode == "STRICT"
    assert (mesh.ingress_class, mesh.ingress_service, mesh.ingress_selector) == (
        "istio",
        "istio-ingressgateway",
        "ingressgateway",
    )
    assert mesh.enable_tracing is True
    assert mesh.access_log_file == ""
    assert mesh.enable_prometheus_merge is True
    assert mesh.enable_auto_mtls is True
    assert mesh.protocol_detection_timeout is not None
    assert mesh.protocol_detection_timeout.seconds == 0
    assert mesh.connect_timeout is not None and mesh.connect_timeout.seconds == 10
    assert mesh.dns_refresh_rate is not None and mesh.dns_refresh_rate.seconds == 60
    assert (mesh.proxy_listen_port, mesh.proxy_inbound_listen_port) == (15001, 15006)
    assert mesh.default_service_export_to == ["*"]
    assert mesh.default_virtual_service_export_to == ["*"]
    assert mesh.default_destination_rule_export_to == ["*"]
    assert [p.name for p in mesh.extension_providers] == ["prometheus", "stackdriver", "envoy"]
    assert mesh.extension_providers[2].envoy_file_access_log is not None
    assert mesh.extension_providers[2].envoy_file_access_log.path == "/dev/stdout"
    assert mesh.default_providers is not None


def test_default_proxy_config_matches_istio() -> None:
    pc = default_mesh_config().default_config
    assert pc is not None
    assert pc.discovery_address == "istiod.istio-system.svc:15012"
    assert (pc.proxy_admin_port, pc.status_port) == (15000, 15020)
    assert pc.concurrency == 2
    assert pc.drain_duration is not None and pc.drain_duration.seconds == 45
    assert pc.termination_drain_duration is not None
    assert pc.termination_drain_duration.seconds == 5
    assert pc.tracing is not None and pc.tracing.zipkin is not None
    assert pc.tracing.zipkin.address == "zipkin.istio-system:9411"
    assert pc.control_plane_auth_policy == "MUTUAL_TLS"
    assert (pc.config_path, pc.binary_path, pc.service_cluster) == (
        "./etc/istio/proxy",
        "/usr/local/bin/envoy",
        "istio-proxy",
    )
    assert pc.stat_name_length == 189


def test_empty_input_is_the_default() -> None:
    mesh, issues = load_mesh_config("")
    assert issues == []
    assert mesh == default_mesh_config()


def test_yaml_names_are_istio_json_names() -> None:
    mesh = default_mesh_config().to_dict()
    assert "meshMTLS" not in mesh
    parsed = MeshConfig.model_validate({"meshMTLS": {"minProtocolVersion": "TLSV1_3"}})
    assert parsed.mesh_mtls is not None
    assert parsed.to_dict() == {"meshMTLS": {"minProtocolVersion": "TLSV1_3"}}
    zipkin = MeshConfig.model_validate(
        {
            "extensionProviders": [
                {
                    "name": "z",
                    "zipkin": {"service": "z.ns.svc", "port": 9411, "enable64bitTraceId": True},
                }
            ]
        }
    )
    assert zipkin.extension_providers[0].zipkin is not None
    assert zipkin.extension_providers[0].zipkin.enable_64bit_trace_id is True


# --- The ConfigMap form and files -------------------------------------------------------------

ISTIO_CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: /dev/stdout
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
    defaultConfig:
      discoveryAddress: istiod.istio-system.svc:15012
      holdApplicationUntilProxyStarts: true
  meshNetworks: |-
    networks:
      network1:
        endpoints:
        - fromRegistry: Kubernetes
        gateways:
        - address: 1.1.1.1
          port: 15443
"""


def test_configmap_form() -> None:
    mesh, issues = load_mesh_config(ISTIO_CONFIGMAP)
    assert issues == []
    assert mesh is not None
    assert mesh.access_log_file == "/dev/stdout"
    assert mesh.outbound_traffic_policy is not None
    assert mesh.outbound_traffic_policy.mode == "REGISTRY_ONLY"
    assert mesh.default_config is not None
    assert mesh.default_config.hold_application_until_proxy_starts is True
    assert mesh.default_config.proxy_admin_port == 15000  # merged, not replaced
    assert mesh.trust_domain == "cluster.local"


def test_configmap_networks() -> None:
    networks, issues = load_mesh_networks(ISTIO_CONFIGMAP)
    assert issues == []
    assert networks is not None
    network = networks.networks["network1"]
    assert network.endpoints[0].from_registry == "Kubernetes"  # Istio allows upper case here
    assert (network.gateways[0].address, network.gateways[0].port) == ("1.1.1.1", 15443)


def test_configmap_without_mesh_key_gives_the_defaults() -> None:
    mesh, issues = load_mesh_config("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\n")
    assert mesh == default_mesh_config()
    assert _warnings(issues) == [
        ("data.mesh", 'the ConfigMap has no "mesh" key; the defaults apply')
    ]


def test_missing_file() -> None:
    mesh, issues = load_mesh_config("/nonexistent/mesh.yaml")
    assert mesh is None
    assert _errors(issues) == [
        ("", "cannot read /nonexistent/mesh.yaml: No such file or directory")
    ]


def test_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("rootNamespace: mesh-root\n")
    for arg in (path, str(path)):
        mesh, issues = load_mesh_config(arg)
        assert issues == []
        assert mesh is not None and mesh.root_namespace == "mesh-root"


@pytest.mark.parametrize(
    "name",
    [
        "serviceentry-address-allocated-mesh-cfg.yaml",
        "serviceentry-missing-addresses-protocol-mesh-cfg.yaml",
    ],
)
def test_analyzer_mesh_configs_load(name: str) -> None:
    _need_testdata()
    mesh, issues = load_mesh_config(TESTDATA / name)
    assert _errors(issues) == []
    assert mesh is not None


def test_analyzer_mesh_networks_load() -> None:
    _need_testdata()
    networks, issues = load_mesh_networks(TESTDATA / "common" / "meshnetworks.yaml")
    assert issues == []
    assert networks is not None
    gw = networks.networks["network1"].gateways[0]
    # protojson also reads the proto field name (registry_service_name).
    assert gw.registry_service_name == "istio-ingressgateway.istio-system.svc.cluster.local"
    assert gw.port == 443


# --- Merging over the defaults ----------------------------------------------------------------


def test_top_level_fields_replace_defaults() -> None:
    mesh, _ = load_mesh_config(
        "defaultServiceExportTo: ['.']\nlocalityLbSetting: {enabled: false}\n"
    )
    assert mesh is not None
    assert mesh.default_service_export_to == ["."]
    assert mesh.default_virtual_service_export_to == ["*"]


def test_default_config_is_merged_field_by_field() -> None:
    mesh, issues = load_mesh_config(
        "defaultConfig:\n"
        "  concurrency: 0\n"
        "  proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'true'}\n"
        "  tracing: {sampling: 5}\n"
    )
    assert issues == []
    assert mesh is not None and mesh.default_config is not None
    pc = mesh.default_config
    assert pc.concurrency == 0
    assert pc.proxy_metadata == {"ISTIO_META_DNS_CAPTURE": "true"}
    assert pc.discovery_address == "istiod.istio-system.svc:15012"
    # A nested message given replaces the default one entirely (no zipkin left).
    assert pc.tracing is not None and pc.tracing.zipkin is None and pc.tracing.sampling == 5


def test_tracing_service_name_replaces_service_cluster() -> None:
    mesh, issues = load_mesh_config("defaultConfig: {tracingServiceName: CANONICAL_NAME_ONLY}\n")
    assert issues == []
    assert mesh is not None and mesh.default_config is not None
    assert mesh.default_config.tracing_service_name == "CANONICAL_NAME_ONLY"
    assert "service_cluster" not in mesh.default_config.model_fields_set


def test_extension_providers_merge_by_name() -> None:
    mesh, issues = load_mesh_config(
        "extensionProviders:\n"
        "- name: envoy\n"
        "  envoyFileAccessLog: {path: /dev/stderr}\n"
        "- name: otel\n"
        "  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}\n"
        "defaultProviders:\n"
        "  tracing: [otel]\n"
    )
    assert issues == []
    assert mesh is not None
    names = [p.name for p in mesh.extension_providers]
    assert names == ["prometheus", "stackdriver", "envoy", "otel"]
    envoy = mesh.extension_providers[2].envoy_file_access_log
    assert envoy is not None and envoy.path == "/dev/stderr"
    assert mesh.default_providers is not None and mesh.default_providers.tracing == ["otel"]


def test_proxy_config_annotation_over_the_mesh_default() -> None:
    base = default_mesh_config().default_config
    pc, issues = apply_proxy_config("concurrency: 4\nproxyMetadata: {A: b}\n", base)
    assert issues == []
    assert pc is not None
    assert (pc.concurrency, pc.proxy_metadata, pc.proxy_admin_port) == (4, {"A": "b"}, 15000)


def test_trust_domain_aliases_are_united() -> None:
    mesh, _ = load_mesh_config("trustDomainAliases: [td2, td1]\n")
    assert mesh is not None and mesh.trust_domain_aliases == ["td1", "td2"]


def test_unknown_fields_are_warnings() -> None:
    mesh, issues = load_mesh_config("someFutureField: 1\ndefaultConfig:\n  futureProxyField: x\n")
    assert mesh is not None
    assert _errors(issues) == []
    assert sorted(_warnings(issues)) == [
        ("defaultConfig.futureProxyField", 'unknown field "futureProxyField" (ignored)'),
        ("someFutureField", 'unknown field "someFutureField" (ignored)'),
    ]


# --- Invalid mesh configs ---------------------------------------------------------------------

INVALID = [
    ("proxyListenPort: 0", [("proxyListenPort", "port number 0 must be in the range 1..65535")]),
    (
        "defaultConfig: {proxyAdminPort: 70000}",
        [("defaultConfig.proxyAdminPort", "port number 70000 must be in the range 1..65535")],
    ),
    (
        "defaultConfig: {statusPort: -1}",
        [("defaultConfig.statusPort", "port number -1 must be in the range 1..65535")],
    ),
    ("connectTimeout: 0s", [("connectTimeout", "duration must be greater than 1ms")]),
    ("connectTimeout: 2h", [("connectTimeout", "time 2h0m0s must be >1ms and <1h0m0s")]),
    (
        "connectTimeout: 1.0005s",
        [("connectTimeout", "only durations to ms precision are supported")],
    ),
    (
        "protocolDetectionTimeout: 100.5ms",
        [("protocolDetectionTimeout", "only durations to ms precision are supported")],
    ),
    (
        "defaultConfig: {drainDuration: 1500ms}",
        [
            (
                "defaultConfig.drainDuration",
                "drain time only supports durations to seconds precision",
            )
        ],
    ),
    ("trustDomain: ''", [("trustDomain", "empty domain name not allowed")]),
    ("trustDomain: my_domain", [("trustDomain", 'trust domain name "my_domain" invalid')]),
    (
        "trustDomainAliases: [ok.local, bad..local]",
        [("trustDomainAliases[0]", 'trust domain name "bad..local" invalid')],
    ),
    (
        "defaultConfig: {discoveryAddress: istiod}",
        [
            (
                "defaultConfig.discoveryAddress",
                'unable to split "istiod": address istiod: missing port in address',
            )
        ],
    ),
    (
        "defaultConfig: {discoveryAddress: 'istiod:http'}",
        [
            (
                "defaultConfig.discoveryAddress",
                'port (http) is not a number: strconv.Atoi: parsing "http": invalid syntax',
            )
        ],
    ),
    (
        "defaultConfig: {discoveryAddress: ''}",
        [
            (
                "defaultConfig.discoveryAddress",
                "discovery address must be set to the proxy discovery service",
            )
        ],
    ),
    (
        "defaultConfig: {tracing: {zipkin: {address: 'zip_kin:9411'}}}",
        [
            (
                "defaultConfig.tracing.zipkin.address",
                '"zip_kin" is not a valid hostname or an IP address',
            )
        ],
    ),
    (
        "defaultConfig: {tracing: {lightstep: {address: 'ls.example.com:8080'}}}",
        [("defaultConfig.tracing.lightstep.accessToken", "access token is required")],
    ),
    ("defaultConfig: {configPath: ''}", [("defaultConfig.configPath", "config path must be set")]),
    (
        "defaultConfig: {serviceCluster: ''}",
        [("defaultConfig.serviceCluster", "service cluster must be specified")],
    ),
    (
        "defaultConfig: {controlPlaneAuthPolicy: INHERIT}",
        [
            (
                "defaultConfig.controlPlaneAuthPolicy",
                'unrecognized control plane auth policy "INHERIT"',
            )
        ],
    ),
    (
        "defaultConfig: {statsdUdpAddress: 'statsd'}",
        [
            (
                "defaultConfig.statsdUdpAddress",
                'unable to split "statsd": address statsd: missing port in address',
            )
        ],
    ),
    (
        "defaultConfig: {privateKeyProvider: {cryptomb: {pollDelay: 0s}}}",
        [("defaultConfig.privateKeyProvider.cryptomb.pollDelay", "pollDelay must be non zero")],
    ),
    (
        "defaultConfig: {privateKeyProvider: {}}",
        [("defaultConfig.privateKeyProvider", "private key provider configuration is required")],
    ),
    (
        "defaultConfig:\n  tracing:\n    tlsSettings: {mode: MUTUAL}\n",
        [
            (
                "defaultConfig.tracing.tlsSettings.clientCertificate",
                "client certificate required for mutual tls",
            ),
            ("defaultConfig.tracing.tlsSettings.privateKey", "private key required for mutual tls"),
        ],
    ),
    (
        "serviceSettings:\n- settings: {clusterLocal: true}\n  hosts: ['*.foo.svc.cluster.local', 'bad_host.com']\n",
        [
            (
                "serviceSettings[0].hosts[1]",
                'domain name "bad_host.com" invalid (label "bad_host" invalid)',
            )
        ],
    ),
    (
        "localityLbSetting:\n  distribute:\n  - {from: us-east/*, to: {us-east/*: 50, us-west/*: 30}}\n",
        [("localityLbSetting.distribute[0].to", "total locality weight 80 != 100")],
    ),
    (
        "localityLbSetting:\n"
        "  distribute: [{from: a/*, to: {a/*: 100}}]\n"
        "  failover: [{from: a, to: b}]\n",
        [("localityLbSetting", "can not simultaneously specify 'distribute' and 'failover'")],
    ),
    (
        "localityLbSetting:\n  failover: [{from: us-east, to: us-east}]\n",
        [
            (
                "localityLbSetting.failover[0]",
                "locality lb failover settings must specify different regions",
            )
        ],
    ),
    (
        "meshMTLS: {ecdhCurves: [P-256]}",
        [("meshMTLS.ecdhCurves", "mesh TLS does not support ECDH curves configuration")],
    ),
    (
        "outboundTrafficPolicy: {mode: VIRTUAL_SERVICE_ONLY}",
        [
            (
                "outboundTrafficPolicy.mode",
                "invalid value 'VIRTUAL_SERVICE_ONLY': must be one of 'REGISTRY_ONLY' or 'ALLOW_ANY'",
            )
        ],
    ),
    ("enableTracing: 'yes'", [("enableTracing", "invalid type: expected boolean, got string")]),
    (
        "connectTimeout: 10",
        [("connectTimeout", "invalid type: expected duration string, got integer")],
    ),
    ("connectTimeout: ten", [("connectTimeout", 'invalid duration "ten"')]),
    (
        "networks: {}\n- not yaml",
        [
            (
                "",
                "cannot parse mesh config (line 2): invalid YAML: while parsing a block mapping "
                "did not find expected key",
            )
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), INVALID, ids=[t for t, _ in INVALID])
def test_invalid_mesh_config(text: str, expected: list[tuple[str, str]]) -> None:
    mesh, issues = load_mesh_config(text)
    assert mesh is None
    assert _errors(issues) == expected


def test_at_least_15_invalid_mesh_cases() -> None:
    assert len(INVALID) >= 15


# --- Warnings -----------------------------------------------------------------------------------


def test_invalid_extension_providers_are_warnings() -> None:
    mesh, issues = load_mesh_config(
        "extensionProviders:\n"
        "- name: authz\n"
        "  envoyExtAuthzHttp: {service: 'ext authz', port: 0, pathPrefix: check, statusOnError: '999'}\n"
        "- name: authz\n"
        "  envoyExtAuthzGrpc: {service: ns/ext-authz.ns.svc.cluster.local, port: 9000}\n"
        "- name: ''\n"
        "  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 70000}\n"
        "- name: both\n"
        "  prometheus: {}\n"
        "  stackdriver: {}\n"
        "defaultProviders:\n"
        "  accessLogging: [missing]\n"
    )
    assert mesh is not None  # istiod keeps going: an unused provider does no harm
    assert _errors(issues) == []
    assert _warnings(issues) == [
        (
            "extensionProviders[0].envoyExtAuthzHttp.port",
            "invalid extension provider authz: port number 0 must be in the range 1..65535",
        ),
        (
            "extensionProviders[0].envoyExtAuthzHttp.service",
            "invalid extension provider authz: invalid service fmt ext authz: ext authz is not a valid IP",
        ),
        (
            "extensionProviders[0].envoyExtAuthzHttp.statusOnError",
            "invalid extension provider authz: unsupported statusOnError value 999",
        ),
        (
            "extensionProviders[0].envoyExtAuthzHttp.pathPrefix",
            'invalid extension provider authz: pathPrefix should begin with `/` but found "check"',
        ),
        (
            "extensionProviders[1].name",
            "invalid extension provider authz: duplicate extension provider name authz",
        ),
        (
            "extensionProviders[2].name",
            "invalid extension provider : empty extension provider name",
        ),
        (
            "extensionProviders[2].zipkin.port",
            "invalid extension provider : invalid service port: port number 70000 must be in the range 1..65535",
        ),
        ("extensionProviders[3]", "invalid extension provider both: only one provider can be set"),
        ("defaultProviders.accessLogging[0]", 'extension provider "missing" is not defined'),
    ]


def test_tls_defaults_curves_are_warnings() -> None:
    mesh, issues = load_mesh_config("tlsDefaults: {ecdhCurves: [P-256, P-256, P-999]}\n")
    assert mesh is not None
    assert _warnings(issues) == [
        ("tlsDefaults.ecdhCurves", "detected unrecognized ECDH curves: [P-999]"),
        ("tlsDefaults.ecdhCurves", "detected duplicate ECDH curves: [P-256]"),
    ]


# --- MeshNetworks -----------------------------------------------------------------------------


def test_empty_mesh_networks() -> None:
    networks, issues = load_mesh_networks("")
    assert issues == []
    assert networks is not None and networks.networks == {}


def test_invalid_mesh_networks() -> None:
    networks, issues = load_mesh_networks(
        "networks:\n"
        "  n1:\n"
        "    endpoints:\n"
        "    - fromCidr: 10.0.0.0/33\n"
        "    - fromCidr: 10.0.0.1\n"
        "    - fromRegistry: cluster_1\n"
        "    - {fromCidr: 10.0.0.0/8, fromRegistry: c1}\n"
        "    gateways:\n"
        "    - {address: 'not an address', port: 15443}\n"
        "    - {registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local, port: 0}\n"
    )
    assert networks is None
    assert _errors(issues) == [
        ("networks.n1.endpoints[0].fromCidr", "10.0.0.0/33 is not a valid CIDR block"),
        ("networks.n1.endpoints[2].fromRegistry", "invalid registry name: cluster_1"),
        ("networks.n1.endpoints[3]", "only one of fromCidr or fromRegistry can be set"),
        ("networks.n1.gateways[0].address", "not an address is not a valid IP address or DNS name"),
        ("networks.n1.gateways[1].port", "port number 0 must be in the range 1..65535"),
    ]
