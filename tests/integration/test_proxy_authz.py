"""The security filters in a real proxy process fed by a test xDS server: Istio-shaped
``jwt_authn`` + RBAC configs with Istio's sample JWKS and tokens
(``../shared/conformance/istio-samples/jwt/``), deny-all then allow by path and method pushed
over ADS, and ext_authz against a real HTTP authorizer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from google.api.expr.v1alpha1 import syntax_pb2

from pistio.xds import types as T
from tests.integration.test_proxy_http import ControlPlane, ProxyProcess
from tests.shared_data import shared_dir
from tests.unit.proxy.filters.authz_fixtures import (
    RBAC_NAME,
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
    UpstreamServer,
    eds_cluster,
    fetch,
    free_port,
    load_assignment,
    route,
    route_config,
    upstreams,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]
ALLOW, DENY = rbac_pb2.RBAC.ALLOW, rbac_pb2.RBAC.DENY
ISSUER = "testing@secure.istio.io"


def jwt_samples() -> Path:
    d = shared_dir() / "conformance" / "istio-samples" / "jwt"
    if not (d / "jwks.json").is_file():
        pytest.fail(f"Istio's JWT samples not found at {d} (set PISTIO_SHARED to ../shared)")
    return d


class AuthzProxy(ProxyProcess):
    """Ready when the listener answers at all: its filters may refuse the probe."""

    async def wait_ready(self, listener_port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            self._check(deadline)
            await asyncio.sleep(0.05)
        while True:
            self._check(deadline)
            with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
                await fetch(listener_port, "/__ready__", timeout=1)
                self.ports = json.loads(self.ready.read_text())
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def mesh(tmp_path: Path, servers: list[UpstreamServer], configure, concurrency: int
               ) -> AsyncIterator[tuple[ControlPlane, AuthzProxy, int]]:
    """Upstreams, control plane and a proxy; everything stopped at the end, even on failure."""
    cp = ControlPlane()
    proxy = None
    port = free_port()
    try:
        configure(cp, port, {s.name: s for s in servers})
        proxy = AuthzProxy(tmp_path, await cp.start(), concurrency)
        await proxy.wait_ready(port)
        yield cp, proxy, port
    finally:
        if proxy is not None:
            proxy.stop()
        await cp.close()
        for s in servers:
            await s.close()


def b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _app(cp: ControlPlane, servers: dict[str, UpstreamServer]) -> None:
    for name, s in servers.items():
        cp.set(T.CLUSTER, eds_cluster(name))
        cp.set(T.ENDPOINT, load_assignment(name, [s.port]))
    cp.set(T.ROUTE, route_config("http", [route("/", cluster="app")]))


async def test_request_authentication_with_istio_samples(tmp_path: Path) -> None:
    samples = jwt_samples()
    demo = (samples / "demo.jwt").read_text().strip()
    groups = (samples / "groups-scope.jwt").read_text().strip()
    authn = istio_jwt_authn(provider(ISSUER, (samples / "jwks.json").read_text()))
    # requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"], and on /groups
    # request.auth.claims[groups]: ["group1"], as Istio's generator writes them.
    principal = rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=[
        jwt_claim("iss", ISSUER), jwt_claim("sub", ISSUER)]))
    authz = http_rbac(rbac(ALLOW, **{
        "ns[foo]-policy[require-jwt]-rule[0]": policy(
            [rbac_pb2.Permission(not_rule=perm_path(prefix("/groups")))], [principal]),
        "ns[foo]-policy[require-jwt]-rule[1]": policy(
            [perm_path(prefix("/groups"))], [jwt_claim("groups", "group1")]),
    }))

    def configure(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]) -> None:
        _app(cp, servers)
        cp.set(T.LISTENER, listener_with_filters(
            "gateway", port, [("envoy.filters.http.jwt_authn", authn), (RBAC_NAME, authz)]))

    async with mesh(tmp_path, await upstreams("app"), configure, concurrency=1) as (
            cp, proxy, port):
        r = await fetch(port, "/headers", headers={"authorization": f"Bearer {demo}"})
        assert r.status == 200, r.body
        r = await fetch(port, "/groups", headers={"authorization": f"Bearer {groups}"})
        assert r.status == 200, r.body
        r = await fetch(port, "/groups", headers={"authorization": f"Bearer {demo}"})
        assert (r.status, r.body) == (403, b"RBAC: access denied")
        r = await fetch(port, "/headers")  # no token: passes authn, refused by RBAC
        assert (r.status, r.body) == (403, b"RBAC: access denied")

        head, payload, signature = demo.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        tampered = f"{head}.{b64({**claims, 'sub': 'admin'})}.{signature}"
        # Envoy checks the time before the signature: an expired token is "expired".
        expired = f"{head}.{b64({**claims, 'exp': 1532389800})}.{signature}"
        for token, body in ((tampered, b"Jwt verification fails"),
                            (expired, b"Jwt is expired"),
                            (f"{head}.{payload}", b"Jwt is not in the form of "
                             b"Header.Payload.Signature with two dots and 3 sections")):
            r = await fetch(port, "/headers", host="httpbin.foo:8000",
                            headers={"authorization": f"Bearer {token}"})
            assert (r.status, r.body) == (401, body)
            assert r.headers["www-authenticate"] == \
                'Bearer realm="http://httpbin.foo:8000/headers", error="invalid_token"'
        status, text = proxy.admin("/stats?filter=jwt_authn")
        assert "http.ingress_http.jwt_authn.denied: 3" in text, text


async def test_deny_all_then_allow_by_path_and_method_over_ads(tmp_path: Path) -> None:
    def deny_all(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]) -> None:
        _app(cp, servers)
        cp.set(T.LISTENER, listener_with_filters("gateway", port, [(RBAC_NAME, http_rbac(
            rbac(ALLOW)))]))

    async with mesh(tmp_path, await upstreams("app"), deny_all, concurrency=2) as (
            cp, proxy, port):
        r = await fetch(port, "/ip")
        assert (r.status, r.body) == (403, b"RBAC: access denied")

        allow = http_rbac(rbac(ALLOW, **{"ns[foo]-policy[get-ip]-rule[0]": policy(
            [rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=[
                perm_method("GET"), perm_path(exact("/ip"))]))])}))
        deny = http_rbac(rbac(DENY, **{"ns[foo]-policy[deny-debug]-rule[0]": policy(
            [rbac_pb2.Permission(header={"name": "x-debug", "present_match": True})])}))
        cp.set(T.LISTENER, listener_with_filters("gateway", port, [(RBAC_NAME, deny),
                                                                     (RBAC_NAME, allow)]))
        await cp.push()
        for _ in range(100):
            r = await fetch(port, "/ip")
            if r.status == 200:
                break
            await asyncio.sleep(0.05)
        assert r.status == 200
        assert (await fetch(port, "/ip", method="POST", body=b"x")).status == 403
        assert (await fetch(port, "/headers")).status == 403
        r = await fetch(port, "/ip", headers={"x-debug": "1"})
        assert (r.status, r.body) == (403, b"RBAC: access denied")

        # A policy pistio cannot enforce (a CEL condition) is NACKed; the last one stays.
        cel = rbac_pb2.RBAC(action=ALLOW, policies={"cel": rbac_pb2.Policy(
            permissions=[rbac_pb2.Permission(any=True)],
            principals=[rbac_pb2.Principal(any=True)], condition=syntax_pb2.Expr())})
        cp.set(T.LISTENER, listener_with_filters("gateway", port, [(RBAC_NAME, http_rbac(cel))]))
        await cp.push()
        error = ""
        for _ in range(200):
            errors = [c.watch(T.LISTENER).error for c in cp.server.registry  # type: ignore
                      if c.watch(T.LISTENER) is not None]
            error = next((e for e in errors if e), "")
            if error:
                break
            await asyncio.sleep(0.05)
        assert "policies['cel'].condition: field not supported by pistio (CEL conditions are " \
               "not implemented)" in error, error
        assert (await fetch(port, "/ip")).status == 200
        assert (await fetch(port, "/headers")).status == 403


async def test_ext_authz_with_a_real_authorizer(tmp_path: Path) -> None:
    """Istio's ext-authz sample semantics: ``x-ext-authz: allow`` is allowed, anything else
    is denied with the authorizer's status and body."""
    checks: list[str] = []

    async def authorizer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        checks.append(head)
        if "\r\nx-ext-authz: allow\r\n" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nx-ext-authz-check-result: allowed\r\n"
                         b"content-length: 0\r\n\r\n")
        else:
            body = b"denied by ext_authz for not found header `x-ext-authz: allow` in the request"
            writer.write(b"HTTP/1.1 403 Forbidden\r\nx-ext-authz-check-result: denied\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(authorizer, "127.0.0.1", 0)
    authz_port = server.sockets[0].getsockname()[1]
    ext = ext_authz_pb2.ExtAuthz(
        transport_api_version=2,
        http_service=ext_authz_pb2.HttpService(
            server_uri={"uri": "http://ext-authz.foo.svc.cluster.local", "cluster": "authz",
                        "timeout": {"seconds": 5}},
            authorization_request={"allowed_headers": {"patterns": [exact("x-ext-authz")]}},
            authorization_response={
                "allowed_upstream_headers": {"patterns": [exact("x-ext-authz-check-result")]},
                "allowed_client_headers": {"patterns": [exact("x-ext-authz-check-result")]}}))

    def configure(cp: ControlPlane, port: int, servers: dict[str, UpstreamServer]) -> None:
        _app(cp, servers)
        cp.set(T.CLUSTER, eds_cluster("authz"))
        cp.set(T.ENDPOINT, load_assignment("authz", [authz_port]))
        cp.set(T.LISTENER, listener_with_filters(
            "gateway", port, [("envoy.filters.http.ext_authz", ext)]))

    servers = await upstreams("app")
    try:
        async with mesh(tmp_path, servers, configure, concurrency=1) as (cp, proxy, port):
            r = await fetch(port, "/headers", headers={"x-ext-authz": "deny"})
            assert r.status == 403
            assert r.body == (b"denied by ext_authz for not found header `x-ext-authz: allow` "
                              b"in the request")
            assert r.headers["x-ext-authz-check-result"] == "denied"
            r = await fetch(port, "/headers", headers={"x-ext-authz": "allow"})
            assert r.status == 200
            assert r.json()["headers"]["x-ext-authz-check-result"] == "allowed"
            assert all(c.startswith("GET /headers HTTP/1.1\r\n") for c in checks[-2:])
    finally:
        server.close()
