"""RDS for sidecars: Bookinfo route configs and every VirtualService HTTP feature, checked
field by field against Istio's documented behaviour (``httproute.go``, ``route/route.go``)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from pistio.pilot.networking.route_builder import build_sidecar_outbound_route_config
from pistio.pilot.networking.route_retry import DEFAULT_RETRY_ON, convert_retry_policy
from pistio.xds.any_codec import unpack
from tests.unit.pilot.bookinfo_fixture import bookinfo_push, fqdn, sidecar_proxy

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def vs_yaml(name: str, host: str, http: str, ns: str = "default", extra: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}}}
spec:
  hosts: [{host}]
{extra}  http:
{http}
---
"""


def route_config(extra: str = "", name: str = "9080", proxy=None):
    return build_sidecar_outbound_route_config(bookinfo_push(extra), proxy or sidecar_proxy(), name)


def vhost(cfg, app: str) -> rc.VirtualHost:
    wanted = f"{fqdn(app)}:9080"
    return next(v for v in cfg.virtual_hosts if v.name == wanted)


def routes_for(http: str, host: str = "ratings", extra: str = "") -> list[rc.Route]:
    cfg = route_config(vs_yaml("ratings-test", host, http, extra=extra))
    return list(vhost(cfg, "ratings").routes)


# --- Bookinfo golden ----------------------------------------------------------------------


def test_bookinfo_route_config_shape():
    cfg = route_config()
    assert cfg.name == "9080"
    assert cfg.validate_clusters.value is False
    assert cfg.ignore_port_in_host_matching is True
    assert cfg.max_direct_response_body_size_bytes.value == 1024 * 1024
    assert [v.name for v in cfg.virtual_hosts] == [
        f"{fqdn('details')}:9080",
        f"{fqdn('productpage')}:9080",
        f"{fqdn('ratings')}:9080",
        f"{fqdn('reviews')}:9080",
        "allow_any",
    ]


def test_domains_same_namespace_without_ports():
    # Envoy sidecars ignore the port in host matching, so Istio emits no ":port" domains.
    assert list(vhost(route_config(), "reviews").domains) == [
        "reviews.default.svc.cluster.local",
        "reviews",
        "reviews.default.svc",
        "reviews.default",
        "10.96.0.12",
    ]


def test_domains_from_other_namespace_leave_out_short_name():
    proxy = sidecar_proxy()
    proxy.namespace = "other"
    proxy.dns_domain = "other.svc.cluster.local"
    domains = list(vhost(route_config(proxy=proxy), "ratings").domains)
    assert domains == [
        "ratings.default.svc.cluster.local",
        "ratings.default",
        "ratings.default.svc",
        "10.96.0.13",
    ]


def test_default_route_for_service_without_virtual_service():
    vh = vhost(route_config(), "ratings")
    assert vh.include_request_attempt_count is True
    (route,) = vh.routes
    assert route.name == "default"
    assert route.match.prefix == "/"
    assert not route.match.HasField("case_sensitive")
    action = route.route
    assert action.cluster == "outbound|9080||ratings.default.svc.cluster.local"
    assert action.timeout.ToSeconds() == 0 and action.HasField("timeout")
    assert action.HasField("max_grpc_timeout") and action.max_grpc_timeout.ToSeconds() == 0
    assert route.decorator.operation == "ratings.default.svc.cluster.local:9080/*"
    retry = action.retry_policy
    assert retry.retry_on == DEFAULT_RETRY_ON
    assert retry.num_retries.value == 2
    assert list(retry.retriable_status_codes) == [503]
    assert retry.host_selection_retry_max_attempts == 5
    assert [p.name for p in retry.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]


def test_reviews_virtual_service_routes():
    jason, default = vhost(route_config(), "reviews").routes
    assert jason.name == ""
    (header,) = jason.match.headers
    assert header.name == "end-user"
    assert header.string_match.exact == "jason"
    assert jason.match.prefix == "/"
    assert jason.match.case_sensitive.value is True
    assert jason.route.cluster == "outbound|9080|v2|reviews.default.svc.cluster.local"
    assert jason.decorator.operation == "reviews.default.svc.cluster.local:9080/*"
    assert (
        jason.metadata.filter_metadata["istio"].fields["config"].string_value
        == "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews"
    )
    assert default.route.cluster == "outbound|9080|v1|reviews.default.svc.cluster.local"
    assert not default.match.headers


def test_catch_all_virtual_host_allow_any_and_registry_only():
    allow = route_config().virtual_hosts[-1]
    assert allow.name == "allow_any" and list(allow.domains) == ["*"]
    (route,) = allow.routes
    assert route.name == "allow_any"
    assert route.route.cluster == "PassthroughCluster"
    assert route.route.HasField("timeout") and route.route.timeout.ToSeconds() == 0
    sidecar = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""
    block = route_config(sidecar).virtual_hosts[-1]
    assert block.name == "block_all"
    assert block.routes[0].direct_response.status == 502


def test_sniffed_route_name_keeps_only_that_service_with_any_domain():
    cfg = route_config(name=f"{fqdn('ratings')}:9080")
    assert [v.name for v in cfg.virtual_hosts] == [f"{fqdn('ratings')}:9080"]
    assert list(cfg.virtual_hosts[0].domains) == ["*"]


def test_unknown_route_name_is_empty():
    cfg = route_config(name="not-a-port")
    assert cfg.name == "not-a-port" and not cfg.virtual_hosts


# --- matches ------------------------------------------------------------------------------


def test_uri_matches_and_ignore_case():
    http = """
  - match:
    - uri: {exact: /a}
    - uri: {prefix: /b}
      ignoreUriCase: true
    - uri: {regex: "/c/[0-9]+"}
    route: [{destination: {host: ratings}}]
"""
    exact, prefix, regex = routes_for(http)
    assert exact.match.path == "/a" and exact.match.case_sensitive.value is True
    assert prefix.match.prefix == "/b" and prefix.match.case_sensitive.value is False
    assert regex.match.safe_regex.regex == "/c/[0-9]+"
    assert exact.decorator.operation == "ratings.default.svc.cluster.local:9080/a"
    assert prefix.decorator.operation == "ratings.default.svc.cluster.local:9080/b*"


def test_header_method_authority_query_and_without_headers():
    http = """
  - name: r
    match:
    - name: m
      headers:
        z-exact: {exact: a}
        a-prefix: {prefix: b}
        m-regex: {regex: "c.*"}
        present: {}
      withoutHeaders:
        x-absent: {exact: d}
      method: {exact: GET}
      authority: {prefix: ratings}
      queryParams:
        q: {exact: "1"}
        p: {}
    route: [{destination: {host: ratings}}]
"""
    (route,) = routes_for(http)
    assert route.name == "r.m"
    headers = [(h.name, h.WhichOneof("header_match_specifier")) for h in route.match.headers]
    assert headers == [
        ("a-prefix", "string_match"),
        ("m-regex", "string_match"),
        ("present", "present_match"),
        ("x-absent", "string_match"),
        ("z-exact", "string_match"),
        (":method", "string_match"),
        (":authority", "string_match"),
    ]
    by_name = {h.name: h for h in route.match.headers}
    assert by_name["a-prefix"].string_match.prefix == "b"
    assert by_name["m-regex"].string_match.safe_regex.regex == "c.*"
    assert by_name["x-absent"].invert_match is True
    assert by_name["x-absent"].treat_missing_header_as_empty is True
    assert by_name[":method"].string_match.exact == "GET"
    assert by_name[":authority"].string_match.prefix == "ratings"
    params = {q.name: q for q in route.match.query_parameters}
    assert [q.name for q in route.match.query_parameters] == ["p", "q"]
    assert params["q"].string_match.exact == "1"
    assert params["p"].present_match is True


def test_port_source_labels_namespace_and_gateways_filter_routes():
    http = """
  - match: [{port: 9999}]
    route: [{destination: {host: ratings, subset: v9}}]
  - match: [{sourceLabels: {app: reviews}}]
    route: [{destination: {host: ratings, subset: v8}}]
  - match: [{sourceNamespace: other}]
    route: [{destination: {host: ratings, subset: v7}}]
  - match: [{gateways: [some-gateway]}]
    route: [{destination: {host: ratings, subset: v6}}]
  - match: [{port: 9080, sourceLabels: {app: productpage}, sourceNamespace: default}]
    route: [{destination: {host: ratings, subset: v1}}]
"""
    (route,) = routes_for(http)
    assert route.route.cluster == "outbound|9080|v1|ratings.default.svc.cluster.local"


def test_catch_all_match_stops_translation():
    http = """
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: ratings, subset: v1}}]
  - route: [{destination: {host: ratings, subset: v2}}]
"""
    (route,) = routes_for(http)
    assert route.route.cluster.endswith("|v1|ratings.default.svc.cluster.local")


# --- actions ------------------------------------------------------------------------------


def test_weighted_destinations_drop_zero_weights():
    http = """
  - route:
    - destination: {host: ratings, subset: v1}
      weight: 75
    - destination: {host: ratings, subset: v2}
      weight: 25
    - destination: {host: ratings, subset: v3}
      weight: 0
"""
    (route,) = routes_for(http)
    clusters = [(c.name, c.weight.value) for c in route.route.weighted_clusters.clusters]
    assert clusters == [
        ("outbound|9080|v1|ratings.default.svc.cluster.local", 75),
        ("outbound|9080|v2|ratings.default.svc.cluster.local", 25),
    ]
    assert route.decorator.operation == "ratings-test:9080/*"


def test_destination_port_and_other_service():
    http = """
  - route: [{destination: {host: details, port: {number: 9090}}}]
"""
    (route,) = routes_for(http)
    assert route.route.cluster == "outbound|9090||details.default.svc.cluster.local"


def test_redirect():
    http = """
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: example.com, scheme: https, port: 8443, redirectCode: 302}
  - match: [{uri: {exact: /x}}]
    redirect: {uri: /y, derivePort: FROM_REQUEST_PORT}
  - redirect: {uri: /z, port: 80}
"""
    first, second, third = routes_for(http)
    r = first.redirect
    assert (r.path_redirect, r.host_redirect, r.scheme_redirect) == ("/new", "example.com", "https")
    assert r.port_redirect == 8443
    assert r.response_code == rc.RedirectAction.FOUND
    assert second.redirect.port_redirect == 9080
    assert second.redirect.response_code == rc.RedirectAction.MOVED_PERMANENTLY
    assert third.redirect.port_redirect == 0  # :80 on http is left implicit


def test_direct_response_with_body():
    http = """
  - directResponse: {status: 418, body: {string: teapot}}
"""
    (route,) = routes_for(http)
    assert route.direct_response.status == 418
    assert route.direct_response.body.inline_string == "teapot"
    assert not route.HasField("route")


def test_rewrites():
    http = """
  - match: [{uri: {prefix: /a}}]
    rewrite: {uri: /b, authority: new.example.com}
    route: [{destination: {host: ratings}}]
  - rewrite:
      uriRegexRewrite: {match: "^/x/(.*)", rewrite: "/\\\\1"}
    route: [{destination: {host: ratings}}]
"""
    prefix, regex = routes_for(http)
    assert prefix.route.prefix_rewrite == "/b"
    assert prefix.route.host_rewrite_literal == "new.example.com"
    assert prefix.route.cluster == "outbound|9080||ratings.default.svc.cluster.local"
    assert regex.route.regex_rewrite.pattern.regex == "^/x/(.*)"
    assert regex.route.regex_rewrite.substitution == "/\\1"


def test_header_operations():
    http = """
  - headers:
      request:
        set: {x-b: "1", x-a: "2", host: h.example.com}
        add: {x-c: "3"}
        remove: [x-d]
      response:
        set: {x-e: "4"}
        add: {x-f: "5"}
        remove: [x-g]
    route:
    - destination: {host: ratings}
      headers:
        request: {set: {x-dst: "6"}}
"""
    (route,) = routes_for(http)
    req = [(h.header.key, h.header.value, h.append_action) for h in route.request_headers_to_add]
    assert req == [
        ("x-a", "2", OVERWRITE),
        ("x-b", "1", OVERWRITE),
        ("x-c", "3", APPEND),
        ("x-dst", "6", OVERWRITE),
    ]
    assert list(route.request_headers_to_remove) == ["x-d"]
    resp = [(h.header.key, h.append_action) for h in route.response_headers_to_add]
    assert resp == [("x-e", OVERWRITE), ("x-f", APPEND)]
    assert list(route.response_headers_to_remove) == ["x-g"]
    assert route.route.host_rewrite_literal == "h.example.com"


def test_retries_timeout_and_disabled_retries():
    http = """
  - match: [{uri: {prefix: /a}}]
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 0.5s, retryOn: "gateway-error,503,reset"}
    route: [{destination: {host: ratings}}]
  - retries: {attempts: 0}
    route: [{destination: {host: ratings}}]
"""
    retried, no_retry = routes_for(http)
    action = retried.route
    assert (action.timeout.seconds, action.timeout.nanos) == (1, 500_000_000)
    assert action.max_grpc_timeout == action.timeout
    policy = action.retry_policy
    assert policy.num_retries.value == 3
    assert policy.retry_on == "gateway-error,reset,retriable-status-codes"
    assert list(policy.retriable_status_codes) == [503]
    assert policy.per_try_timeout.nanos == 500_000_000
    assert not no_retry.route.HasField("retry_policy")


def test_retry_policy_options():
    from pistio.api import networking as net

    policy = convert_retry_policy(
        net.HTTPRetry.model_validate(
            {"attempts": 1, "retryIgnorePreviousHosts": False, "retryRemoteLocalities": True}
        )
    )
    assert policy is not None
    assert not policy.retry_host_predicate
    assert policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert not convert_retry_policy(None, consistent_hash=True).retry_host_predicate


def test_fault_injection_per_route():
    http = """
  - fault:
      delay: {fixedDelay: 7s, percentage: {value: 50}}
      abort: {httpStatus: 500, percentage: {value: 0.1}}
    route: [{destination: {host: ratings}}]
"""
    (route,) = routes_for(http)
    fault = unpack(route.typed_per_filter_config["envoy.filters.http.fault"])
    assert isinstance(fault, fault_pb2.HTTPFault)
    assert fault.delay.fixed_delay.seconds == 7
    assert fault.delay.percentage.numerator == 500_000
    assert fault.delay.percentage.denominator == percent_pb2.FractionalPercent.MILLION
    assert fault.abort.http_status == 500
    assert fault.abort.percentage.numerator == 1000


def test_grpc_abort_fault():
    http = """
  - fault:
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}
    route: [{destination: {host: ratings}}]
"""
    (route,) = routes_for(http)
    fault = unpack(route.typed_per_filter_config["envoy.filters.http.fault"])
    assert fault.abort.grpc_status == 14


def test_mirror_and_mirrors():
    http = """
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: ratings, subset: v1}}]
    mirror: {host: ratings, subset: v2}
    mirrorPercentage: {value: 12.5}
  - route: [{destination: {host: ratings, subset: v1}}]
    mirrors:
    - destination: {host: details}
    - destination: {host: reviews}
      percentage: {value: 0}
"""
    single, multi = routes_for(http)
    mirrors = list(single.route.request_mirror_policies) + list(multi.route.request_mirror_policies)
    assert [m.cluster for m in mirrors] == [
        "outbound|9080|v2|ratings.default.svc.cluster.local",
        "outbound|9080||details.default.svc.cluster.local",
    ]
    assert mirrors[0].runtime_fraction.default_value.numerator == 125_000
    assert mirrors[1].runtime_fraction.default_value.numerator == 100
    assert mirrors[1].runtime_fraction.default_value.denominator == (
        percent_pb2.FractionalPercent.HUNDRED
    )
    assert mirrors[0].trace_sampled.value is False


def test_cors_policy():
    http = """
  - corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {regex: ".*b.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a, x-b]
      exposeHeaders: [x-c]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: ratings}}]
"""
    (route,) = routes_for(http)
    cors = unpack(route.typed_per_filter_config["envoy.filters.http.cors"])
    assert isinstance(cors, cors_pb2.CorsPolicy)
    assert cors.allow_origin_string_match[0].exact == "https://a.example"
    assert cors.allow_origin_string_match[1].safe_regex.regex == ".*b.example"
    assert cors.allow_methods == "GET,POST"
    assert cors.allow_headers == "x-a,x-b"
    assert cors.expose_headers == "x-c"
    assert cors.max_age == "86400"
    assert cors.allow_credentials.value is True
    assert cors.forward_not_matching_preflights.value is True
    assert cors.filter_enabled.default_value.numerator == 100


def test_consistent_hash_from_destination_rule():
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
---
"""
    cfg = route_config(dr)
    (route,) = vhost(cfg, "details").routes
    assert route.route.hash_policy[0].header.header_name == "x-user"


def test_delegate_virtual_service_merged():
    root = vs_yaml(
        "ratings-root",
        "ratings",
        """
  - name: root
    match: [{uri: {prefix: /api}}]
    timeout: 3s
    delegate: {name: ratings-delegate, namespace: team}
  - route: [{destination: {host: ratings, subset: v1}}]
""",
    )
    delegate = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-delegate, namespace: team}
spec:
  http:
  - name: leaf
    match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: ratings.default.svc.cluster.local, subset: v2}}]
  - name: conflicting
    match: [{uri: {prefix: /other}}]
    route: [{destination: {host: ratings.default.svc.cluster.local, subset: v3}}]
---
"""
    routes = list(vhost(route_config(root + delegate), "ratings").routes)
    assert [r.name for r in routes] == ["root-leaf", ""]
    assert routes[0].match.prefix == "/api/v2"
    assert routes[0].route.cluster == "outbound|9080|v2|ratings.default.svc.cluster.local"
    assert routes[0].route.timeout.seconds == 3  # inherited from the root route
