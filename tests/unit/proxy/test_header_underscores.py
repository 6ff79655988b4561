"""``common_http_protocol_options.headers_with_underscores_action`` over real sockets, HTTP/1.1
and HTTP/2: ALLOW passes the header, DROP_HEADER removes it before any filter (counted in
``http1.``/``http2.dropped_headers_with_underscores``), REJECT_REQUEST answers 400 and closes
(HTTP/1) or resets the stream (HTTP/2)."""

from __future__ import annotations

import h2.errors
import pytest
import pytest_asyncio
from envoy.config.core.v3 import protocol_pb2

from tests.unit.proxy.h2_fixtures import H2Client
from tests.unit.proxy.http_fixtures import Env, fetch, proxy_env, route, route_config

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

ROUTES = [route_config("http", [route("/", cluster="app")])]
ACTION = protocol_pb2.HttpProtocolOptions


@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e


def underscores(action: int) -> dict:
    return {"common_http_protocol_options": ACTION(headers_with_underscores_action=action)}


def counter(env: Env, name: str) -> int:
    return env.proxy.counter(name)  # type: ignore[union-attr]


async def test_allow_is_the_default(env: Env) -> None:
    (app,) = await env.start("app")
    await env.apply(ROUTES)
    r = await fetch(env.port, "/", headers={"x_user": "a", "x-ok": "b"})
    assert r.status == 200
    assert app.received[-1].headers["x_user"] == "a"


async def test_drop_header(env: Env) -> None:
    (app,) = await env.start("app")
    await env.apply(ROUTES, hcm_fields=underscores(ACTION.DROP_HEADER))
    r = await fetch(env.port, "/", headers={"x_user": "a", "x-ok": "b", "Also_This": "c"})
    assert r.status == 200
    got = app.received[-1].headers
    assert "x_user" not in got and "also_this" not in got and got["x-ok"] == "b"
    assert counter(env, "http1.dropped_headers_with_underscores") == 2
    client = await H2Client.connect(env.port)
    try:
        r2 = await client.request("/", headers={"x_user": "a", "x-ok": "b"})
        assert r2.status == 200 and "x_user" not in app.received[-1].headers
    finally:
        client.close()
    assert counter(env, "http2.dropped_headers_with_underscores") == 1


async def test_reject_request(env: Env) -> None:
    (app,) = await env.start("app")
    await env.apply(ROUTES, hcm_fields=underscores(ACTION.REJECT_REQUEST))
    r = await fetch(env.port, "/", headers={"x_user": "a"})
    assert r.status == 400
    assert r.headers.get("connection") == "close"
    assert counter(env, "http1.requests_rejected_with_underscores_in_headers") == 1
    client = await H2Client.connect(env.port)
    try:
        r2 = await client.request("/", headers={"x_user": "a"})
        assert r2.reset == h2.errors.ErrorCodes.INTERNAL_ERROR
        r3 = await client.request("/", headers={"x-user": "a"})  # the connection goes on
        assert r3.status == 200
    finally:
        client.close()
    assert counter(env, "http2.requests_rejected_with_underscores_in_headers") == 1
    assert len(app.received) == 1  # only the request without underscores
