"""Envoy's documented route matching: virtual host domains, path specifiers, header, query,
gRPC and runtime-fraction matchers, compiled from real ``RouteConfiguration`` protos."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2, range_pb2
from google.protobuf import json_format

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.route_match import (
    RequestView,
    compile_header_matcher,
    compile_re2,
    parse_query_first_values,
    strip_query_and_fragment,
)
from pistio.proxy.config.route_table import RouteTable


def table(config: dict) -> RouteTable:
    return RouteTable.compile(json_format.ParseDict(config, route_pb2.RouteConfiguration()))


def vhosts(*domain_lists: list[str], ignore_port: bool = False) -> RouteTable:
    return table({
        "name": "t",
        "ignore_port_in_host_matching": ignore_port,
        "virtual_hosts": [
            {"name": f"vh{i}", "domains": d,
             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": f"c{i}"}}]}
            for i, d in enumerate(domain_lists)
        ],
    })


def selected(t: RouteTable, authority: str) -> str | None:
    vh = t.select_virtual_host(authority)
    return vh.name if vh else None


# --- virtual host selection ------------------------------------------------------------------


def test_domain_search_order_exact_suffix_prefix_then_star():
    t = vhosts(["*"], ["foo.*"], ["*.foo.com"], ["www.foo.com"], ["*-bar.foo.com"], ["foo-*"])
    assert selected(t, "www.foo.com") == "vh3"
    assert selected(t, "api.foo.com") == "vh2"
    # The longest suffix wildcard wins over a shorter one.
    assert selected(t, "baz-bar.foo.com") == "vh4"
    # Suffix wildcards beat prefix wildcards.
    assert selected(t, "foo.foo.com") == "vh2"
    assert selected(t, "foo.org") == "vh1"
    # Longest prefix first: "foo-" (4) and "foo." (4) are different keys.
    assert selected(t, "foo-x") == "vh5"
    assert selected(t, "bar.org") == "vh0"


def test_wildcards_never_match_an_empty_part():
    t = vhosts(["*.foo.com"], ["*-bar.foo.com"], ["foo.*"])
    assert selected(t, ".foo.com") is None
    # "*-bar.foo.com" needs a non-empty part; "*.foo.com" takes "-bar" as its part.
    assert selected(t, "-bar.foo.com") == "vh0"
    assert selected(t, "foo.") is None


def test_host_matching_is_case_insensitive():
    t = vhosts(["WWW.Foo.com"], ["*.Bar.com"])
    assert selected(t, "www.foo.com") == "vh0"
    assert selected(t, "WWW.FOO.COM") == "vh0"
    assert selected(t, "API.bar.COM") == "vh1"


def test_port_is_part_of_the_host_unless_ignored():
    t = vhosts(["reviews"], ["reviews:9080"])
    assert selected(t, "reviews") == "vh0"
    assert selected(t, "reviews:9080") == "vh1"
    assert selected(t, "reviews:80") is None
    ignoring = vhosts(["reviews"], ["other:9080"], ignore_port=True)
    assert selected(ignoring, "reviews:9080") == "vh0"
    assert selected(ignoring, "REVIEWS:1") == "vh0"
    # Envoy strips the port from the request, never from the configured domains.
    assert selected(ignoring, "other:9080") is None


def test_port_stripping_keeps_ipv6_literals():
    t = vhosts(["[::1]"], ["10.96.0.12"], ignore_port=True)
    assert selected(t, "[::1]:9080") == "vh0"
    assert selected(t, "[::1]") == "vh0"
    assert selected(t, "10.96.0.12:9080") == "vh1"


def test_wildcard_with_port_when_port_is_not_ignored():
    t = vhosts(["*.foo.com:8080"], ["*"])
    assert selected(t, "a.foo.com:8080") == "vh0"
    assert selected(t, "a.foo.com") == "vh1"


def test_duplicate_domains_and_two_stars_are_rejected():
    with pytest.raises(ConfigError) as e:
        vhosts(["a.com", "*"], ["A.com"], ["*"])
    text = str(e.value)
    assert "duplicate entry of domain 'a.com'" in text
    assert "only a single wildcard domain" in text
    assert len(e.value.problems) == 2


# --- path specifiers ----------------------------------------------------------------------


def routes(*route_dicts: dict) -> RouteTable:
    return table({"name": "t", "virtual_hosts": [
        {"name": "vh", "domains": ["*"], "routes": list(route_dicts)}]})


def r(match: dict, cluster: str) -> dict:
    return {"match": match, "route": {"cluster": cluster}}


def cluster_for(t: RouteTable, path: str = "/", method: str = "GET",
                headers: dict | None = None, authority: str = "h", rnd: int | None = None
                ) -> str | None:
    route = t.route(RequestView.of(method, path, authority, headers, random_value=rnd))
    return route.action.cluster if route and route.action else None


def test_routes_are_tried_in_order_first_match_wins():
    t = routes(r({"prefix": "/api"}, "api"), r({"path": "/api/exact"}, "exact"),
               r({"prefix": "/"}, "root"))
    assert cluster_for(t, "/api/exact") == "api"
    assert cluster_for(t, "/x") == "root"


def test_prefix_path_and_query_string():
    t = routes(r({"path": "/a"}, "exact"), r({"prefix": "/b"}, "prefix"))
    assert cluster_for(t, "/a?x=1") == "exact"  # the query is not part of the path
    assert cluster_for(t, "/a/") is None
    assert cluster_for(t, "/bcd?q") == "prefix"
    assert cluster_for(t, "/a#frag") == "exact"


def test_case_sensitive_default_and_off():
    t = routes(r({"prefix": "/Api"}, "cs"),
               r({"prefix": "/x", "case_sensitive": False}, "ci-prefix"),
               r({"path": "/Exact", "case_sensitive": False}, "ci-path"))
    assert cluster_for(t, "/Api/v1") == "cs"
    assert cluster_for(t, "/api/v1") is None
    assert cluster_for(t, "/X/y") == "ci-prefix"
    assert cluster_for(t, "/eXACT") == "ci-path"


def test_safe_regex_is_a_full_match_on_the_path_without_query():
    t = routes(r({"safe_regex": {"regex": "/c/[0-9]+"}}, "re"),
               r({"safe_regex": {"regex": "/Up"}, "case_sensitive": False}, "re-cs"))
    assert cluster_for(t, "/c/123") == "re"
    assert cluster_for(t, "/c/123?x=a") == "re"
    assert cluster_for(t, "/c/123/x") is None
    assert cluster_for(t, "/xc/1") is None
    # case_sensitive does not apply to regexes.
    assert cluster_for(t, "/up") is None


def test_path_separated_prefix_matches_whole_segments():
    t = routes(r({"path_separated_prefix": "/api"}, "sep"))
    assert cluster_for(t, "/api") == "sep"
    assert cluster_for(t, "/api/x") == "sep"
    assert cluster_for(t, "/api?x") == "sep"
    assert cluster_for(t, "/apix") is None
    with pytest.raises(ConfigError, match="path_separated_prefix"):
        routes(r({"path_separated_prefix": "/api/"}, "bad"))


# --- header matchers -------------------------------------------------------------------------


def hm(**fields) -> rc.HeaderMatcher:
    return json_format.ParseDict(fields, rc.HeaderMatcher())


def header_matches(matcher: rc.HeaderMatcher, headers: dict | None = None, **req) -> bool:
    compiled = compile_header_matcher(matcher, "m")
    return compiled.matches_request(RequestView.of(headers=headers, **req))


def test_string_match_kinds_and_ignore_case():
    assert header_matches(hm(name="x", string_match={"exact": "a"}), {"x": "a"})
    assert not header_matches(hm(name="x", string_match={"exact": "a"}), {"x": "A"})
    assert header_matches(hm(name="x", string_match={"exact": "a", "ignore_case": True}),
                          {"X": "A"})
    assert header_matches(hm(name="x", string_match={"prefix": "ab"}), {"x": "abc"})
    assert header_matches(hm(name="x", string_match={"suffix": "bc"}), {"x": "abc"})
    assert header_matches(hm(name="x", string_match={"contains": "B", "ignore_case": True}),
                          {"x": "abc"})
    assert header_matches(hm(name="x", string_match={"safe_regex": {"regex": r"\d{3}"}}),
                          {"x": "123"})
    assert not header_matches(hm(name="x", string_match={"safe_regex": {"regex": r"\d{3}"}}),
                              {"x": "1234"})


def test_repeated_headers_are_joined_with_commas():
    assert header_matches(hm(name="x", string_match={"exact": "a,b"}), {"x": ["a", "b"]})


def test_missing_header_never_matches_even_inverted():
    m = hm(name="x", string_match={"exact": "a"}, invert_match=True)
    assert not header_matches(m)
    assert header_matches(m, {"x": "b"})
    assert not header_matches(m, {"x": "a"})


def test_treat_missing_header_as_empty():
    m = hm(name="x", string_match={"exact": "d"}, invert_match=True,
           treat_missing_header_as_empty=True)
    assert header_matches(m)  # "" is not "d", inverted
    assert not header_matches(m, {"x": "d"})


def test_present_match_true_false_and_inverted():
    assert header_matches(hm(name="x", present_match=True), {"x": ""})
    assert not header_matches(hm(name="x", present_match=True))
    assert header_matches(hm(name="x", present_match=False))
    assert not header_matches(hm(name="x", present_match=False), {"x": "1"})
    assert header_matches(hm(name="x", present_match=True, invert_match=True))
    # No specifier at all is a presence check.
    assert header_matches(hm(name="x"), {"x": "v"})
    assert not header_matches(hm(name="x"))


def test_range_match_half_open_and_inverted():
    m = rc.HeaderMatcher(name="x", range_match=range_pb2.Int64Range(start=-10, end=0))
    assert header_matches(m, {"x": "-1"})
    assert header_matches(m, {"x": "-10"})
    assert not header_matches(m, {"x": "0"})
    assert not header_matches(m, {"x": "abc"})
    assert not header_matches(m, {"x": "-1.0"})
    assert header_matches(m, {"x": " -5 "})  # absl::SimpleAtoi trims whitespace
    inverted = rc.HeaderMatcher(name="x", range_match=range_pb2.Int64Range(start=-10, end=0),
                                invert_match=True)
    assert not header_matches(inverted, {"x": "-1"})
    assert header_matches(inverted, {"x": "5"})


def test_deprecated_direct_fields():
    assert header_matches(hm(name="x", exact_match="a"), {"x": "a"})
    assert header_matches(hm(name="x", prefix_match="a"), {"x": "ab"})
    assert header_matches(hm(name="x", suffix_match="b"), {"x": "ab"})
    assert header_matches(hm(name="x", contains_match="b"), {"x": "abc"})
    assert header_matches(hm(name="x", safe_regex_match={"regex": "a.c"}), {"x": "abc"})


def test_pseudo_headers_and_host():
    assert header_matches(hm(name=":method", string_match={"exact": "POST"}), method="POST")
    assert header_matches(hm(name=":authority", string_match={"prefix": "ratings"}),
                          authority="ratings:9080")
    assert header_matches(hm(name=":path", string_match={"exact": "/a?b"}), path="/a?b")
    assert header_matches(hm(name=":scheme", string_match={"exact": "https"}), scheme="https")
    # HTTP/1's Host is only :authority to Envoy: a "host" matcher never sees it.
    assert not header_matches(hm(name="host", present_match=True), {"host": "x"},
                              authority="x")


def test_header_names_are_case_insensitive():
    assert header_matches(hm(name="End-User", string_match={"exact": "jason"}),
                          {"end-user": "jason"})


# --- query parameters, gRPC, runtime fraction -----------------------------------------------


def test_query_parameters_first_value_and_presence():
    t = routes(
        r({"prefix": "/", "query_parameters": [
            {"name": "q", "string_match": {"exact": "1"}}, {"name": "p", "present_match": True},
        ]}, "both"),
        r({"prefix": "/", "query_parameters": [{"name": "flag"}]}, "flag"),
    )
    assert cluster_for(t, "/?q=1&p") == "both"
    assert cluster_for(t, "/?q=2&q=1&p=x") is None  # only the first value counts
    assert cluster_for(t, "/?q=1") is None
    assert cluster_for(t, "/?flag=") == "flag"
    assert cluster_for(t, "/?Flag=1") is None  # names are case-sensitive


def test_query_helpers():
    assert parse_query_first_values("/p?a=1&b&a=2&c=x=y#frag") == {"a": "1", "b": "", "c": "x=y"}
    assert strip_query_and_fragment("/p#f?x") == "/p"


def test_grpc_match():
    t = routes(r({"prefix": "/", "grpc": {}}, "grpc"), r({"prefix": "/"}, "http"))
    assert cluster_for(t, headers={"content-type": "application/grpc"}) == "grpc"
    assert cluster_for(t, headers={"content-type": "application/grpc+proto"}) == "grpc"
    assert cluster_for(t, headers={"content-type": "application/grpcx"}) == "http"
    assert cluster_for(t) == "http"


def test_runtime_fraction_uses_the_default_value():
    fraction = {"default_value": {"numerator": 30, "denominator": "HUNDRED"},
                "runtime_key": "routing.canary"}
    t = routes(r({"prefix": "/", "runtime_fraction": fraction}, "canary"),
               r({"prefix": "/"}, "stable"))
    assert cluster_for(t, rnd=29) == "canary"
    assert cluster_for(t, rnd=130) == "stable"
    assert percent_pb2.FractionalPercent.HUNDRED == 0


# --- RE2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern, text", [
    (r"[[:digit:]]+", "123"),
    (r"a{,2}", "a{,2}"),  # RE2 reads {,n} literally
    (r"\Qa.b\E", "a.b"),
    (r"(?i)ab", "AB"),
    (r"(?P<v>v[12])", "v2"),
    (r"x\z", "x"),
])
def test_re2_syntax_means_what_re2_means(pattern: str, text: str):
    assert compile_re2(pattern).fullmatch(text)


def test_re2_digit_class_is_ascii_only():
    assert compile_re2(r"\d").fullmatch("٣") is None


@pytest.mark.parametrize("pattern", [
    r"(a)\1", r"(?=a)", r"(?<!a)b", r"a*+", r"a**", r"\pL", r"a(?i)b", r"a{1001}", r"\Z",
    r"[a", r"(?#c)",
])
def test_re2_invalid_or_unsupported_patterns_nack(pattern: str):
    with pytest.raises(ConfigError) as e:
        routes(r({"safe_regex": {"regex": pattern}}, "c"))
    assert e.value.problems[0].startswith(
        "RouteConfiguration t: virtual_hosts[0].routes[0].match.safe_regex: invalid regex")


def test_string_matcher_protos_roundtrip_through_regex_matcher():
    m = rc.HeaderMatcher(name="x", string_match=string_pb2.StringMatcher(
        safe_regex=regex_pb2.RegexMatcher(regex="v[0-9]")))
    assert header_matches(m, {"x": "v1"})
