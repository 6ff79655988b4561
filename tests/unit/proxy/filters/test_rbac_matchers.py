"""The RBAC engine: Envoy's permission / principal trees compiled and evaluated on requests
and connections; what it refuses (NACK) and how."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import range_pb2
from google.api.expr.v1alpha1 import syntax_pb2

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import compile_listener
from pistio.proxy.config.route_match import RequestView
from pistio.proxy.filters.matchers import (
    AuthzContext,
    compile_permission,
    compile_principal,
    compile_rbac,
    response_detail,
)
from tests.unit.proxy.filters.authz_fixtures import (
    ANY_PERM,
    ANY_PRINCIPAL,
    exact,
    jwt_claim,
    listener_with_filters,
    perm_method,
    perm_path,
    policy,
    prefix,
    rbac,
)
from tests.unit.proxy.http_fixtures import pack

JWT_NAME = "envoy.filters.http.jwt_authn"

ALLOW, DENY, LOG = rbac_pb2.RBAC.ALLOW, rbac_pb2.RBAC.DENY, rbac_pb2.RBAC.LOG


def conn(src: str = "10.0.0.5", dst: str = "10.0.0.9", dst_port: int = 8080,
         principal: str | None = None, sni: str | None = None) -> DownstreamConnectionInfo:
    c = DownstreamConnectionInfo((dst, dst_port), (src, 40000))
    c.peer_uri_san = principal
    c.requested_server_name = sni
    return c


def ctx(method: str = "GET", path: str = "/", headers: dict[str, str] | None = None,
        c: DownstreamConnectionInfo | None = None, metadata=None, remote: str | None = None,
        tcp: bool = False) -> AuthzContext:
    request = None if tcp else RequestView.of(method, path, "svc.local", headers)
    c = c or conn()
    if remote is not None:  # the client address taken from x-forwarded-for (port 0)
        c.remote_address = (remote, 0)
    return AuthzContext(request, c, metadata)


def cidr(ip: str, n: int) -> address_pb2.CidrRange:
    return address_pb2.CidrRange(address_prefix=ip, prefix_len={"value": n})


def test_permissions_by_path_method_header_port_ip_sni() -> None:
    p = compile_permission(perm_path(prefix("/api/")), "p")
    assert p(ctx(path="/api/x?q=1")) and not p(ctx(path="/apix"))
    assert not p(ctx(tcp=True))  # no request on a TCP connection: no path
    m = compile_permission(perm_method("POST"), "p")
    assert m(ctx("POST")) and not m(ctx("GET"))
    host = compile_permission(rbac_pb2.Permission(header=rc.HeaderMatcher(
        name=":authority", string_match=string_pb2.StringMatcher(prefix="SVC", ignore_case=True))),
        "p")
    assert host(ctx())
    port = compile_permission(rbac_pb2.Permission(destination_port=8080), "p")
    assert port(ctx()) and not port(ctx(c=conn(dst_port=9090)))
    ports = compile_permission(rbac_pb2.Permission(
        destination_port_range=range_pb2.Int32Range(start=9000, end=9100)), "p")
    assert ports(ctx(c=conn(dst_port=9099))) and not ports(ctx(c=conn(dst_port=9100)))
    dst = compile_permission(rbac_pb2.Permission(destination_ip=cidr("10.0.0.0", 24)), "p")
    assert dst(ctx()) and not dst(ctx(c=conn(dst="10.0.1.9")))
    sni = compile_permission(rbac_pb2.Permission(requested_server_name=exact("a.b")), "p")
    assert sni(ctx(c=conn(sni="a.b"))) and not sni(ctx())


def test_and_or_not_trees() -> None:
    tree = rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=[
        perm_method("GET"),
        rbac_pb2.Permission(not_rule=perm_path(prefix("/admin"))),
        rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=[
            rbac_pb2.Permission(destination_port=8080), rbac_pb2.Permission(destination_port=80)])),
    ]))
    check = compile_permission(tree, "p")
    assert check(ctx("GET", "/x"))
    assert not check(ctx("GET", "/admin/x"))
    assert not check(ctx("POST", "/x"))
    assert not check(ctx("GET", "/x", c=conn(dst_port=9)))


def test_uri_template() -> None:
    cfg = uri_template_match_pb2.UriTemplateMatchConfig(path_template="/store/*/items/**")
    check = compile_permission(rbac_pb2.Permission(uri_template=extension_pb2.TypedExtensionConfig(
        name="envoy.path.match.uri_template.uri_template_matcher", typed_config=pack(cfg))), "p")
    assert check(ctx(path="/store/s1/items/a/b?x"))
    assert not check(ctx(path="/store/s1/s2/items/a"))


def test_principals_authenticated_ip_header_metadata() -> None:
    sa = compile_principal(rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(
        principal_name=exact("spiffe://cluster.local/ns/default/sa/sleep"))), "p")
    assert sa(ctx(c=conn(principal="spiffe://cluster.local/ns/default/sa/sleep")))
    assert not sa(ctx(c=conn(principal="spiffe://cluster.local/ns/other/sa/sleep")))
    assert not sa(ctx())  # plaintext: never authenticated
    ns = compile_principal(rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(
        principal_name=string_pb2.StringMatcher(safe_regex={"regex": ".*/ns/default/.*"}))), "p")
    assert ns(ctx(c=conn(principal="spiffe://cluster.local/ns/default/sa/x")))
    anyone = compile_principal(rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated()), "p")
    assert anyone(ctx(c=conn(principal="spiffe://x"))) and not anyone(ctx())

    direct = compile_principal(rbac_pb2.Principal(direct_remote_ip=cidr("10.0.0.0", 8)), "p")
    assert direct(ctx()) and not direct(ctx(c=conn(src="192.168.1.1")))
    remote = compile_principal(rbac_pb2.Principal(remote_ip=cidr("203.0.113.0", 24)), "p")
    assert remote(ctx(remote="203.0.113.7")) and not remote(ctx())
    v6 = compile_principal(rbac_pb2.Principal(direct_remote_ip=cidr("fd00::", 8)), "p")
    assert v6(ctx(c=conn(src="fd00::1"))) and not v6(ctx())

    hdr = compile_principal(rbac_pb2.Principal(header=rc.HeaderMatcher(
        name="x-user", string_match=exact("admin"))), "p")
    assert hdr(ctx(headers={"x-user": "admin"})) and not hdr(ctx()) and not hdr(ctx(tcp=True))

    iss = compile_principal(jwt_claim("iss", "testing@secure.istio.io"), "p")
    groups = compile_principal(jwt_claim("groups", "group1"), "p")
    md = {"envoy.filters.http.jwt_authn": {"payload": {
        "iss": "testing@secure.istio.io", "groups": ["group1", "group2"], "exp": 5}}}
    assert iss(ctx(metadata=md)) and groups(ctx(metadata=md))
    assert not iss(ctx()) and not groups(ctx(metadata={"envoy.filters.http.jwt_authn": {}}))
    invert = compile_principal(rbac_pb2.Principal(metadata=metadata_pb2.MetadataMatcher(
        filter="f", path=[metadata_pb2.MetadataMatcher.PathSegment(key="k")],
        value=value_pb2.ValueMatcher(present_match=True), invert=True)), "p")
    assert invert(ctx()) and not invert(ctx(metadata={"f": {"k": 1}}))


def test_engine_actions_and_policy_order() -> None:
    allow = compile_rbac(rbac(ALLOW, b_read=policy([perm_method("GET")]),
                              a_admin=policy([perm_path(prefix("/admin"))])), "r")
    assert allow.evaluate(ctx("GET", "/admin")) == (True, "a_admin")  # sorted by name
    assert allow.evaluate(ctx("GET", "/x")) == (True, "b_read")
    assert allow.evaluate(ctx("POST", "/x")) == (False, None)
    deny = compile_rbac(rbac(DENY, deny_post=policy([perm_method("POST")])), "r")
    assert deny.evaluate(ctx("POST")) == (False, "deny_post")
    assert deny.evaluate(ctx("GET")) == (True, None)
    nothing = compile_rbac(rbac(ALLOW), "r")  # Istio's allow-nothing
    assert nothing.evaluate(ctx()) == (False, None)
    log = compile_rbac(rbac(LOG, all=policy()), "r")
    assert log.evaluate(ctx()) == (True, "all")
    assert response_detail(None) == "rbac_access_denied_matched_policy[none]"
    assert response_detail("ns[a]-policy[b c]-rule[0]") == \
        "rbac_access_denied_matched_policy[ns[a]-policy[b_c]-rule[0]]"


def test_unsupported_forms_are_refused_with_their_path() -> None:
    cond = rbac_pb2.Policy(permissions=[ANY_PERM], principals=[ANY_PRINCIPAL],
                           condition=syntax_pb2.Expr())
    with pytest.raises(ConfigError) as err:
        compile_rbac(rbac_pb2.RBAC(action=ALLOW, policies={"p": cond}), "rules")
    assert err.value.problems == ["rules.policies['p'].condition: field not supported by "
                                  "pistio (CEL conditions are not implemented)"]
    custom = rbac_pb2.Principal(custom=extension_pb2.TypedExtensionConfig(name="x"))
    with pytest.raises(ConfigError) as err:
        compile_rbac(rbac(ALLOW, p=policy(principals=[custom])), "rules")
    assert err.value.problems == ["rules.policies['p'].principals[0].custom: principal "
                                  "identifier not supported by pistio"]
    with pytest.raises(ConfigError) as err:
        compile_rbac(rbac(ALLOW, p=policy([perm_path(string_pb2.StringMatcher(
            safe_regex={"regex": "(?=x)"}))])), "rules")
    assert "rules.policies['p'].permissions[0].url_path.path.safe_regex" in err.value.problems[0]


def test_jwt_authn_refusals_are_precise() -> None:
    bad = jwt_pb2.JwtAuthentication(
        providers={"r": jwt_pb2.JwtProvider(issuer="i", remote_jwks={"http_uri": {
            "uri": "https://keys", "cluster": "c"}})},
        rules=[jwt_pb2.RequirementRule(match={"prefix": "/"},
                                       requires=jwt_pb2.JwtRequirement(provider_name="nope"))])
    listener = listener_with_filters("gw", 1, [(JWT_NAME, bad)])
    with pytest.raises(ConfigError) as err:
        compile_listener(listener)
    text = "\n".join(err.value.problems)
    assert "providers['r']: only local_jwks is supported by pistio" in text
    assert "rules[0].requires: Required provider ['nope'] is not configured." in text
    grpc = ext_authz_pb2.ExtAuthz(grpc_service={"envoy_grpc": {"cluster_name": "x"}})
    with pytest.raises(ConfigError) as err:
        compile_listener(listener_with_filters("gw", 1, [("envoy.filters.http.ext_authz", grpc)]))
    assert err.value.problems == [
        "Listener gw: filter_chains[0].filters[0].typed_config.http_filters[0].typed_config."
        "grpc_service: the gRPC authorization service is not supported by pistio (use an HTTP "
        "service: envoyExtAuthzHttp)"]
