"""Unit tests for the shared validation helpers in pistio.config.validation.common."""

from __future__ import annotations

import pytest

from pistio.api.base import Duration
from pistio.config.validation import common as c


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10s", None),
        ("1.5s", None),
        ("100ms", None),
        ("1ms", None),
        ("1h30m", None),
        ("0s", "duration must be greater than 1ms"),
        ("999us", "duration must be greater than 1ms"),
        ("-1s", "duration must be greater than 1ms"),
        ("1.0005s", "only durations to ms precision are supported"),
        ("1500us", "only durations to ms precision are supported"),
    ],
)
def test_validate_duration(text: str, expected: str | None) -> None:
    assert c.validate_duration(Duration(text)) == expected


def test_validate_port() -> None:
    assert c.validate_port(1) is None
    assert c.validate_port(65535) is None
    assert c.validate_port(0) == "port number 0 must be in the range 1..65535"
    assert c.validate_port(65536) == "port number 65536 must be in the range 1..65535"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("reviews", None),
        ("reviews.default.svc.cluster.local", None),
        ("istio.io.", None),
        ("", "empty domain name not allowed"),
        ("a" * 256, f'domain name "{"a" * 256}" too long (max 255)'),
        ("foo.123", 'domain name "foo.123" invalid (top level domain "123" cannot be all-numeric)'),
        ("foo_bar.com", 'domain name "foo_bar.com" invalid (label "foo_bar" invalid)'),
        ("*.foo.com", 'domain name "*.foo.com" invalid (label "*" invalid)'),
    ],
)
def test_validate_fqdn(host: str, expected: str | None) -> None:
    assert c.validate_fqdn(host) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("*", None),
        ("*.foo.com", None),
        ("*-foo.com", None),
        ("foo.com", None),
        ("foo.*.com", 'domain name "*.com" invalid (label "*" invalid)'),
        ("fo*o.com", 'domain name "fo*o.com" invalid (label "fo*o" invalid)'),
        ("", "empty domain name not allowed"),
    ],
)
def test_validate_wildcard_domain(host: str, expected: str | None) -> None:
    assert c.validate_wildcard_domain(host) == expected


def test_validate_ip_or_cidr() -> None:
    assert c.validate_ip_or_cidr("10.0.0.1") is None
    assert c.validate_ip_or_cidr("10.0.0.0/8") is None
    assert c.validate_ip_or_cidr("2001:db8::/32") is None
    assert c.validate_ip_or_cidr("10.0.0.0/33") == '"10.0.0.0/33" is not a valid CIDR block'
    assert c.validate_ip_or_cidr("host") == '"host" is not a valid IP address'


def test_validate_ip_address_and_unix_address() -> None:
    assert c.validate_ip_address("::1") is None
    assert c.validate_ip_address("1.2.3") == "1.2.3 is not a valid IP"
    assert c.validate_unix_address("/var/run/a.sock") is None
    assert c.validate_unix_address("@abstract") is None
    assert c.validate_unix_address("") == "unix address must not be empty"
    assert c.validate_unix_address("rel/a.sock") == "rel/a.sock is not an absolute path to a file"
    assert c.validate_unix_address("/var/run/") == "/var/run/ is not an absolute path to a file"


def test_validate_labels() -> None:
    assert c.validate_labels({"app": "reviews", "example.com/tier": "front-end"}) == []
    assert c.validate_labels({"app": ""}) == []
    assert c.validate_labels({"bad key": "v"}) == ['invalid tag key: "bad key"']
    assert c.validate_labels({"k": "bad value"}) == ['invalid tag value: "bad value"']
    assert c.validate_labels({"a/b/c": "v"}) == ['invalid tag key: "a/b/c"']


def test_validate_regex_and_re2() -> None:
    assert c.validate_regex("^/api/v[0-9]+$") is None
    assert c.validate_regex("(abc") is not None
    assert (
        c.re2_error("a(?=b)") == "error parsing regexp: invalid or unsupported Perl syntax: `(?=`"
    )
    assert (
        c.re2_error(r"(a)\1") == "error parsing regexp: invalid or unsupported Perl syntax: `\\1`"
    )
    assert c.re2_error("[a-z]+") is None
    assert c.validate_string_regexp("(x", "uri") == (
        '"uri": error parsing regexp: missing ), unterminated subpattern: `(x`; ' + c.RE2_HINT
    )
    assert c.validate_string_regexp("a" * 1025, "uri") == (
        '"uri": regex is too large, max length allowed is 1024'
    )


def test_protocols() -> None:
    assert c.parse_protocol("http") == "HTTP"
    assert c.parse_protocol("GRPC-WEB") == "GRPC-Web"
    assert c.parse_protocol("ftp") is None
    assert c.is_http_protocol("grpc") and not c.is_http_protocol("TCP")
    assert c.is_tls_protocol("HTTPS") and c.is_tls_protocol("tls")
    assert c.is_tcp_protocol("MONGO") and not c.is_tcp_protocol("HTTP")
    assert c.validate_protocol("") is None
    assert c.validate_protocol("SCTP") == "unsupported protocol: SCTP"
    assert c.validate_port_name("http-web") is None
    assert c.validate_port_name("Http_Web") == "invalid port name: Http_Web"


def test_namespace_slash_hostname() -> None:
    assert c.validate_namespace_slash_hostname("ns/foo.com", is_gateway=False) == []
    assert c.validate_namespace_slash_hostname("~/*", is_gateway=False) == []
    assert c.validate_namespace_slash_hostname("*/*", is_gateway=True) == []
    assert c.validate_namespace_slash_hostname("foo.com", is_gateway=True) == []
    assert c.validate_namespace_slash_hostname("10.0.0.1", is_gateway=True) == []
    assert c.validate_namespace_slash_hostname("foo.com", is_gateway=False) == [
        "host must be of form namespace/dnsName"
    ]
    assert c.validate_namespace_slash_hostname("~/foo.com", is_gateway=True) == [
        'invalid namespace value "~" in gateway'
    ]
    assert c.validate_namespace_slash_hostname("ns/reviews", is_gateway=False) == [
        "short names (non FQDN) are not allowed"
    ]


def test_host_matching() -> None:
    assert c.host_matches("*.foo.com", "bar.foo.com")
    assert c.host_matches("*", "anything.com")
    assert c.host_matches("*.com", "*.foo.com")
    assert not c.host_matches("a.com", "b.com")
    assert c.host_subset_of("a.foo.com", "*.foo.com")
    assert c.host_subset_of("*.a.foo.com", "*.foo.com")
    assert not c.host_subset_of("*.foo.com", "*.a.foo.com")
    assert not c.host_subset_of("*.foo.com", "a.foo.com")
    assert c.validate_partial_wildcard("*.foo.com") is None
    assert c.validate_partial_wildcard("*") is None
    assert c.validate_partial_wildcard("foo*.com") == 'partial wildcard "foo*.com" not allowed'


def test_validate_export_to() -> None:
    assert c.validate_export_to("ns", [".", "other"]) == []
    assert c.validate_export_to("ns", ["ns", "."]) == [
        (1, "duplicate entries in exportTo: . and current namespace ns")
    ]
    assert c.validate_export_to("ns", ["~"]) == [
        (0, "exportTo ~ (none) is not allowed for Istio configuration objects")
    ]
    assert c.validate_export_to("ns", ["~"], is_service_entry=True) == []
    assert c.validate_export_to("ns", ["*", "a"]) == [
        (None, "cannot have both public (*) and non-public exportTo values for a resource")
    ]
    assert c.validate_export_to("ns", ["a"], is_destination_rule_with_selector=True) == [
        (
            None,
            "destination rule with workload selector cannot have exportTo beyond current namespace",
        )
    ]


def test_selectors_and_target_refs() -> None:
    assert c.validate_selector_labels({"app": "a"}) == []
    assert c.validate_selector_labels({"app": "a*"}) == [
        ("app", 'wildcard is not supported in selector: "app=a*"')
    ]
    allowed = (("", "Service"), ("gateway.networking.k8s.io", "Gateway"))
    assert c.validate_target_ref("", "Service", "svc", "", allowed) == []
    assert c.validate_target_ref("core", "Service", "svc", "", allowed) == []
    assert c.validate_target_ref("apps", "Deployment", "", "x", allowed) == [
        ("name", "targetRef name must be set"),
        (
            "namespace",
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        ),
        (
            "kind",
            "targetRef must be to one of [core/Service, gateway.networking.k8s.io/Gateway] "
            "but was apps/Deployment",
        ),
    ]


def test_headers() -> None:
    assert c.validate_http_header_name("x-request-id") is None
    assert c.validate_http_header_name("") == "header name cannot be empty"
    assert c.validate_http_header_name("x y") == "header name x y is not a valid header name"
    assert c.validate_http_header_value("plain") is None
    assert c.validate_http_header_value("%HOSTNAME%") is None
    assert c.validate_http_header_value("100%%") is None
    assert c.validate_http_header_value('%REQ(["x-foo"])%') is None
    assert c.validate_http_header_value("abc%") == (
        "header value configuration: invalid header configuration. Un-escaped %"
    )
    assert c.validate_http_header_value("a\nb") == "header value configuration a\nb is invalid"


def test_percentages() -> None:
    assert c.validate_percent(100) is None
    assert c.validate_percent(101) == "percentage 101 is not in range 0..100"
    assert c.validate_percentage(0.0) is None
    assert c.validate_percentage(0.0001) is None
    assert c.validate_percentage(100.0) is None
    assert (
        c.validate_percentage(100.5)
        == "percentage 100.5 is neither 0.0, nor in range [0.0001, 100.0]"
    )
    assert (
        c.validate_percentage(0.00001)
        == "percentage 1e-05 is neither 0.0, nor in range [0.0001, 100.0]"
    )
    assert c.go_float(50.0) == "50"
    assert c.go_float(0.25) == "0.25"


def test_dns_labels() -> None:
    assert c.is_dns1123_label("reviews-v1")
    assert not c.is_dns1123_label("-bad")
    assert not c.is_dns1123_label("a" * 64)
    assert c.is_wildcard_dns1123_label("*")
    assert c.is_wildcard_dns1123_label("*-foo")
    assert not c.is_wildcard_dns1123_label("fo*o")
    assert c.is_k8s_subdomain("a.b-c")
    assert not c.is_k8s_subdomain("A.b")
