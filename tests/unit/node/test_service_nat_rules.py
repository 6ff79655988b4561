"""kube-proxy-like service DNAT rules for pods without a sidecar (pure text)."""

from __future__ import annotations

import pytest

from pistio.node.network.service_nat import ServiceNat, service_nat_rules


def _tables(text: str) -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = line[1:]
            tables[current] = []
        elif line == "COMMIT":
            current = None
        elif line:
            assert current is not None, line
            tables[current].append(line)
    return tables


def test_equal_probability_dnat_like_kube_proxy() -> None:
    svc = ServiceNat("10.96.0.10", 80, "TCP",
                     (("10.88.0.2", 8080), ("10.88.0.3", 8080), ("10.88.0.4", 9090)))
    nat = _tables(service_nat_rules([svc]))["nat"]
    assert nat[:2] == [":PISTIO-SERVICES - [0:0]", "-A OUTPUT -j PISTIO-SERVICES"]
    match = ("-A PISTIO-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 "
             "-m comment --comment 10.96.0.10:80/tcp")
    assert nat[2:] == [
        f"{match} -m statistic --mode random --probability 0.3333333333 "
        "-j DNAT --to-destination 10.88.0.2:8080",
        f"{match} -m statistic --mode random --probability 0.5000000000 "
        "-j DNAT --to-destination 10.88.0.3:8080",
        f"{match} -j DNAT --to-destination 10.88.0.4:9090",
    ]


def test_udp_single_endpoint_and_empty_service_rejects() -> None:
    tables = _tables(service_nat_rules([
        ServiceNat("10.96.0.53", 53, "UDP", (("10.88.0.9", 5353),)),
        ServiceNat("10.96.0.11", 9080, "TCP", ()),
    ]))
    assert tables["nat"][2:] == [
        "-A PISTIO-SERVICES -d 10.96.0.53/32 -p udp -m udp --dport 53 -m comment --comment "
        "10.96.0.53:53/udp -j DNAT --to-destination 10.88.0.9:5353"]
    # No endpoints: no DNAT; the filter table refuses the connection as kube-proxy does.
    assert tables["filter"] == [
        ":PISTIO-SERVICES - [0:0]", "-A OUTPUT -j PISTIO-SERVICES",
        "-A PISTIO-SERVICES -d 10.96.0.11/32 -p tcp -m tcp --dport 9080 -m comment "
        "--comment 10.96.0.11:9080/tcp -j REJECT --reject-with icmp-port-unreachable"]


def test_no_services_still_flushes_the_chain_and_jumps_can_be_left_out() -> None:
    tables = _tables(service_nat_rules([], jump=False))
    assert tables == {"nat": [":PISTIO-SERVICES - [0:0]"],
                      "filter": [":PISTIO-SERVICES - [0:0]"]}


@pytest.mark.parametrize("svc", [
    ServiceNat("10.96.0.1", 80, "SCTP", ()),
    ServiceNat("10.96.0.1", 0, "TCP", ()),
    ServiceNat("10.96.0.1", 80, "TCP", (("10.88.0.2", 70000),)),
    ServiceNat("not-an-ip", 80, "TCP", ()),
])
def test_bad_service_is_rejected(svc: ServiceNat) -> None:
    with pytest.raises(ValueError):
        service_nat_rules([svc])
