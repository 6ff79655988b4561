"""Which Telemetry resources apply to a proxy: root namespace, then namespace, then workload
(selector or targetRefs), the oldest winning among namespace-wide ones (Istio's
``applicableTelemetries``)."""

from __future__ import annotations

import logging

import pytest

from pistio.pilot.model.proxy import parse_node_id
from pistio.pilot.telemetry import resolver
from pistio.pilot.telemetry.resolver import applicable_telemetry
from tests.unit.pilot.telemetry.helpers import proxy, push_with, telemetry

SELECT_REVIEWS = "  selector:\n    matchLabels: {app: reviews}\n"
GATEWAY_REFS = (
    "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: ingress}\n"
)


def test_root_then_namespace_then_workload() -> None:
    push = push_with(
        telemetry("mesh-default", "istio-system")
        + telemetry("ns-default", "default")
        + telemetry("reviews", "default", SELECT_REVIEWS + "  tracing: []\n")
        + telemetry("elsewhere", "other")
    )
    assert applicable_telemetry(push, proxy("reviews", labels={"app": "reviews"})).key == (
        "istio-system/mesh-default", "default/ns-default", "default/reviews",
    )
    # productpage is not selected; a proxy of another namespace sees its own namespace's.
    assert applicable_telemetry(push, proxy("productpage")).key == (
        "istio-system/mesh-default", "default/ns-default",
    )
    assert applicable_telemetry(push, proxy("x", "other")).key == (
        "istio-system/mesh-default", "other/elsewhere",
    )


def test_root_namespace_selector_applies_only_in_the_root_namespace() -> None:
    push = push_with(telemetry("reviews", "istio-system", SELECT_REVIEWS))
    assert applicable_telemetry(push, proxy("reviews", labels={"app": "reviews"})).key == ()
    gateway = proxy("reviews", "istio-system", labels={"app": "reviews"})
    assert applicable_telemetry(push, gateway).key == ("istio-system/reviews",)


def test_root_namespace_follows_the_mesh_config() -> None:
    push = push_with(telemetry("mesh", "mesh-root") + telemetry("old-root", "istio-system"),
                     mesh_yaml="rootNamespace: mesh-root\n")
    assert applicable_telemetry(push, proxy()).key == ("mesh-root/mesh",)


def test_oldest_namespace_wide_telemetry_wins_and_is_reported(caplog) -> None:
    resolver._warned.clear()
    push = push_with(
        telemetry("newer", "default", created="2024-05-02T00:00:00Z")
        + telemetry("older", "default", created="2024-05-01T00:00:00Z")
        + telemetry("a-same-time", "default", created="2024-05-02T00:00:00Z")
    )
    with caplog.at_level(logging.WARNING, logger="pistio.discovery.telemetry"):
        assert applicable_telemetry(push, proxy()).key == ("default/older",)
    (record,) = [r for r in caplog.records if "more than one Telemetry" in r.message]
    assert "older (the oldest) applies, a-same-time, newer ignored" in record.message


def test_every_selecting_telemetry_applies_oldest_first() -> None:
    push = push_with(
        telemetry("b", "default", SELECT_REVIEWS, created="2024-05-01T00:00:00Z")
        + telemetry("a", "default", "  selector:\n    matchLabels: {version: v1}\n",
                    created="2024-05-02T00:00:00Z")
    )
    p = proxy("reviews", labels={"app": "reviews", "version": "v1"})
    assert applicable_telemetry(push, p).key == ("default/b", "default/a")


@pytest.mark.parametrize(
    ("labels", "applies"),
    [
        ({"gateway.networking.k8s.io/gateway-name": "ingress"}, True),
        ({"gateway.networking.k8s.io/gateway-name": "other"}, False),
        ({"app": "ingress"}, False),
    ],
)
def test_target_refs_select_gateways_by_name(labels: dict[str, str], applies: bool) -> None:
    push = push_with(telemetry("gw", "default", GATEWAY_REFS))
    gateway = parse_node_id(
        "router~10.244.9.8~ingress-0.default~default.svc.cluster.local",
        {"NAMESPACE": "default", "LABELS": labels},
    )
    assert applicable_telemetry(push, gateway).key == (("default/gw",) if applies else ())


def test_target_refs_do_not_make_a_namespace_wide_telemetry() -> None:
    push = push_with(telemetry("gw", "default", GATEWAY_REFS))
    assert applicable_telemetry(push, proxy()).key == ()


def test_settings_accumulate_in_order() -> None:
    push = push_with(
        telemetry("root", "istio-system", "  tracing:\n  - randomSamplingPercentage: 10\n")
        + telemetry("ns", "default", "  tracing:\n  - randomSamplingPercentage: 20\n"
                    "  accessLogging:\n  - providers: [{name: envoy}]\n")
        + telemetry("w", "default", SELECT_REVIEWS
                    + "  tracing:\n  - randomSamplingPercentage: 30\n")
    )
    applied = applicable_telemetry(push, proxy("reviews", labels={"app": "reviews"}))
    assert [t.random_sampling_percentage for t in applied.tracing] == [10, 20, 30]
    assert [[p.name for p in group[0].providers] for group in applied.logging] == [["envoy"]]
