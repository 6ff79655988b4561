"""What the proxy refuses (one ConfigError naming every problem, for the NACK) and the action
semantics that need hand-made configs: redirects, rewrites, header mutation order, weights,
per-filter config precedence."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from google.protobuf import json_format

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_action import (
    FAULT_FILTER,
    AppendAction,
    HttpFault,
    redirect_location,
    rewritten_path,
)
from pistio.proxy.config.route_match import RequestView
from pistio.proxy.config.route_table import ROUTE_CONFIG_ALLOWED, RouteTable
from pistio.proxy.config.unsupported import unsupported_fields
from pistio.xds.any_codec import pack


def parse(config: dict) -> route_pb2.RouteConfiguration:
    return json_format.ParseDict(config, route_pb2.RouteConfiguration())


def one_route(route: dict, **config) -> dict:
    return {"name": "9080", **config, "virtual_hosts": [
        {"name": "vh", "domains": ["*"], "routes": [route]}]}


def compile_one(route: dict, **config) -> RouteTable:
    return RouteTable.compile(parse(one_route(route, **config)))


def problems_of(config: dict | route_pb2.RouteConfiguration) -> list[str]:
    msg = config if isinstance(config, route_pb2.RouteConfiguration) else parse(config)
    with pytest.raises(ConfigError) as e:
        RouteTable.compile(msg)
    assert str(e.value) == "; ".join(e.value.problems)
    return e.value.problems


def only_route(t: RouteTable):
    return t.virtual_hosts[0].routes[0]


FWD = {"match": {"prefix": "/"}, "route": {"cluster": "c"}}


# --- unsupported fields -----------------------------------------------------------------


def test_every_unsupported_field_is_named_with_its_path():
    config = {
        "name": "9080",
        "vhds": {},
        "virtual_hosts": [
            {"name": "a", "domains": ["a"], "routes": [FWD]},
            {"name": "b", "domains": ["b"], "require_tls": "ALL", "routes": [FWD]},
            {"name": "c", "domains": ["c"], "routes": [
                {"match": {"prefix": "/", "tls_context": {"presented": True}},
                 "route": {"cluster": "c", "rate_limits": [{"actions": [
                     {"source_cluster": {}}]}], "priority": "HIGH"}},
                {"match": {"prefix": "/"}, "route": {"cluster": "c", "retry_policy": {
                    "retry_on": "5xx", "rate_limited_retry_back_off": {
                        "reset_headers": [{"name": "x"}]}}}},
            ]},
        ],
    }
    # In field-number order, depth first.
    assert problems_of(config) == [
        "RouteConfiguration 9080: virtual_hosts[1].require_tls: field not supported by pistio",
        "RouteConfiguration 9080: virtual_hosts[2].routes[0].match.tls_context: "
        "field not supported by pistio",
        "RouteConfiguration 9080: virtual_hosts[2].routes[0].route.priority: "
        "field not supported by pistio",
        "RouteConfiguration 9080: virtual_hosts[2].routes[0].route.rate_limits: "
        "field not supported by pistio",
        "RouteConfiguration 9080: virtual_hosts[2].routes[1].route.retry_policy."
        "rate_limited_retry_back_off: field not supported by pistio",
        "RouteConfiguration 9080: vhds: field not supported by pistio",
    ]


def test_a_retry_idle_timeout_is_refused_rather_than_ignored():
    """per_try_idle_timeout is not enforced by pistio's router: NACKed with its path."""
    route = {"match": {"prefix": "/"}, "route": {"cluster": "c", "retry_policy": {
        "retry_on": "5xx", "per_try_idle_timeout": "1s"}}}
    assert problems_of(one_route(route)) == [
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].route.retry_policy."
        "per_try_idle_timeout: field not supported by pistio"]


def test_unsupported_and_invalid_problems_come_together():
    problems = problems_of(one_route({
        "match": {"safe_regex": {"regex": "(?=x)"}},
        "route": {"cluster": "c", "retry_policy": {"retry_on": "5xx,bogus"},
                  "internal_redirect_policy": {}},
    }))
    assert problems == [
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].route.internal_redirect_policy: "
        "field not supported by pistio",
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].match.safe_regex: invalid regex "
        "'(?=x)': look-around is not supported by RE2",
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].route.retry_policy.retry_on: "
        "unknown retry condition(s) bogus",
    ]


def test_unknown_per_filter_config_is_rejected_unless_optional():
    cfg = parse(one_route(FWD))
    route = cfg.virtual_hosts[0].routes[0]
    route.typed_per_filter_config["envoy.filters.http.router"].CopyFrom(pack(router_pb2.Router()))
    (problem,) = problems_of(cfg)
    assert problem == (
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].typed_per_filter_config"
        "['envoy.filters.http.router']: per-route config "
        "'envoy.extensions.filters.http.router.v3.Router' not supported by pistio")
    route.typed_per_filter_config["envoy.filters.http.router"].CopyFrom(pack(rc.FilterConfig(
        config=pack(router_pb2.Router()), is_optional=True)))
    assert RouteTable.compile(cfg)


def test_fault_fields_pistio_does_not_run_are_rejected():
    cfg = parse(one_route(FWD))
    fault = fault_pb2.HTTPFault()
    fault.response_rate_limit.fixed_limit.limit_kbps = 1
    cfg.virtual_hosts[0].routes[0].typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))
    (problem,) = problems_of(cfg)
    assert problem.endswith("typed_per_filter_config['envoy.filters.http.fault']."
                            "response_rate_limit: field not supported by pistio")


def test_unsupported_fields_walks_repeated_maps_and_stops_at_unknown_types():
    rc_msg = parse(one_route(FWD))
    rc_msg.virtual_hosts[0].routes[0].route.metadata_match.filter_metadata["x"].fields[
        "k"].string_value = "v"
    assert unsupported_fields(rc_msg, ROUTE_CONFIG_ALLOWED, "") == [
        "virtual_hosts[0].routes[0].route.metadata_match: field not supported by pistio"]
    # A type missing from the allow-list is not looked into.
    assert unsupported_fields(rc_msg, {}, "x") == []


# --- validation Envoy does ---------------------------------------------------------------------


def test_headers_that_may_not_be_modified():
    problems = problems_of(one_route({**FWD, "request_headers_to_add": [
        {"header": {"key": ":path", "value": "/x"}},
        {"header": {"key": "Host", "value": "x"}},
        {"header": {"key": "x-cmd", "value": "%REQ(x-foo)%"}},
    ], "request_headers_to_remove": [":authority"]}))
    assert problems == [
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].request_headers_to_remove[0]: "
        "':authority': :-prefixed or host headers may not be removed",
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].request_headers_to_add[0]: "
        "':path': :-prefixed or host headers may not be modified",
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].request_headers_to_add[1]: "
        "'Host': :-prefixed or host headers may not be modified",
        "RouteConfiguration 9080: virtual_hosts[0].routes[0].request_headers_to_add[2]: "
        "header value '%REQ(x-foo)%' uses command operators, not supported by pistio",
    ]


def test_weighted_clusters_need_a_positive_sum_matching_total_weight():
    (p,) = problems_of(one_route({"match": {"prefix": "/"}, "route": {"weighted_clusters": {
        "clusters": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}}}))
    assert p.endswith("weighted_clusters: sum of weights in the weighted_cluster must be "
                      "greater than 0")
    (p,) = problems_of(one_route({"match": {"prefix": "/"}, "route": {"weighted_clusters": {
        "clusters": [{"name": "a", "weight": 30}], "total_weight": 100}}}))
    assert p.endswith("sum of weights (30) must equal total_weight (100)")


def test_direct_response_body_limit_and_status():
    big = {"match": {"prefix": "/"}, "direct_response": {"status": 200,
                                                           "body": {"inline_string": "x" * 5000}}}
    (p,) = problems_of(one_route(big))
    assert p.endswith("response body size is 5000 bytes; maximum is 4096")
    assert compile_one(big, max_direct_response_body_size_bytes=8192)
    (p,) = problems_of(one_route({"match": {"prefix": "/"}, "direct_response": {
        "status": 200, "body": {"filename": "/etc/passwd"}}}))
    assert p.endswith("direct_response.body.filename: field not supported by pistio")


def test_route_timeout_defaults_and_retry_defaults():
    action = only_route(compile_one({"match": {"prefix": "/"}, "route": {
        "cluster": "c", "retry_policy": {"retry_on": "5xx"}, "idle_timeout": "0s"}})).action
    assert action.timeout == 15.0  # Envoy's default route timeout
    assert action.idle_timeout == 0.0  # disabled, not unset
    retry = action.retry_policy
    assert retry.num_retries == 1
    assert (retry.base_interval, retry.max_interval) == (0.025, 0.25)
    assert retry.host_selection_retry_max_attempts == 1
    action = only_route(compile_one({"match": {"prefix": "/"}, "route": {
        "cluster": "c", "retry_policy": {"retry_back_off": {"base_interval": "0.1s"}}}})).action
    assert (action.retry_policy.base_interval, action.retry_policy.max_interval) == (0.1, 1.0)


def test_virtual_host_retry_policy_applies_unless_the_route_has_one():
    t = RouteTable.compile(parse({"name": "x", "virtual_hosts": [{
        "name": "vh", "domains": ["*"], "retry_policy": {"retry_on": "reset", "num_retries": 4},
        "routes": [
            {"match": {"prefix": "/own"}, "route": {"cluster": "c",
                                                    "retry_policy": {"retry_on": "5xx"}}},
            FWD,
        ]}]}))
    own, inherited = t.virtual_hosts[0].routes
    assert own.action.retry_policy.num_retries == 1
    assert inherited.action.retry_policy.num_retries == 4


# --- redirects and rewrites ------------------------------------------------------------------


def location(redirect: dict, path: str, authority: str = "h.com", match: dict | None = None,
             scheme: str = "http") -> str:
    route = only_route(compile_one({"match": match or {"prefix": "/"}, "redirect": redirect}))
    return redirect_location(route, RequestView.of("GET", path, authority, scheme=scheme))


def test_redirect_forms():
    assert location({"https_redirect": True}, "/a?b", "h.com:80") == "https://h.com/a?b"
    assert location({"https_redirect": True}, "/a", "h.com:8080") == "https://h.com:8080/a"
    assert location({"host_redirect": "n.com", "port_redirect": 8443}, "/a",
                    "h.com:80") == "http://n.com:8443/a"
    assert location({"port_redirect": 8443}, "/a", "h.com:80") == "http://h.com:8443/a"
    assert location({"path_redirect": "/new", "strip_query": True}, "/a?x=1") == "http://h.com/new"
    assert location({"path_redirect": "/new"}, "/a?x=1") == "http://h.com/new?x=1"
    assert location({"path_redirect": "/new?y=2", "strip_query": True},
                    "/a?x=1") == "http://h.com/new?y=2"
    assert location({"prefix_rewrite": "/v2"}, "/v1/x?q", match={"prefix": "/v1"}
                    ) == "http://h.com/v2/x?q"
    assert location({"regex_rewrite": {"pattern": {"regex": "^/a/(.*)$"},
                                       "substitution": "/b/\\1"}},
                    "/a/x?q") == "http://h.com/b/x?q"
    assert location({"scheme_redirect": "https"}, "/", "[::1]:80") == "https://[::1]/"


def test_redirect_response_codes():
    for code, status in (("FOUND", 302), ("SEE_OTHER", 303), ("TEMPORARY_REDIRECT", 307),
                         ("PERMANENT_REDIRECT", 308)):
        route = only_route(compile_one({"match": {"prefix": "/"},
                                        "redirect": {"response_code": code}}))
        assert route.redirect.response_code == status
    assert only_route(compile_one({"match": {"prefix": "/"},
                                   "redirect": {}})).redirect.response_code == 301


def rewrite(match: dict, action: dict, path: str) -> str | None:
    return rewritten_path(only_route(compile_one({"match": match,
                                                  "route": {"cluster": "c", **action}})), path)


def test_prefix_rewrite_replaces_the_matched_part():
    assert rewrite({"prefix": "/api/"}, {"prefix_rewrite": "/"}, "/api/v1?x") == "/v1?x"
    assert rewrite({"prefix": "/API", "case_sensitive": False}, {"prefix_rewrite": "/n"},
                   "/api/x") == "/n/x"
    assert rewrite({"path": "/old"}, {"prefix_rewrite": "/new"}, "/old?q=1") == "/new?q=1"
    # With a regex match the whole path (not the query) is the matched part.
    assert rewrite({"safe_regex": {"regex": "/r/.*"}}, {"prefix_rewrite": "/s"},
                   "/r/x?y") == "/s?y"
    assert rewrite({"prefix": "/"}, {}, "/x") is None


def test_regex_rewrite_replaces_every_match_and_keeps_the_query():
    action = {"regex_rewrite": {"pattern": {"regex": "o"}, "substitution": "0"}}
    assert rewrite({"prefix": "/"}, action, "/foo/boo?o=o") == "/f00/b00?o=o"
    (p,) = problems_of(one_route({"match": {"prefix": "/"}, "route": {
        "cluster": "c", "regex_rewrite": {"pattern": {"regex": "(a)"}, "substitution": "\\2"}}}))
    assert p.endswith("refers to group 2, the pattern has 1")


# --- header mutation order, per-filter precedence ----------------------------------------------


def test_header_mutation_levels_in_envoy_order():
    def config(most_specific: bool) -> dict:
        return {
            "name": "x",
            "most_specific_header_mutations_wins": most_specific,
            "request_headers_to_add": [{"header": {"key": "x-l", "value": "config"},
                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
            "virtual_hosts": [{
                "name": "vh", "domains": ["*"],
                "request_headers_to_add": [{"header": {"key": "x-l", "value": "vhost"},
                                            "append": False}],
                "routes": [{"match": {"prefix": "/"},
                            "request_headers_to_add": [
                                {"header": {"key": "x-l", "value": "route"},
                                 "append_action": "ADD_IF_ABSENT", "keep_empty_value": True}],
                            "route": {"weighted_clusters": {"clusters": [
                                {"name": "a", "weight": 1, "request_headers_to_add": [
                                    {"header": {"key": "x-l", "value": "cluster"}}]}]}}}],
            }],
        }

    route = only_route(RouteTable.compile(parse(config(False))))
    cluster = route.action.weighted_clusters.clusters[0]
    levels = route.request_header_mutations(cluster)
    assert [m.add[0].value for m in levels] == ["cluster", "route", "vhost", "config"]
    assert [m.add[0].action for m in levels] == [
        AppendAction.APPEND_IF_EXISTS_OR_ADD, AppendAction.ADD_IF_ABSENT,
        AppendAction.OVERWRITE_IF_EXISTS_OR_ADD, AppendAction.OVERWRITE_IF_EXISTS_OR_ADD]
    assert levels[1].add[0].keep_empty_value is True
    route = only_route(RouteTable.compile(parse(config(True))))
    cluster = route.action.weighted_clusters.clusters[0]
    assert [m.add[0].value for m in route.request_header_mutations(cluster)] == [
        "config", "vhost", "route", "cluster"]


def test_most_specific_per_filter_config_wins_and_disabled_is_none():
    vh_fault = fault_pb2.HTTPFault()
    vh_fault.abort.http_status = 503
    route_fault = fault_pb2.HTTPFault()
    route_fault.abort.http_status = 418
    cfg = parse({"name": "x", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [
        {"match": {"prefix": "/r"}, "route": {"cluster": "c"}},
        {"match": {"prefix": "/off"}, "route": {"cluster": "c"}},
        FWD]}]})
    vh = cfg.virtual_hosts[0]
    vh.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(vh_fault))
    vh.routes[0].typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(route_fault))
    vh.routes[1].typed_per_filter_config[FAULT_FILTER].CopyFrom(
        pack(rc.FilterConfig(disabled=True)))
    own, off, inherited = RouteTable.compile(cfg).virtual_hosts[0].routes
    assert isinstance(own.filter_config(FAULT_FILTER), HttpFault)
    assert own.filter_config(FAULT_FILTER).abort.http_status == 418
    assert off.filter_config(FAULT_FILTER) is None
    assert inherited.filter_config(FAULT_FILTER).abort.http_status == 503
    # An abort without a percentage never fires (Envoy's 0/100 default).
    assert inherited.filter_config(FAULT_FILTER).abort.fraction.percent == 0.0
