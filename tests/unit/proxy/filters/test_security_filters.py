"""The security HTTP filters and network RBAC in the proxy's data path (in-process proxy,
real sockets): RBAC allow/deny/shadow, jwt_authn outcomes and metadata for RBAC, ext_authz
against a real authorization server, network RBAC closing TCP connections."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from google.protobuf import wrappers_pb2

from pistio.proxy.http.connection_manager import AccessLogFile
from tests.unit.proxy.filters.authz_fixtures import (
    RBAC_NAME,
    Issuer,
    exact,
    http_rbac,
    istio_jwt_authn,
    jwt_claim,
    listener_with_filters,
    perm_method,
    perm_path,
    policy,
    prefix,
    provider,
    rbac,
)
from tests.unit.proxy.http_fixtures import (
    InProcessProxy,
    eds_cluster,
    fetch,
    free_port,
    load_assignment,
    pack,
    route,
    route_config,
    upstreams,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]
ALLOW, DENY = rbac_pb2.RBAC.ALLOW, rbac_pb2.RBAC.DENY
JWT_NAME = "envoy.filters.http.jwt_authn"


@contextlib.asynccontextmanager
async def proxy(filters: list[tuple[str, Any]], extra_clusters: dict[str, int] | None = None,
                **listener_kw: Any) -> AsyncIterator[tuple[InProcessProxy, int, Any]]:
    """An in-process proxy with one listener running ``filters`` before the router to an
    upstream ``app``; closed at the end."""
    p = InProcessProxy()
    servers = await upstreams("app")
    port = free_port()
    try:
        clusters = {"app": servers[0].port, **(extra_clusters or {})}
        await p.apply([listener_with_filters("gw", port, filters, **listener_kw)],
                      [route_config("http", [route("/", cluster="app")])],
                      [eds_cluster(n) for n in clusters],
                      [load_assignment(n, [port_]) for n, port_ in clusters.items()])
        yield p, port, servers[0]
    finally:
        await p.close()
        for s in servers:
            await s.close()


# --- RBAC -------------------------------------------------------------------------------------------


async def test_rbac_deny_all_allow_by_path_method_and_deny_precedence() -> None:
    allow = http_rbac(rbac(ALLOW,
                           **{"ns[default]-policy[read]-rule[0]": policy(
                               [perm_method("GET")]),
                              "ns[default]-policy[web]-rule[0]": policy(
                                  [perm_path(prefix("/public"))])}))
    deny = http_rbac(rbac(DENY, **{"ns[default]-policy[no-admin]-rule[0]": policy(
        [perm_path(prefix("/public/admin"))])}))
    async with proxy([(RBAC_NAME, deny), (RBAC_NAME, allow)]) as (p, port, app):
        r = await fetch(port, "/x")
        assert r.status == 200 and r.json()["server"] == "app"
        r = await fetch(port, "/public/x", method="POST", body=b"{}")
        assert r.status == 200
        r = await fetch(port, "/x", method="POST", body=b"{}")
        assert (r.status, r.body) == (403, b"RBAC: access denied")
        assert r.headers["content-type"] == "text/plain"
        r = await fetch(port, "/public/admin")  # allowed by GET, but DENY comes first
        assert (r.status, r.body) == (403, b"RBAC: access denied")
        assert len(app.received) == 2
        assert p.counter("http.ingress_http.rbac.allowed") == 2 + 2 + 1  # both filters count
        assert p.counter("http.ingress_http.rbac.denied") == 2

    async with proxy([(RBAC_NAME, http_rbac(rbac(ALLOW)))]) as (p, port, app):  # allow-nothing
        r = await fetch(port, "/")
        assert (r.status, r.body) == (403, b"RBAC: access denied")
        assert app.received == []


async def test_rbac_sees_the_normalized_path() -> None:
    """Istio's pathNormalization BASE (normalize_path) is what keeps "/public/../admin" from
    walking past a DENY on /admin; UNESCAPE_AND_FORWARD also catches "%2F"."""
    deny = http_rbac(rbac(DENY, **{"ns[default]-policy[no-admin]-rule[0]": policy(
        [perm_path(prefix("/admin"))])}))
    normalize = {"normalize_path": wrappers_pb2.BoolValue(value=True),
                 "path_with_escaped_slashes_action":
                     hcm_pb2.HttpConnectionManager.UNESCAPE_AND_FORWARD}
    async with proxy([(RBAC_NAME, deny)], hcm_fields=normalize) as (p, port, app):
        for path in ("/public/../admin", "/./admin/x", "/%61dmin", "/public/..%2Fadmin",
                     "/public/..\\admin"):
            r = await fetch(port, path)
            assert (r.status, r.body) == (403, b"RBAC: access denied"), path
        assert (await fetch(port, "/public/./x")).status == 200
        assert [r.path for r in app.received] == ["/public/x"]
    async with proxy([(RBAC_NAME, deny)]) as (p, port, app):  # no normalization: passes
        assert (await fetch(port, "/public/../admin")).status == 200
        assert app.received[-1].path == "/public/../admin"


async def test_rbac_denial_details_in_the_access_log(tmp_path) -> None:
    log = tmp_path / "access.log"
    deny = http_rbac(rbac(DENY, **{"ns[foo]-policy[deny-all]-rule[0]": policy()}))
    listener = listener_with_filters("gw", free_port(), [(RBAC_NAME, deny)])
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    file_log = file_pb2.FileAccessLog(path=str(log))
    file_log.log_format.text_format_source.inline_string = "%RESPONSE_CODE_DETAILS%\n"
    hcm.access_log.add(name="envoy.access_loggers.file", typed_config=pack(file_log))
    listener.filter_chains[0].filters[0].typed_config.CopyFrom(pack(hcm))
    p = InProcessProxy()
    try:
        await p.apply([listener], [route_config("http", [route("/", cluster="app")])], [], [])
        r = await fetch(listener.address.socket_address.port_value, "/")
        assert r.status == 403
        AccessLogFile.flush_all()
        assert log.read_text() == \
            "rbac_access_denied_matched_policy[ns[foo]-policy[deny-all]-rule[0]]\n"
    finally:
        await p.close()


async def test_rbac_shadow_rules_metadata_turns_ext_authz_on() -> None:
    """Istio's CUSTOM action: shadow rules (prefix istio_ext_authz_) mark the requests that
    go to the authorization service; ext_authz runs only for them."""
    calls: list[str] = []

    async def authorizer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        calls.append(head)
        allow = "x-ext-authz: allow" in head.lower()
        body = b"denied by ext_authz for " + head.split(" ")[1].encode()
        if allow:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-user: alice\r\n"
                         b"x-secret: s\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: %d\r\n"
                         b"x-ext-authz-check-result: denied\r\nx-other: no\r\n\r\n%s"
                         % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(authorizer, "127.0.0.1", 0)
    authz_port = server.sockets[0].getsockname()[1]
    shadow = http_rbac(shadow=rbac(ALLOW, **{"istio-ext-authz-ns[foo]-policy[ext]-rule[0]":
                                             policy([perm_path(prefix("/headers"))])}),
                       shadow_prefix="istio_ext_authz_")
    ext = ext_authz_pb2.ExtAuthz(
        transport_api_version=2,
        http_service=ext_authz_pb2.HttpService(
            path_prefix="/check",
            server_uri={"uri": "http://authz", "cluster": "authz", "timeout": {"seconds": 2}},
            authorization_request={"allowed_headers": {"patterns": [exact("x-ext-authz")]}},
            authorization_response={
                "allowed_upstream_headers": {"patterns": [exact("x-user")]},
                "allowed_client_headers": {"patterns": [exact("x-ext-authz-check-result")]}}),
        filter_enabled_metadata=metadata_pb2.MetadataMatcher(
            filter="envoy.filters.http.rbac",
            path=[metadata_pb2.MetadataMatcher.PathSegment(
                key="istio_ext_authz_shadow_effective_policy_id")],
            value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(
                prefix="istio-ext-authz"))))
    try:
        async with proxy([(RBAC_NAME, shadow), ("envoy.filters.http.ext_authz", ext)],
                         {"authz": authz_port}) as (p, port, app):
            r = await fetch(port, "/ip")  # not under the CUSTOM policy: no check
            assert r.status == 200 and calls == []
            r = await fetch(port, "/headers?a=1", headers={"x-ext-authz": "deny",
                                                            "cookie": "c"})
            assert (r.status, r.body) == (401, b"denied by ext_authz for /check/headers?a=1")
            assert r.headers["x-ext-authz-check-result"] == "denied"
            assert "x-other" not in r.headers
            assert "cookie" not in calls[0].lower()  # only allowed headers are sent
            assert "content-length: 0" in calls[0].lower()
            r = await fetch(port, "/headers", headers={"x-ext-authz": "allow"})
            assert r.status == 200
            assert app.received[-1].headers["x-user"] == "alice"
            assert "x-secret" not in app.received[-1].headers
            assert p.counter("http.ingress_http.rbac.istio_ext_authz_shadow_allowed") == 2
            assert p.counter("http.ingress_http.rbac.istio_ext_authz_shadow_denied") == 1
            assert p.counter("http.ingress_http.ext_authz.ok") == 1
            assert p.counter("http.ingress_http.ext_authz.denied") == 1
            assert p.counter("http.ingress_http.ext_authz.disabled") == 1
    finally:
        server.close()


async def test_ext_authz_unreachable_fails_closed_or_open() -> None:
    dead = free_port()
    for fail_open, want in ((False, 403), (True, 200)):
        ext = ext_authz_pb2.ExtAuthz(
            failure_mode_allow=fail_open,
            http_service=ext_authz_pb2.HttpService(
                server_uri={"uri": "http://authz", "cluster": "authz",
                            "timeout": {"seconds": 1}}))
        async with proxy([("envoy.filters.http.ext_authz", ext)], {"authz": dead}) as (
                p, port, app):
            r = await fetch(port, "/")
            assert r.status == want
            assert p.counter("http.ingress_http.ext_authz.error") == 1


# --- jwt_authn -------------------------------------------------------------------------------------


async def test_jwt_valid_expired_tampered_missing_unknown_issuer() -> None:
    issuer, other = Issuer("https://issuer.example"), Issuer("https://other.example", "k9")
    authn = istio_jwt_authn(provider(issuer.iss, issuer.jwks, forward=False,
                                     forward_payload_header="x-jwt-payload",
                                     claim_to_headers=[{"header_name": "x-sub",
                                                        "claim_name": "sub"}]))
    require = http_rbac(rbac(ALLOW, **{"ns[default]-policy[require-jwt]-rule[0]": policy(
        principals=[rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[
            jwt_claim("iss", issuer.iss), jwt_claim("sub", "alice")]))])}))
    async with proxy([(JWT_NAME, authn), (RBAC_NAME, require)]) as (p, port, app):
        good = issuer.token()
        r = await fetch(port, "/ok", headers={"authorization": f"Bearer {good}",
                                              "x-sub": "forged"})
        assert r.status == 200, r.body
        seen = app.received[-1].headers
        assert "authorization" not in seen  # forward: false removes the token
        assert seen["x-sub"] == "alice"
        payload = json.loads(base64.urlsafe_b64decode(seen["x-jwt-payload"] + "=="))
        assert payload["sub"] == "alice"

        r = await fetch(port, "/")  # no token: jwt_authn passes it on, RBAC refuses
        assert (r.status, r.body) == (403, b"RBAC: access denied")

        async def refused(token: str, body: bytes, status: int = 401) -> None:
            resp = await fetch(port, "/p?q=1", host="svc:8000",
                               headers={"authorization": f"Bearer {token}"})
            assert (resp.status, resp.body) == (status, body)
            assert resp.headers["www-authenticate"] == \
                'Bearer realm="http://svc:8000/p?q=1", error="invalid_token"'

        await refused(issuer.token(exp=1), b"Jwt is expired")
        head, body, sig = good.split(".")
        tampered_body = base64.urlsafe_b64encode(json.dumps(
            {"iss": issuer.iss, "sub": "admin", "exp": 4685989700}).encode()).rstrip(b"=")
        await refused(f"{head}.{tampered_body.decode()}.{sig}", b"Jwt verification fails")
        await refused(other.token(iss=issuer.iss), b"Jwks doesn't have key to match kid or "
                      b"alg from Jwt")
        await refused(other.token(), b"Jwt issuer is not configured")
        await refused("not-a-jwt", b"Jwt is not in the form of Header.Payload.Signature with "
                      b"two dots and 3 sections")
        await refused(issuer.token(nbf=4685989700), b"Jwt not yet valid")
        assert p.counter("http.ingress_http.jwt_authn.denied") == 6


async def test_jwt_provider_required_audiences_and_locations() -> None:
    issuer = Issuer()
    prov = provider(issuer.iss, issuer.jwks, audiences=["https://api.example/"], forward=True,
                    from_headers=[{"name": "x-token", "value_prefix": "Tok "}],
                    from_params=["jwt"], from_cookies=["session"])
    authn = jwt_pb2.JwtAuthentication(
        providers={"p": prov},
        rules=[jwt_pb2.RequirementRule(match={"prefix": "/open"}),
               jwt_pb2.RequirementRule(match={"prefix": "/"},
                                       requires=jwt_pb2.JwtRequirement(provider_name="p"))])
    async with proxy([(JWT_NAME, authn)]) as (p, port, app):
        r = await fetch(port, "/open")
        assert r.status == 200
        r = await fetch(port, "/x")
        assert (r.status, r.body) == (401, b"Jwt is missing")
        assert r.headers["www-authenticate"] == 'Bearer realm="http://example.com/x"'
        token = issuer.token(aud=["api.example", "x"])
        for headers, path in (({"x-token": f"Tok {token}"}, "/x"), ({}, f"/x?jwt={token}"),
                              ({"cookie": f"a=b; session={token}"}, "/x")):
            r = await fetch(port, path, headers=headers)
            assert r.status == 200, (headers, path, r.body)
        assert app.received[1].headers["x-token"] == f"Tok {token}"  # forward: true keeps it
        r = await fetch(port, "/x", headers={"x-token": f"Tok {issuer.token(aud='nope')}"})
        assert (r.status, r.body) == (403, b"Audiences in Jwt are not allowed")
        r = await fetch(port, "/x", headers={"authorization": f"Bearer {token}"})
        assert (r.status, r.body) == (401, b"Jwt is missing")  # not one of p's locations


async def test_jwt_claims_in_metadata_for_rbac_lists_and_scopes() -> None:
    issuer = Issuer()
    authn = istio_jwt_authn(provider(issuer.iss, issuer.jwks))
    need = http_rbac(rbac(ALLOW, groups=policy(principals=[rbac_pb2.Principal(
        and_ids=rbac_pb2.Principal.Set(ids=[jwt_claim("groups", "admins"),
                                            jwt_claim("scope", "write")]))])))
    async with proxy([(JWT_NAME, authn), (RBAC_NAME, need)]) as (p, port, app):
        ok = issuer.token(groups=["dev", "admins"], scope="read write")
        r = await fetch(port, "/", headers={"authorization": f"Bearer {ok}"})
        assert r.status == 200
        no = issuer.token(groups="dev", scope="read write")
        r = await fetch(port, "/", headers={"authorization": f"Bearer {no}"})
        assert r.status == 403


# --- network RBAC ------------------------------------------------------------------------------------


def tcp_listener(port: int, rules: rbac_pb2.RBAC) -> listener_pb2.Listener:
    net = net_rbac_pb2.RBAC(stat_prefix="tcp.", rules=rules)
    return listener_pb2.Listener(
        name="tcp", address={"socket_address": {"address": "127.0.0.1", "port_value": port}},
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(name="envoy.filters.network.rbac",
                                           typed_config=pack(net)),
            listener_components_pb2.Filter(
                name="envoy.filters.network.tcp_proxy",
                typed_config=pack(tcp_proxy_pb2.TcpProxy(stat_prefix="app", cluster="app")))])])


async def test_network_rbac_closes_denied_connections() -> None:
    p = InProcessProxy()
    servers = await upstreams("app")
    port = free_port()
    try:
        only_9 = rbac(ALLOW, ports=policy([rbac_pb2.Permission(destination_port=9)]))
        await p.apply([tcp_listener(port, only_9)], [], [eds_cluster("app")],
                      [load_assignment("app", [servers[0].port])])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing relayed
        writer.close()
        assert servers[0].received == []
        assert p.counter("tcp.rbac.denied") == 1

        local = rbac(ALLOW, local=policy(principals=[rbac_pb2.Principal(
            direct_remote_ip={"address_prefix": "127.0.0.0", "prefix_len": {"value": 8}})]))
        await p.apply([tcp_listener(port, local)], [], [eds_cluster("app")],
                      [load_assignment("app", [servers[0].port])])
        r = await fetch(port, "/via-tcp")
        assert r.status == 200 and r.json()["path"] == "/via-tcp"
        assert p.counter("tcp.rbac.allowed") == 1
    finally:
        await p.close()
        for s in servers:
            await s.close()
