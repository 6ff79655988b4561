"""Istio's istio-iptables capture rules generated from a pod's annotations (pure text)."""

from __future__ import annotations

import pytest

from pistio.node.network.capture import CaptureSpec, capture_rules


def _rules(spec: CaptureSpec) -> list[str]:
    text = capture_rules(spec)
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT" and text.endswith("\n")
    return [line for line in lines if line.startswith("-A ")]


def _chain(rules: list[str], chain: str) -> list[str]:
    return [r.removeprefix(f"-A {chain} ") for r in rules if r.startswith(f"-A {chain} ")]


def test_default_capture_is_istios_order() -> None:
    text = capture_rules(CaptureSpec())
    for chain in ("ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"):
        assert f":{chain} - [0:0]" in text.splitlines()
    rules = _rules(CaptureSpec())
    assert _chain(rules, "PREROUTING") == ["-p tcp -j ISTIO_INBOUND"]
    assert _chain(rules, "OUTPUT") == ["-j ISTIO_OUTPUT"]
    assert _chain(rules, "ISTIO_REDIRECT") == ["-p tcp -j REDIRECT --to-ports 15001"]
    assert _chain(rules, "ISTIO_IN_REDIRECT") == ["-p tcp -j REDIRECT --to-ports 15006"]
    assert _chain(rules, "ISTIO_INBOUND") == [
        "-p tcp --dport 15008 -j RETURN",
        "-p tcp --dport 15090 -j RETURN",
        "-p tcp --dport 15021 -j RETURN",
        "-p tcp --dport 15020 -j RETURN",
        "-p tcp -j ISTIO_IN_REDIRECT",
    ]
    assert _chain(rules, "ISTIO_OUTPUT") == [
        "-o lo -s 127.0.0.6/32 -j RETURN",
        "-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 "
        "-j ISTIO_IN_REDIRECT",
        "-o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-m owner --uid-owner 1337 -j RETURN",
        "-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 "
        "-j ISTIO_IN_REDIRECT",
        "-o lo -m owner ! --gid-owner 1337 -j RETURN",
        "-m owner --gid-owner 1337 -j RETURN",
        "-d 127.0.0.1/32 -j RETURN",
        "-j ISTIO_REDIRECT",
    ]


def test_annotations_shape_the_rules() -> None:
    spec = CaptureSpec.from_annotations({
        "traffic.sidecar.istio.io/excludeInboundPorts": "22, 15020",
        "traffic.sidecar.istio.io/excludeOutboundPorts": "3306,6379",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.1.0.0/16,fd00::/8",
        "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8,192.168.1.7/24",
        "traffic.sidecar.istio.io/includeOutboundPorts": "9080",
        "sidecar.istio.io/interceptionMode": "REDIRECT",
    })
    assert spec.exclude_inbound_ports == (15090, 15021, 15020, 22)
    assert spec.include_outbound_ip_ranges == "10.0.0.0/8,192.168.1.0/24"
    rules = _rules(spec)
    assert "-p tcp --dport 22 -j RETURN" in _chain(rules, "ISTIO_INBOUND")
    out = _chain(rules, "ISTIO_OUTPUT")
    # Port exclusions come first, before the 127.0.0.6 return, for TCP and UDP.
    assert out[:5] == [
        "-p tcp --dport 3306 -j RETURN", "-p udp --dport 3306 -j RETURN",
        "-p tcp --dport 6379 -j RETURN", "-p udp --dport 6379 -j RETURN",
        "-o lo -s 127.0.0.6/32 -j RETURN",
    ]
    # After the loopback return: excluded ranges (IPv4 only), included ports, included ranges.
    assert out[out.index("-d 127.0.0.1/32 -j RETURN"):] == [
        "-d 127.0.0.1/32 -j RETURN",
        "-d 10.1.0.0/16 -j RETURN",
        "-p tcp --dport 9080 -j ISTIO_REDIRECT",
        "-d 10.0.0.0/8 -j ISTIO_REDIRECT",
        "-d 192.168.1.0/24 -j ISTIO_REDIRECT",
    ]
    assert "-j ISTIO_REDIRECT" not in out


def test_include_inbound_ports_list_and_empty() -> None:
    rules = _rules(CaptureSpec.from_annotations(
        {"traffic.sidecar.istio.io/includeInboundPorts": "9080,8080"}))
    assert _chain(rules, "ISTIO_INBOUND") == [
        "-p tcp --dport 15008 -j RETURN",
        "-p tcp --dport 9080 -j ISTIO_IN_REDIRECT",
        "-p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
    ]
    # "" turns inbound capture off: no PREROUTING jump at all.
    rules = _rules(CaptureSpec.from_annotations(
        {"traffic.sidecar.istio.io/includeInboundPorts": ""}))
    assert _chain(rules, "PREROUTING") == []
    assert _chain(rules, "ISTIO_INBOUND") == ["-p tcp --dport 15008 -j RETURN"]


def test_empty_include_ranges_capture_no_outbound() -> None:
    out = _chain(_rules(CaptureSpec.from_annotations(
        {"traffic.sidecar.istio.io/includeOutboundIPRanges": ""})), "ISTIO_OUTPUT")
    assert out[-1] == "-d 127.0.0.1/32 -j RETURN"
    assert not [r for r in out if r.endswith("-j ISTIO_REDIRECT")]


def test_included_loopback_range_keeps_lo_traffic() -> None:
    out = _chain(_rules(CaptureSpec.from_annotations(
        {"traffic.sidecar.istio.io/includeOutboundIPRanges": "127.0.0.1/32"})), "ISTIO_OUTPUT")
    assert "-o lo -m owner ! --uid-owner 1337 -j RETURN" not in out
    assert "-o lo -m owner ! --gid-owner 1337 -j RETURN" not in out
    assert out[-1] == "-d 127.0.0.1/32 -j ISTIO_REDIRECT"


@pytest.mark.parametrize(("annotation", "value"), [
    ("traffic.sidecar.istio.io/includeInboundPorts", "80,http"),
    ("traffic.sidecar.istio.io/excludeInboundPorts", "70000"),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", "0"),
    ("traffic.sidecar.istio.io/includeOutboundPorts", "-1"),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", "10.0.0.0/33"),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "not-a-cidr"),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "*"),
    ("sidecar.istio.io/interceptionMode", "TPROXY"),
    ("sidecar.istio.io/interceptionMode", "bogus"),
])
def test_bad_annotation_names_it(annotation: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"annotation {annotation}:"):
        CaptureSpec.from_annotations({annotation: value})


def test_uid_gid_and_ports_are_configurable() -> None:
    rules = _rules(CaptureSpec(proxy_uid=2000, proxy_gid=2001, inbound_capture_port=16006,
                               outbound_capture_port=16001))
    assert _chain(rules, "ISTIO_REDIRECT") == ["-p tcp -j REDIRECT --to-ports 16001"]
    assert _chain(rules, "ISTIO_IN_REDIRECT") == ["-p tcp -j REDIRECT --to-ports 16006"]
    out = _chain(rules, "ISTIO_OUTPUT")
    assert "-m owner --uid-owner 2000 -j RETURN" in out
    assert "-m owner --gid-owner 2001 -j RETURN" in out
