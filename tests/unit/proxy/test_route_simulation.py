"""Simulation: requests through the route configurations our RDS generator builds for Bookinfo,
compiled by the proxy, land where Istio's documentation says they do (no proxy, no sockets)."""

from __future__ import annotations

import pytest

from pistio.pilot.model.push_context import PushContext
from pistio.pilot.networking.route_builder import build_sidecar_outbound_route_config
from pistio.proxy.config.route_action import (
    CORS_FILTER,
    FAULT_FILTER,
    CorsPolicy,
    HttpFault,
    RetryOn,
    Route,
    pick_weighted_cluster,
    redirect_location,
    retry_backoff,
    rewritten_path,
    shadow_host,
)
from pistio.proxy.config.route_match import RequestView
from pistio.proxy.config.route_table import RouteTable
from tests.unit.pilot.bookinfo_fixture import (
    CLUSTER_IPS,
    DESTINATION_RULES_YAML,
    PODS,
    bookinfo_endpoints,
    bookinfo_push,
    bookinfo_services,
    parse_configs,
    sidecar_proxy,
)


def outbound(subset: str, app: str) -> str:
    return f"outbound|9080|{subset}|{app}.default.svc.cluster.local"


def compiled(extra_yaml: str = "", name: str = "9080", push: PushContext | None = None
             ) -> RouteTable:
    push = push or bookinfo_push(extra_yaml)
    return RouteTable.compile(build_sidecar_outbound_route_config(push, sidecar_proxy(), name))


def without_reviews_vs(vs_yaml: str) -> PushContext:
    """Bookinfo with ``vs_yaml`` as the only VirtualService (no jason → v2 rule)."""
    configs = parse_configs(DESTINATION_RULES_YAML + "---\n" + vs_yaml)
    return PushContext(configs, bookinfo_services(), bookinfo_endpoints())


def route_for(t: RouteTable, authority: str, path: str = "/", headers: dict | None = None,
              method: str = "GET") -> Route:
    route = t.route(RequestView.of(method, path, authority, headers))
    assert route is not None, (authority, path, headers)
    return route


def cluster(t: RouteTable, authority: str, path: str = "/", headers: dict | None = None) -> str:
    route = route_for(t, authority, path, headers)
    assert route.action is not None
    return route.action.cluster


# --- reviews: the jason VirtualService -------------------------------------------------------


@pytest.mark.parametrize("authority", [
    "reviews:9080",
    "reviews",
    "reviews.default:9080",
    "reviews.default.svc:9080",
    "reviews.default.svc.cluster.local:9080",
    "Reviews.Default.svc.cluster.local",
    "10.96.0.12",
    "10.96.0.12:9080",
])
def test_reviews_jason_goes_to_v2_others_to_v1(authority: str):
    t = compiled()
    assert cluster(t, authority, "/reviews/0", {"end-user": "jason"}) == outbound("v2", "reviews")
    assert cluster(t, authority, "/reviews/0", {"end-user": "json"}) == outbound("v1", "reviews")
    assert cluster(t, authority, "/reviews/0") == outbound("v1", "reviews")


def test_every_service_has_its_default_route():
    t = compiled()
    for app, ip in CLUSTER_IPS.items():
        if app == "reviews":
            continue
        assert cluster(t, f"{app}:9080") == outbound("", app)
        assert cluster(t, ip) == outbound("", app)


def test_unknown_host_goes_to_passthrough_without_timeout_or_retries():
    t = compiled()
    route = route_for(t, "example.com:9080")
    assert route.virtual_host == "allow_any"
    assert route.action is not None
    assert route.action.cluster == "PassthroughCluster"
    assert route.action.timeout == 0.0  # disabled
    assert route.action.retry_policy is None
    assert route.action.include_request_attempt_count is True


def test_unknown_host_under_registry_only_gets_502():
    sidecar = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""
    route = route_for(compiled(sidecar), "example.com")
    assert route.direct_response is not None and route.direct_response.status == 502


def test_istio_default_retry_policy_and_timeouts():
    route = route_for(compiled(), "ratings:9080")
    action = route.action
    assert action is not None
    assert action.timeout == 0.0  # Istio turns Envoy's 15 s default off
    assert action.max_grpc_timeout == 0.0  # grpc-timeout honoured, uncapped
    retry = action.retry_policy
    assert retry is not None
    assert retry.retry_on == (RetryOn.CONNECT_FAILURE | RetryOn.REFUSED_STREAM
                              | RetryOn.GRPC_UNAVAILABLE | RetryOn.GRPC_CANCELLED
                              | RetryOn.RETRIABLE_STATUS_CODES)
    assert retry.num_retries == 2
    assert retry.retriable_status_codes == frozenset({503})
    assert retry.avoid_previous_hosts is True
    assert retry.host_selection_retry_max_attempts == 5
    assert (retry.base_interval, retry.max_interval) == (0.025, 0.25)
    assert route.decorator_operation == "ratings.default.svc.cluster.local:9080/*"
    # Jittered exponential back-off: [0, 25 ms), then [0, 50 ms), capped at 250 ms.
    assert retry_backoff(retry, 0, 10**9 + 24) == 0.024
    assert retry_backoff(retry, 1, 49) == 0.049
    assert retry_backoff(retry, 9, 249) == 0.249


def test_every_generated_route_config_compiles():
    push = bookinfo_push()
    for app, _version, ip, _loc in PODS:
        proxy = sidecar_proxy(app, ip)
        for name in ("9080", "reviews.default.svc.cluster.local:9080", "80"):
            RouteTable.compile(build_sidecar_outbound_route_config(push, proxy, name))


# --- traffic shifting -----------------------------------------------------------------------

REVIEWS_80_20 = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"""


def test_weighted_reviews_80_20():
    t = compiled(push=without_reviews_vs(REVIEWS_80_20))
    action = route_for(t, "reviews:9080").action
    assert action is not None and action.weighted_clusters is not None
    wc = action.weighted_clusters
    assert [(c.name, c.weight) for c in wc.clusters] == [
        (outbound("v1", "reviews"), 80), (outbound("v2", "reviews"), 20)]
    assert wc.total_weight == 100
    picks = [pick_weighted_cluster(wc, rnd).name for rnd in range(1000)]
    assert picks.count(outbound("v1", "reviews")) == 800
    assert pick_weighted_cluster(wc, 79).name == outbound("v1", "reviews")
    assert pick_weighted_cluster(wc, 80).name == outbound("v2", "reviews")
    assert t.clusters >= {outbound("v1", "reviews"), outbound("v2", "reviews")}


# --- fault injection ------------------------------------------------------------------------


def ratings_vs(name: str, fault: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
    fault:
{fault}
    route:
    - destination: {{host: ratings, subset: v1}}
  - route:
    - destination: {{host: ratings, subset: v1}}
"""


def test_ratings_delay_for_jason():
    t = compiled(ratings_vs("ratings", "      delay: {percentage: {value: 100.0}, fixedDelay: 7s}"))
    jason = route_for(t, "ratings:9080", headers={"end-user": "jason"})
    fault = jason.filter_config(FAULT_FILTER)
    assert isinstance(fault, HttpFault)
    assert fault.delay is not None and fault.delay.fixed_delay == 7.0
    assert fault.delay.fraction.percent == 100.0
    assert all(fault.delay.fraction.enabled(rnd) for rnd in (0, 999_999, 2**63))
    assert fault.abort is None
    other = route_for(t, "ratings:9080")
    assert other.filter_config(FAULT_FILTER) is None
    assert other.action is not None and other.action.cluster == outbound("v1", "ratings")


def test_ratings_abort_for_jason_and_partial_percentages():
    abort = "      abort: {percentage: {value: 100.0}, httpStatus: 500}"
    t = compiled(ratings_vs("ratings", abort))
    fault = route_for(t, "ratings", headers={"end-user": "jason"}).filter_config(FAULT_FILTER)
    assert isinstance(fault, HttpFault) and fault.abort is not None
    assert fault.abort.http_status == 500 and fault.abort.fraction.percent == 100.0
    abort = "      abort: {percentage: {value: 12.5}, grpcStatus: UNAVAILABLE}"
    t = compiled(ratings_vs("ratings", abort))
    fault = route_for(t, "ratings", headers={"end-user": "jason"}).filter_config(FAULT_FILTER)
    assert isinstance(fault, HttpFault) and fault.abort is not None
    assert fault.abort.grpc_status == 14 and fault.abort.http_status is None
    frac = fault.abort.fraction
    assert frac.percent == 12.5
    assert sum(frac.enabled(rnd) for rnd in range(1_000_000)) == 125_000


# --- retries, timeouts, rewrites, mirroring, redirects, direct responses, headers, CORS ------

FEATURES_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: default}
spec:
  hosts: [details]
  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /v2/details, authority: details-new:9080, redirectCode: 302}
  - match: [{uri: {prefix: /down}}]
    directResponse: {status: 503, body: {string: "details unavailable"}}
  - match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /v2/, authority: details-v2}
    route: [{destination: {host: details, subset: v2}}]
  - match: [{uri: {regex: "/r/([a-z]+)/([0-9]+)"}}]
    rewrite: {uriRegexRewrite: {match: "/r/([a-z]+)/([0-9]+)", rewrite: "/\\\\2/\\\\1"}}
    route: [{destination: {host: details, subset: v1}}]
  - headers:
      request:
        set: {x-set: one}
        add: {x-add: two}
        remove: [x-drop]
      response:
        set: {x-served-by: pistio}
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}, {prefix: "https://app."}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      maxAge: 24h
      allowCredentials: true
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: "gateway-error,connect-failure,refused-stream,503"
    timeout: 10s
    mirror: {host: details, subset: v2}
    mirrorPercentage: {value: 50.0}
    route: [{destination: {host: details, subset: v1}}]
"""


@pytest.fixture(scope="module")
def features() -> RouteTable:
    return compiled(FEATURES_VS)


def test_redirect_location(features: RouteTable):
    route = route_for(features, "details:9080", "/old?x=1")
    assert route.redirect is not None and route.redirect.response_code == 302
    request = RequestView.of("GET", "/old?x=1", "details:9080")
    assert redirect_location(route, request) == "http://details-new:9080/v2/details?x=1"


def test_direct_response(features: RouteTable):
    route = route_for(features, "details", "/down/now")
    assert route.direct_response is not None
    assert route.direct_response.status == 503
    assert route.direct_response.body == b"details unavailable"


def test_prefix_and_regex_rewrite(features: RouteTable):
    route = route_for(features, "details", "/v1/details/0?q=1")
    assert route.action is not None
    assert route.action.cluster == outbound("v2", "details")
    assert rewritten_path(route, "/v1/details/0?q=1") == "/v2/details/0?q=1"
    assert route.action.host_rewrite_literal == "details-v2"
    route = route_for(features, "details", "/r/book/42?x")
    assert rewritten_path(route, "/r/book/42?x") == "/42/book?x"


def test_retries_timeout_mirror_headers_and_cors(features: RouteTable):
    route = route_for(features, "details:9080", "/details/0")
    action = route.action
    assert action is not None and action.cluster == outbound("v1", "details")
    assert action.timeout == 10.0
    retry = action.retry_policy
    assert retry is not None
    assert retry.num_retries == 3 and retry.per_try_timeout == 2.0
    assert retry.retry_on == (RetryOn.GATEWAY_ERROR | RetryOn.CONNECT_FAILURE
                              | RetryOn.REFUSED_STREAM | RetryOn.RETRIABLE_STATUS_CODES)
    assert retry.retriable_status_codes == frozenset({503})
    (mirror,) = action.mirror_policies
    assert mirror.cluster == outbound("v2", "details")
    assert mirror.fraction.percent == 50.0
    assert shadow_host("details:9080") == "details-shadow:9080"
    assert shadow_host("[::1]:80") == "[::1]-shadow:80"
    (req,) = route.request_header_mutations()
    assert req.remove == ("x-drop",)
    assert [(h.name, h.value, h.action.name) for h in req.add] == [
        ("x-set", "one", "OVERWRITE_IF_EXISTS_OR_ADD"), ("x-add", "two", "APPEND_IF_EXISTS_OR_ADD")]
    (resp,) = route.response_header_mutations()
    assert [(h.name, h.value) for h in resp.add] == [("x-served-by", "pistio")]
    cors = route.filter_config(CORS_FILTER)
    assert isinstance(cors, CorsPolicy)
    assert cors.origin_allowed("https://example.com")
    assert cors.origin_allowed("https://app.example.org")
    assert not cors.origin_allowed("https://evil.com")
    assert (cors.allow_methods, cors.allow_headers, cors.max_age) == ("GET,POST", "x-custom",
                                                                     "86400")
    assert cors.allow_credentials is True


def test_mirror_of_reviews_fire_and_forget_target():
    vs = REVIEWS_80_20.replace("""  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
""", """  - route:
    - destination: {host: reviews, subset: v1}
    mirror: {host: reviews, subset: v3}
""")
    t = compiled(push=without_reviews_vs(vs))
    action = route_for(t, "reviews:9080").action
    assert action is not None and action.cluster == outbound("v1", "reviews")
    (mirror,) = action.mirror_policies
    assert mirror.cluster == outbound("v3", "reviews") and mirror.fraction.percent == 100.0
    assert outbound("v3", "reviews") in t.clusters
