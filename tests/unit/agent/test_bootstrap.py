"""The agent's node identity: Envoy's node.cluster as Istio names it."""

from __future__ import annotations

from pistio.agent.bootstrap import node_identity


def test_service_cluster_is_app_label_and_namespace() -> None:
    """Istio's default tracingServiceName (APP_LABEL_AND_NAMESPACE): what tracers show as the
    service, e.g. ``reviews.default`` for every reviews version."""
    env = {"POD_NAME": "reviews-v3-qb88gvrkhr-rzhr8", "POD_NAMESPACE": "default",
           "INSTANCE_IP": "10.88.0.6", "ISTIO_META_WORKLOAD_NAME": "reviews-v3"}
    ident = node_identity("sidecar", env=env, labels={"app": "reviews", "version": "v3"})
    assert ident.service_cluster == "reviews.default"
    # Without an app label: the workload, then the pod.
    assert node_identity("sidecar", env=env, labels={}).service_cluster == "reviews-v3.default"
    env.pop("ISTIO_META_WORKLOAD_NAME")
    assert node_identity("sidecar", env=env, labels={}).service_cluster == \
        "reviews-v3-qb88gvrkhr-rzhr8.default"
