"""Deployments → pods, services → endpoints, DNS records and kube-proxy NAT (no I/O)."""

from __future__ import annotations

from pistio.node.ipam import Ipam
from pistio.node.services import PodView, dns_records, nat_entries
from pistio.node.store import StoredObject
from pistio.node.workloads import pod_from_template, replicas, template_hash

DEPLOY = StoredObject("Deployment", "default", "reviews-v1", {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "reviews-v1"},
    "spec": {"replicas": 2, "template": {
        "metadata": {"labels": {"app": "reviews", "version": "v1"}},
        "spec": {"containers": [{"name": "reviews", "ports": [{"name": "http",
                                                                "containerPort": 9080}]}]}}},
}, source_dir="/tmp")


def test_pods_are_named_and_labelled_as_the_replicaset_controller_does() -> None:
    template = DEPLOY.data["spec"]["template"]
    h = template_hash(template)
    assert len(h) == 10 and h == template_hash(dict(template))
    pod = pod_from_template(DEPLOY, f"reviews-v1-{h}-abcde", h)
    assert pod["metadata"]["labels"] == {"app": "reviews", "version": "v1",
                                         "pod-template-hash": h}
    assert pod["metadata"]["namespace"] == "default"
    assert replicas(DEPLOY) == 2
    changed = {**template, "metadata": {"labels": {"app": "reviews", "version": "v2"}}}
    assert template_hash(changed) != h


SVC = {"metadata": {"name": "reviews", "namespace": "default"},
       "spec": {"clusterIP": "10.96.0.11", "selector": {"app": "reviews"},
                "ports": [{"port": 9080, "targetPort": "http"}]}}
HEADLESS = {"metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}
CONTAINERS = [{"name": "reviews", "ports": [{"name": "http", "containerPort": 9080}]}]


def test_endpoints_dns_and_nat_follow_readiness() -> None:
    pods = [
        PodView("reviews-1", "default", "10.88.0.5", {"app": "reviews"}, True, CONTAINERS),
        PodView("reviews-2", "default", "10.88.0.6", {"app": "reviews"}, False, CONTAINERS),
        PodView("other", "shop", "10.88.0.7", {"app": "reviews"}, True, CONTAINERS),
        PodView("db-0", "default", "10.88.0.8", {"app": "db"}, True, []),
    ]
    nat = nat_entries([SVC, HEADLESS], pods)
    assert len(nat) == 1  # a headless service has no ClusterIP to translate
    assert (nat[0].cluster_ip, nat[0].port, nat[0].endpoints) == (
        "10.96.0.11", 9080, (("10.88.0.5", 9080),))
    assert dns_records([SVC, HEADLESS], pods) == {
        "reviews.default.svc.cluster.local": ["10.96.0.11"],
        "db.default.svc.cluster.local": ["10.88.0.8"],
    }


def test_ipam_moves_forward_so_a_recreated_pod_gets_a_new_address() -> None:
    ipam = Ipam("10.88.0.0/29", reserved=1)
    first = ipam.allocate("a")
    assert first == "10.88.0.2"
    ipam.release(first)
    assert ipam.allocate("b") == "10.88.0.3"
    ipam.claim("10.88.0.6", "svc")
    try:
        ipam.claim("10.88.0.6", "other")
    except ValueError as exc:
        assert "already allocated" in str(exc)
    else:
        raise AssertionError("a taken address was claimed twice")
