"""What the discovery's security builders emit (pistio/pilot/security) compiles in the proxy:
every RBAC, jwt_authn and ext_authz field Istio's generator uses, on HTTP and TCP chains,
and the compiled engine decides as the policies say."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2

from pistio.api.mesh import MeshConfig
from pistio.pilot.model.push_context import PushContext
from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.config.listener_config import SECURITY_HTTP_FILTERS
from pistio.proxy.config.route_match import RequestView
from pistio.proxy.filters.http.rbac import unpack_http_rbac
from pistio.proxy.filters.matchers import AuthzContext
from pistio.proxy.filters.network.rbac import NETWORK_RBAC_TYPE, compile_network_rbac
from tests.unit.pilot.bookinfo_fixture import bookinfo_endpoints, bookinfo_services, parse_configs
from tests.unit.pilot.security.helpers import chains_for_port, http_filters, inbound
from tests.unit.pilot.security.test_authorization import policy, tcp_push

ALL_KEYS = """  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep", "*/sa/curl"]
        namespaces: ["default", "prod*"]
        ipBlocks: ["10.0.0.0/8"]
        remoteIpBlocks: ["203.0.113.0/24"]
        requestPrincipals: ["testing@secure.istio.io/*"]
        notPrincipals: ["cluster.local/ns/evil/sa/x"]
        notRequestPrincipals: ["bad/*"]
        notIpBlocks: ["10.9.0.0/16"]
    to:
    - operation:
        hosts: ["*.example.com", "productpage"]
        ports: ["9080"]
        methods: ["GET", "POST"]
        paths: ["/api/*", "*/info", "/exact", "/store/{*}/items/{**}"]
        notPaths: ["/api/admin*"]
        notMethods: ["DELETE"]
    when:
    - key: request.headers[version]
      values: ["v1"]
    - key: request.auth.claims[groups]
      values: ["group1"]
    - key: request.auth.claims[nested][key]
      notValues: ["a"]
    - key: request.auth.audiences
      values: ["bookstore"]
    - key: request.auth.presenter
      values: ["pres*"]
    - key: source.namespace
      values: ["default"]
    - key: destination.ip
      values: ["10.244.0.10"]
    - key: destination.port
      values: ["9080"]
    - key: connection.sni
      values: ["*.local"]
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
"""
JWT = """apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '{"keys": []}'
    audiences: [bookstore]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
  - issuer: other@example.com
    jwks: '{"keys": []}'
"""


def _everything() -> listener_pb2.Listener:
    mesh = MeshConfig.model_validate({"extensionProviders": [{
        "name": "ext", "envoyExtAuthzHttp": {
            "service": "details.default.svc.cluster.local", "port": 9080,
            "pathPrefix": "/check",
            "includeRequestHeadersInCheck": ["x-ext-authz", "x-b3-*"],
            "includeAdditionalHeadersInCheck": {"x-added": "1"},
            "headersToUpstreamOnAllow": ["x-allowed*"],
            "headersToDownstreamOnDeny": ["x-denied"],
            "headersToDownstreamOnAllow": ["x-ok"],
            "statusOnError": "503", "failOpen": True, "timeout": "2s"}}]})
    yaml = "---\n".join([
        policy("allow", ALL_KEYS),
        policy("deny", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n"),
        policy("audit", "  action: AUDIT\n  rules:\n  - {}\n"),
        policy("custom", "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - to:\n"
                         "    - operation: {paths: [/ext]}\n"),
        policy("dry", "  rules:\n  - {}\n", annotations='{"istio.io/dry-run": "true"}'),
        JWT,
    ])
    push = PushContext(parse_configs(yaml), bookinfo_services(), bookinfo_endpoints(), mesh)
    return inbound(push=push)


def test_every_generated_http_security_filter_compiles() -> None:
    chains = chains_for_port(_everything(), 9080)
    compiled = []
    for chain in chains:
        for f in http_filters(chain):
            compiler = SECURITY_HTTP_FILTERS.get(f.typed_config.type_url)
            if compiler is not None:
                compiled.append((f.name, compiler(f.typed_config, f.name)))
    names = [n for n, _ in compiled]
    assert names.count("envoy.filters.http.rbac") >= 2 * 4
    assert "envoy.filters.http.jwt_authn" in names and "envoy.filters.http.ext_authz" in names


def test_generated_deny_and_allow_decide_as_written() -> None:
    yaml = "---\n".join([
        policy("get-only", "  rules:\n  - from:\n    - source:\n        principals: "
                           "[cluster.local/ns/default/sa/sleep]\n    to:\n    - operation:\n"
                           "        methods: [GET]\n        paths: [/api/*]\n"),
        policy("no-admin", "  action: DENY\n  rules:\n  - to:\n    - operation: "
                           "{paths: [/api/admin]}\n"),
    ])
    chain = chains_for_port(inbound(yaml), 9080)[0]
    engines = [unpack_http_rbac(f.typed_config, f.name).rules for f in http_filters(chain)
               if f.name == "envoy.filters.http.rbac"]
    assert [e.action_name for e in engines] == ["DENY", "ALLOW"]

    def allowed(method: str, path: str, principal: str | None) -> bool:
        conn = DownstreamConnectionInfo(("10.244.0.10", 9080), ("10.244.0.7", 5000))
        conn.peer_uri_san = principal
        ctx = AuthzContext(RequestView.of(method, path, "productpage:9080"), conn)
        return all(e.evaluate(ctx)[0] for e in engines)

    sleep = "spiffe://cluster.local/ns/default/sa/sleep"
    assert allowed("GET", "/api/v1", sleep)
    assert not allowed("POST", "/api/v1", sleep)
    assert not allowed("GET", "/api/admin", sleep)
    assert not allowed("GET", "/api/v1", "spiffe://cluster.local/ns/default/sa/other")
    assert not allowed("GET", "/api/v1", None)  # plaintext: no principal


def test_generated_tcp_rbac_compiles_and_enforces_principals() -> None:
    from pistio.pilot.model.proxy import parse_node_id

    yaml = policy("mysql", "  selector: {matchLabels: {app: mysqldb}}\n  rules:\n  - from:\n"
                           "    - source:\n        principals: [cluster.local/ns/default/sa/app]\n"
                           "        namespaces: [default]\n    to:\n    - operation:\n"
                           "        ports: ['3306']\n")
    proxy = parse_node_id("sidecar~10.244.0.30~mysqldb-v1-0.default~default.svc.cluster.local",
                          {"NAMESPACE": "default", "LABELS": {"app": "mysqldb", "version": "v1"}})
    lst = inbound(push=tcp_push(yaml), proxy=proxy)
    found = 0
    for chain in chains_for_port(lst, 3306):
        for f in chain.filters:
            if f.typed_config.type_url != NETWORK_RBAC_TYPE:
                continue
            cfg = compile_network_rbac(f.typed_config, f.name, "rbac")
            assert cfg.rules is not None
            conn = DownstreamConnectionInfo(("10.244.0.30", 3306), ("10.244.0.7", 5000))
            conn.peer_uri_san = "spiffe://cluster.local/ns/default/sa/app"
            assert cfg.rules.evaluate(AuthzContext(None, conn))[0]
            conn.peer_uri_san = "spiffe://cluster.local/ns/other/sa/app"
            assert not cfg.rules.evaluate(AuthzContext(None, conn))[0]
            found += 1
    assert found >= 1
