"""The fault and CORS filters with per-route configs, and the NACK of unsupported filters."""

from __future__ import annotations

import time

import pytest
import pytest_asyncio
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import compile_listener
from tests.unit.proxy.http_fixtures import (
    Env,
    fetch,
    http_listener,
    pack,
    proxy_env,
    route,
    route_config,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e

FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"


def percent(n: int) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=n)


def fault_route(prefix: str, fault: fault_pb2.HTTPFault) -> rc.Route:
    return route(prefix, cluster="a", typed_per_filter_config={FAULT: pack(fault)})


async def test_fault_abort_and_delay(env: Env) -> None:
    await env.start("a")
    abort = fault_pb2.HTTPFault(abort=fault_pb2.FaultAbort(http_status=418, percentage=percent(100)))
    delay = fault_pb2.HTTPFault(delay=common_fault_pb2.FaultDelay(percentage=percent(100)))
    delay.delay.fixed_delay.FromMilliseconds(200)
    both = fault_pb2.HTTPFault()
    both.CopyFrom(delay)
    both.abort.CopyFrom(abort.abort)
    never = fault_pb2.HTTPFault(abort=fault_pb2.FaultAbort(http_status=500, percentage=percent(0)))
    await env.apply([route_config("http", [
        fault_route("/abort", abort), fault_route("/delay", delay),
        fault_route("/both", both), fault_route("/never", never), route("/", cluster="a"),
    ])])
    r = await fetch(env.port, "/abort")
    assert (r.status, r.body) == (418, b"fault filter abort")
    start = time.monotonic()
    r = await fetch(env.port, "/delay")
    assert r.status == 200 and time.monotonic() - start >= 0.19
    start = time.monotonic()
    r = await fetch(env.port, "/both")
    assert r.status == 418 and time.monotonic() - start >= 0.19
    assert (await fetch(env.port, "/never")).status == 200
    assert (await fetch(env.port, "/plain")).status == 200
    c = env.proxy.counter  # type: ignore[union-attr]
    assert c("http.ingress_http.fault.aborts_injected") == 2
    assert c("http.ingress_http.fault.delays_injected") == 2
    assert len(env.servers[0].received) == 3  # the aborted requests never went upstream


async def test_fault_header_match_and_upstream_cluster(env: Env) -> None:
    await env.start("a")
    abort = fault_pb2.HTTPFault(
        abort=fault_pb2.FaultAbort(http_status=503, percentage=percent(100)),
        headers=[rc.HeaderMatcher(name="x-chaos", present_match=True)],
        upstream_cluster="a",
    )
    await env.apply([route_config("http", [fault_route("/", abort)])])
    assert (await fetch(env.port, "/")).status == 200
    assert (await fetch(env.port, "/", headers={"x-chaos": "1"})).status == 503


def cors_route(policy: cors_pb2.CorsPolicy) -> rc.Route:
    return route("/", cluster="a", typed_per_filter_config={CORS: pack(policy)})


async def test_cors_preflight_and_actual_request(env: Env) -> None:
    await env.start("a")
    policy = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_pb2.StringMatcher(exact="https://app.example")],
        allow_methods="GET,POST", allow_headers="x-token", expose_headers="x-upstream",
        max_age="600", allow_credentials=wrappers_pb2.BoolValue(value=True),
    )
    await env.apply([route_config("http", [cors_route(policy)])])
    r = await fetch(env.port, "/", method="OPTIONS", headers={
        "origin": "https://app.example", "access-control-request-method": "POST"})
    assert r.status == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-methods"] == "GET,POST"
    assert r.headers["access-control-allow-headers"] == "x-token"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert env.servers[0].received == []
    r = await fetch(env.port, "/", headers={"origin": "https://app.example"})
    assert r.status == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-expose-headers"] == "x-upstream"
    r = await fetch(env.port, "/", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    # A preflight from an origin not allowed goes upstream (forward_not_matching_preflights).
    r = await fetch(env.port, "/", method="OPTIONS", headers={
        "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert r.status == 200 and "access-control-allow-origin" not in r.headers
    assert len(env.servers[0].received) == 3


def _listener_with_filters(*filters: hcm_pb2.HttpFilter):
    listener = http_listener("l", 8080)
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    del hcm.http_filters[:]
    hcm.http_filters.extend(filters)
    listener.filter_chains[0].filters[0].typed_config.CopyFrom(pack(hcm))
    return listener


async def test_unsupported_http_filter_is_nacked() -> None:
    from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2

    router = hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                typed_config=pack(router_pb2.Router()))
    buffer = hcm_pb2.HttpFilter(name="envoy.filters.http.buffer",
                                typed_config=pack(buffer_pb2.Buffer()))
    with pytest.raises(ConfigError) as err:
        compile_listener(_listener_with_filters(buffer, router))
    assert ("filter_chains[0].filters[0].typed_config.http_filters[0]: HTTP filter "
            "'envoy.filters.http.buffer' (type.googleapis.com/envoy.extensions.filters.http."
            "buffer.v3.Buffer) is not supported by pistio") in str(err.value)
    optional = hcm_pb2.HttpFilter()
    optional.CopyFrom(buffer)
    optional.is_optional = True
    compile_listener(_listener_with_filters(optional, router))
    with pytest.raises(ConfigError) as err:
        compile_listener(_listener_with_filters(router, optional))
    assert "must be the last filter in a http filter chain" in str(err.value)
