"""Envoy's internal/external request rules: x-forwarded-for, x-envoy-* sanitizing, the client
address, at a gateway (use_remote_address) and at a sidecar, through a real listener."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, substitution_format_string_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.proxy.http.connection_manager import AccessLogFile
from pistio.proxy.http.header_sanitizing import RequestTrust, last_address_from_xff
from pistio.proxy.http.headers import RequestHead
from tests.unit.proxy.filters.authz_fixtures import RBAC_NAME, http_rbac, policy, rbac
from tests.unit.proxy.http_fixtures import fetch, pack, proxy_env, route, route_config

pytestmark = [pytest.mark.timeout(30)]

LOOPBACK_INTERNAL = {"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": {"value": 8}}]}
EDGE_STRIPPED = {"x-envoy-decorator-operation": "op", "x-envoy-downstream-service-node": "n"}


def test_last_address_from_xff_follows_envoy() -> None:
    assert last_address_from_xff(b"192.0.2.10", 0) == ("192.0.2.10", True)
    assert last_address_from_xff(b"192.0.2.10, 198.51.100.1", 0) == ("198.51.100.1", False)
    assert last_address_from_xff(b"192.0.2.10,198.51.100.1 ", 1) == ("192.0.2.10", False)
    assert last_address_from_xff(b"192.0.2.10", 1) == (None, False)  # fewer hops than trusted
    assert last_address_from_xff(b"unknown", 0) == (None, False)
    assert last_address_from_xff(b"2001:db8::1", 0) == ("2001:db8::1", True)


def test_internal_needs_a_configured_range() -> None:
    """Envoy 1.36 and later: without internal_address_config no address is internal."""
    assert not RequestTrust().is_internal(("10.0.0.1", 1))
    trust = RequestTrust.of(False, 0, False, ["10.0.0.0/8"], True, True, False)
    assert trust.is_internal(("10.2.3.4", 0)) and not trust.is_internal(("192.168.0.1", 0))
    assert trust.is_internal("/run/app.sock") and not RequestTrust().is_internal("/run/app.sock")


def test_sidecar_request_without_xff_keeps_the_connection_and_unrelated_headers() -> None:
    head = RequestHead(b"GET", b"/", "1.1", [(b"Host", b"a"), (b"X-Envoy-Retry-On", b"5xx"),
                                             (b"x-envoy-peer-metadata-id", b"sidecar~x")],
                       {b"host": b"a", b"x-envoy-retry-on": b"5xx",
                        b"x-envoy-peer-metadata-id": b"sidecar~x"})
    assert RequestTrust().apply(head, None, (b"x-secret",), b"http", lambda: b"id") is None
    assert head.fields == [(b"Host", b"a"), (b"x-envoy-peer-metadata-id", b"sidecar~x")]
    assert set(head.index) == {b"host", b"x-envoy-peer-metadata-id"}


def log_remote_addresses(path: Path) -> accesslog_pb2.AccessLog:
    fmt = substitution_format_string_pb2.SubstitutionFormatString(
        text_format_source={"inline_string":
                            "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS%\n"})
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=pack(
        file_pb2.FileAccessLog(path=str(path), log_format=fmt)))


@pytest.mark.asyncio
async def test_gateway_edge_request(tmp_path: Path) -> None:
    """use_remote_address, no trusted hops, nothing internal: every request is an edge
    request. The peer is appended to x-forwarded-for (loopback peer: the listener's address),
    x-forwarded-proto is the connection's, x-envoy-external-address names the client, the
    client's request id is replaced, and the edge-only headers go too."""
    log = tmp_path / "access.log"
    async with proxy_env() as env:
        await env.start("app")
        await env.apply([route_config("http", [route("/", cluster="app")])], hcm_fields={
            "use_remote_address": {"value": True},
            "access_log": [log_remote_addresses(log)]})
        client = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https",
                  "x-request-id": "client-chosen", "x-envoy-internal": "true", **EDGE_STRIPPED}
        got = (await fetch(env.port, "/", headers=client)).json()["headers"]
        assert got["x-forwarded-for"] == "203.0.113.9,127.0.0.1"
        assert got["x-forwarded-proto"] == "http"
        assert got["x-envoy-external-address"] == "127.0.0.1"
        assert got["x-request-id"] != "client-chosen" and len(got["x-request-id"]) == 36
        for name in ("x-envoy-internal", *EDGE_STRIPPED):
            assert name not in got, name
        got = (await fetch(env.port, "/")).json()["headers"]
        assert got["x-forwarded-for"] == "127.0.0.1"
        AccessLogFile.flush_all()
    remote, direct = log.read_text().splitlines()[0].split()
    assert remote == direct and remote.startswith("127.0.0.1:")


@pytest.mark.asyncio
async def test_gateway_trusted_hop_and_preserved_request_id(tmp_path: Path) -> None:
    """xff_num_trusted_hops 1: the client is the address the trusted hop appended (before our
    own append); x-forwarded-proto from the trusted hop is kept; with
    preserve_external_request_id the client's id survives. The client address is what RBAC's
    remote_ip and %DOWNSTREAM_REMOTE_ADDRESS% see (port 0, as in Envoy)."""
    log = tmp_path / "access.log"
    deny = http_rbac(rbac(rbac_pb2.RBAC.DENY, **{"no-doc-net": policy(principals=[
        rbac_pb2.Principal(remote_ip=address_pb2.CidrRange(
            address_prefix="198.51.100.0", prefix_len={"value": 24}))])}))
    async with proxy_env() as env:
        await env.start("app")
        await env.apply([route_config("http", [route("/", cluster="app")])], hcm_fields={
            "use_remote_address": {"value": True}, "xff_num_trusted_hops": 1,
            "preserve_external_request_id": True,
            "access_log": [log_remote_addresses(log)]},
            first_filters=[_filter(RBAC_NAME, deny)])
        headers = {"x-forwarded-for": "192.0.2.7, 203.0.113.9", "x-forwarded-proto": "https",
                   "x-request-id": "client-chosen"}
        got = (await fetch(env.port, "/", headers=headers)).json()["headers"]
        assert got["x-forwarded-for"] == "192.0.2.7, 203.0.113.9,127.0.0.1"
        assert got["x-forwarded-proto"] == "https"
        assert got["x-envoy-external-address"] == "203.0.113.9"
        assert got["x-request-id"] == "client-chosen"
        r = await fetch(env.port, "/", headers={"x-forwarded-for": "198.51.100.4"})
        assert (r.status, r.body) == (403, b"RBAC: access denied")
        AccessLogFile.flush_all()
    remote, direct = log.read_text().splitlines()[0].split()
    assert remote == "203.0.113.9:0" and direct.startswith("127.0.0.1:")


@pytest.mark.asyncio
async def test_gateway_internal_request() -> None:
    """A request that arrives without x-forwarded-for from an internal address is internal:
    x-envoy-internal: true, its x-envoy-* headers and request id are kept, nothing says
    external."""
    async with proxy_env() as env:
        await env.start("app")
        await env.apply([route_config("http", [route("/", cluster="app")])], hcm_fields={
            "use_remote_address": {"value": True},
            "internal_address_config": LOOPBACK_INTERNAL})
        got = (await fetch(env.port, "/", headers={"x-request-id": "mine", **EDGE_STRIPPED})
               ).json()["headers"]
        assert got["x-envoy-internal"] == "true" and got["x-request-id"] == "mine"
        assert got["x-forwarded-for"] == "127.0.0.1"
        assert "x-envoy-external-address" not in got
        assert got["x-envoy-decorator-operation"] == "op"
        # the same client behind another proxy (x-forwarded-for present): external again
        got = (await fetch(env.port, "/", headers={"x-forwarded-for": "127.0.0.2"})
               ).json()["headers"]
        assert "x-envoy-internal" not in got
        assert got["x-envoy-external-address"] == "127.0.0.1"


@pytest.mark.asyncio
async def test_sidecar_trusts_a_single_internal_xff_and_strips_internal_only_headers() -> None:
    """Without use_remote_address (a sidecar) a request is internal when its x-forwarded-for
    holds one internal address; x-forwarded-for is never appended. The route configuration's
    internal_only_headers are removed from external requests."""
    routes = route_config("http", [route("/", cluster="app")])
    routes.internal_only_headers.append("x-tenant-admin")
    async with proxy_env() as env:
        await env.start("app")
        await env.apply([routes], hcm_fields={"internal_address_config": LOOPBACK_INTERNAL})
        got = (await fetch(env.port, "/", headers={"x-forwarded-for": "127.0.0.9",
                                                    "x-tenant-admin": "yes"})).json()["headers"]
        assert got["x-envoy-internal"] == "true" and got["x-tenant-admin"] == "yes"
        assert got["x-forwarded-for"] == "127.0.0.9"
        got = (await fetch(env.port, "/", headers={"x-tenant-admin": "yes"})).json()["headers"]
        assert "x-tenant-admin" not in got and "x-envoy-internal" not in got
        assert "x-forwarded-for" not in got


def _filter(name: str, msg: object) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(msg))
