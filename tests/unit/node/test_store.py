"""The node's object store: kubectl apply/delete semantics, all-or-nothing per call."""

from __future__ import annotations

import pytest

from pistio.node.store import BatchError, Incoming, Store

VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
      "metadata": {"name": "reviews"},
      "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}
BAD_VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "broken"},
          "spec": {"hosts": ["reviews"],
                   "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]}}
SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"},
       "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]}}


def incoming(*docs: dict) -> list[Incoming]:
    return [Incoming(d, "test.yaml", i + 1) for i, d in enumerate(docs)]


def test_apply_creates_then_reports_unchanged_and_configured() -> None:
    store = Store()
    objs = store.check_apply(incoming(VS, SVC), "default")
    assert [what for _, what in store.apply(objs)] == ["created", "created"]
    assert store.objects[("VirtualService", "default", "reviews")].namespace == "default"
    again = store.check_apply(incoming(VS), "default")
    assert [what for _, what in store.apply(again)] == ["unchanged"]
    changed = {**VS, "spec": {**VS["spec"], "hosts": ["reviews", "ratings"]}}
    res = store.apply(store.check_apply(incoming(changed), "default"))
    assert res[0][1] == "configured" and res[0][0].generation == 2


def test_one_invalid_object_rejects_the_whole_batch() -> None:
    store = Store()
    with pytest.raises(BatchError) as err:
        store.check_apply(incoming(VS, BAD_VS), "default")
    assert any("broken" in e and "weight" in e for e in err.value.errors), err.value.errors
    assert store.objects == {}


def test_unknown_namespace_is_refused_unless_created_in_the_same_call() -> None:
    store = Store()
    in_ns = {**VS, "metadata": {"name": "reviews", "namespace": "shop"}}
    with pytest.raises(BatchError) as err:
        store.check_apply(incoming(in_ns), "default")
    assert err.value.errors == ['VirtualService shop/reviews: namespaces "shop" not found']
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    objs = store.check_apply(incoming(ns, in_ns), "default")
    assert {o.key for o in objs} == {("Namespace", "", "shop"),
                                     ("VirtualService", "shop", "reviews")}


def test_reapplied_service_keeps_its_cluster_ip() -> None:
    store = Store()
    store.apply(store.check_apply(incoming(SVC), "default"))
    store.objects[("Service", "default", "reviews")].data["spec"]["clusterIP"] = "10.96.0.20"
    res = store.apply(store.check_apply(incoming(SVC), "default"))
    assert res[0][1] == "unchanged"
    relabelled = {**SVC, "metadata": {"name": "reviews", "labels": {"a": "b"}}}
    res = store.apply(store.check_apply(incoming(relabelled), "default"))
    assert res[0][1] == "configured"
    assert res[0][0].data["spec"]["clusterIP"] == "10.96.0.20"


def test_delete_is_all_or_nothing_and_ignore_not_found() -> None:
    store = Store()
    store.apply(store.check_apply(incoming(VS), "default"))
    other = {**VS, "metadata": {"name": "absent"}}
    with pytest.raises(BatchError) as err:
        store.check_delete(incoming(VS, other), "default", ignore_not_found=False)
    assert err.value.errors == ['virtualservices.networking.istio.io "absent" not found']
    assert ("VirtualService", "default", "reviews") in store.objects
    keys = store.check_delete(incoming(VS, other), "default", ignore_not_found=True)
    assert [o.name for o in store.delete(keys)] == ["reviews"]
