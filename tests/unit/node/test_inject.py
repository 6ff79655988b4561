"""Istio's sidecar injection: the decision table, the injected pod, the probe rewrite."""

from __future__ import annotations

import json

import pytest
import yaml

from pistio.agent.app_health import parse_app_probers
from pistio.node.pods.env import container_argv, container_env
from pistio.node.pods.inject import (
    PROXY_CONTAINER,
    STATUS_ANNOTATION,
    inject,
    injection_wanted,
    rewrite_probes,
)
from pistio.node.pods.probes import Probe

PREFIX = ["/venv/bin/python", "-m", "pistio.cli"]


def pod(labels=None, annotations=None, namespace="default", **spec):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace, "labels": dict(labels or {}),
                     "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": "app", "command": ["sleep", "1"]}], **spec},
    }


ENABLED = {"istio-injection": "enabled"}
DISABLED = {"istio-injection": "disabled"}
REV = {"istio.io/rev": "default"}
OTHER_REV = {"istio.io/rev": "canary"}
INJECT = "sidecar.istio.io/inject"


@pytest.mark.parametrize(
    ("ns_labels", "pod_labels", "pod_annotations", "want"),
    [
        # namespace label alone
        (ENABLED, {}, {}, True),
        (DISABLED, {}, {}, False),
        ({}, {}, {}, False),
        # pod label overrides
        (ENABLED, {INJECT: "false"}, {}, False),
        (ENABLED, {INJECT: "true"}, {}, True),
        ({}, {INJECT: "true"}, {}, True),  # object webhook
        ({}, {INJECT: "false"}, {}, False),
        (DISABLED, {INJECT: "true"}, {}, False),  # either label disabled: no
        # injectRequired's yaml booleans and case-insensitivity
        ({}, {INJECT: "True"}, {}, False),  # the object webhook matches "true" exactly
        (ENABLED, {INJECT: "yes"}, {}, True),
        (ENABLED, {INJECT: "on"}, {}, True),
        (ENABLED, {INJECT: "FALSE"}, {}, False),
        (ENABLED, {INJECT: "no"}, {}, False),
        # the deprecated annotation can veto but not enable
        (ENABLED, {}, {INJECT: "false"}, False),
        ({}, {}, {INJECT: "true"}, False),
        (ENABLED, {INJECT: "true"}, {INJECT: "false"}, True),  # the label wins
        (ENABLED, {INJECT: "false"}, {INJECT: "true"}, False),
        # revisions
        (REV, {}, {}, True),
        (REV, {INJECT: "false"}, {}, False),
        (OTHER_REV, {}, {}, False),
        ({}, {"istio.io/rev": "default"}, {}, True),  # rev.object
        ({}, {"istio.io/rev": "canary"}, {}, False),
        ({}, {"istio.io/rev": "default", INJECT: "false"}, {}, False),
        ({**ENABLED, **OTHER_REV}, {}, {}, True),  # istio-injection takes precedence
        ({**DISABLED, **REV}, {}, {}, False),
        ({}, {INJECT: "true", "istio.io/rev": "canary"}, {}, False),
    ],
)
def test_decision_table(ns_labels, pod_labels, pod_annotations, want):
    assert injection_wanted(pod(pod_labels, pod_annotations), ns_labels) is want


def test_never_host_network_or_system_namespaces():
    assert not injection_wanted(pod({INJECT: "true"}, hostNetwork=True), ENABLED)
    for ns in ("kube-system", "kube-public"):
        assert not injection_wanted(pod({INJECT: "true"}, namespace=ns), ENABLED)
    assert injection_wanted(pod(namespace="istio-system"), ENABLED)


def test_never_twice():
    injected = inject(pod(), discovery_address="10.88.0.1:15010", proxy_argv_prefix=PREFIX)
    assert not injection_wanted(injected, ENABLED)
    assert inject(injected, discovery_address="x:1", proxy_argv_prefix=PREFIX) == injected


BOOKINFO_REVIEWS = yaml.safe_load("""
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v2-5b6f8c7d9-x2kq4
  generateName: reviews-v2-5b6f8c7d9-
  namespace: default
  labels: {app: reviews, version: v2, pod-template-hash: 5b6f8c7d9}
spec:
  serviceAccountName: bookinfo-reviews
  containers:
  - name: reviews
    image: docker.io/istio/examples-bookinfo-reviews-v2:1.20.2
    command: [python3, apps/reviews.py]
    ports: [{containerPort: 9080, name: http}]
    readinessProbe:
      httpGet: {path: /health, port: 9080}
      periodSeconds: 5
""")


def test_injected_pod_shape():
    original = json.loads(json.dumps(BOOKINFO_REVIEWS))
    out = inject(BOOKINFO_REVIEWS, discovery_address="10.88.0.1:15010",
                 proxy_argv_prefix=PREFIX)
    assert original == BOOKINFO_REVIEWS  # a copy: the input is untouched
    names = [c["name"] for c in out["spec"]["containers"]]
    assert names == ["reviews", PROXY_CONTAINER]
    proxy = out["spec"]["containers"][1]
    cmd = proxy["command"]
    assert cmd[:9] == [*PREFIX, "proxy", "sidecar", "--discovery-address", "10.88.0.1:15010",
                       "--concurrency", "1"]
    labels = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--label"]
    assert "app=reviews" in labels and "version=v2" in labels
    assert "security.istio.io/tlsMode=istio" in labels
    meta = out["metadata"]
    assert meta["labels"]["security.istio.io/tlsMode"] == "istio"
    assert meta["labels"]["service.istio.io/canonical-name"] == "reviews"
    assert meta["labels"]["service.istio.io/canonical-revision"] == "v2"
    assert meta["annotations"]["kubectl.kubernetes.io/default-container"] == "reviews"
    status = json.loads(meta["annotations"][STATUS_ANNOTATION])
    assert status["containers"] == [PROXY_CONTAINER]
    assert status["revision"] == "default"
    assert list(status) == ["initContainers", "containers", "volumes", "imagePullSecrets",
                            "revision"]
    assert proxy["securityContext"]["runAsUser"] == 1337
    assert proxy["securityContext"]["runAsGroup"] == 1337
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}

    # The proxy's environment, as the node will build it.
    env = container_env(out, proxy, pod_ip="10.88.0.12", host_ip="10.88.0.1")
    assert env["POD_NAME"] == "reviews-v2-5b6f8c7d9-x2kq4"
    assert env["POD_NAMESPACE"] == "default"
    assert env["INSTANCE_IP"] == "10.88.0.12"
    assert env["SERVICE_ACCOUNT"] == "bookinfo-reviews"
    assert env["ISTIO_META_WORKLOAD_NAME"] == "reviews-v2"
    assert env["ISTIO_META_APP_CONTAINERS"] == "reviews"
    assert json.loads(env["ISTIO_META_POD_PORTS"]) == [{"containerPort": 9080, "name": "http"}]
    assert json.loads(env["ISTIO_KUBE_APP_PROBERS"]) == {
        "/app-health/reviews/readyz": {"httpGet": {"path": "/health", "port": 9080}}}
    assert container_argv(proxy, env) == cmd

    # The app's readiness probe now goes to the agent, timing kept.
    app = out["spec"]["containers"][0]
    assert app["readinessProbe"] == {
        "httpGet": {"path": "/app-health/reviews/readyz", "port": 15020}, "periodSeconds": 5}
    probe = Probe.from_spec(app["readinessProbe"], app["ports"])
    assert (probe.kind, probe.port, probe.path, probe.period) == (
        "http", 15020, "/app-health/reviews/readyz", 5.0)
    assert parse_app_probers(env["ISTIO_KUBE_APP_PROBERS"])  # the agent accepts it


def test_concurrency_from_proxy_config():
    p = pod(annotations={"proxy.istio.io/config": "concurrency: 3\n"})
    cmd = inject(p, discovery_address="d:1", proxy_argv_prefix=[])["spec"]["containers"][-1][
        "command"]
    assert cmd[cmd.index("--concurrency") + 1] == "3"
    with pytest.raises(ValueError, match="proxy.istio.io/config"):
        inject(pod(annotations={"proxy.istio.io/config": "concurrency: many"}),
               discovery_address="d:1", proxy_argv_prefix=[])


# Istio's pkg/kube/inject/testdata/inject/app_probe/startup_ready_live.yaml (its containers)
# and the ISTIO_KUBE_APP_PROBERS of startup_ready_live.yaml.injected.
ISTIO_STARTUP_READY_LIVE = yaml.safe_load("""
metadata: {name: hello, labels: {app: hello}}
spec:
  containers:
    - name: hello
      ports: [{name: http, containerPort: 80}]
      startupProbe: {httpGet: {port: 3333}}
      livenessProbe: {httpGet: {port: http}}
      readinessProbe: {httpGet: {port: 3333}}
    - name: world
      ports: [{name: http, containerPort: 90}]
      startupProbe: {httpGet: {port: http}}
      livenessProbe: {httpGet: {port: http}}
      readinessProbe: {exec: {command: [cat, /tmp/healthy]}}
""")
ISTIO_PROBERS = (
    '{"/app-health/hello/livez":{"httpGet":{"port":80}},'
    '"/app-health/hello/readyz":{"httpGet":{"port":3333}},'
    '"/app-health/hello/startupz":{"httpGet":{"port":3333}},'
    '"/app-health/world/livez":{"httpGet":{"port":90}},'
    '"/app-health/world/startupz":{"httpGet":{"port":90}}}'
)


def test_proxy_metadata_becomes_the_proxys_environment():
    p = pod(annotations={"proxy.istio.io/config":
                         '{"proxyMetadata": {"SECRET_TTL": "10s", "ISTIO_META_X": "y"}}'})
    proxy = inject(p, discovery_address="d:1", proxy_argv_prefix=[])["spec"]["containers"][-1]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["SECRET_TTL"] == "10s" and env["ISTIO_META_X"] == "y"
    with pytest.raises(ValueError, match="proxyMetadata must be a map"):
        inject(pod(annotations={"proxy.istio.io/config": "proxyMetadata: [a]"}),
               discovery_address="d:1", proxy_argv_prefix=[])


def test_probers_match_istio_byte_for_byte():
    out = inject(ISTIO_STARTUP_READY_LIVE, discovery_address="d:1", proxy_argv_prefix=[])
    proxy = out["spec"]["containers"][-1]
    value = next(e["value"] for e in proxy["env"] if e["name"] == "ISTIO_KUBE_APP_PROBERS")
    assert value == ISTIO_PROBERS
    hello, world = out["spec"]["containers"][:2]
    assert hello["livenessProbe"] == {"httpGet": {"path": "/app-health/hello/livez",
                                                  "port": 15020}}
    assert hello["readinessProbe"]["httpGet"]["path"] == "/app-health/hello/readyz"
    assert hello["startupProbe"]["httpGet"]["path"] == "/app-health/hello/startupz"
    assert world["livenessProbe"]["httpGet"]["path"] == "/app-health/world/livez"
    assert world["readinessProbe"] == {"exec": {"command": ["cat", "/tmp/healthy"]}}


def test_tcp_https_and_header_probes():
    p = pod()
    p["spec"]["containers"][0].update({
        "ports": [{"name": "tcp-db", "containerPort": 5432}],
        "livenessProbe": {"tcpSocket": {"port": "tcp-db"}, "timeoutSeconds": 2,
                          "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "ready", "port": 8443, "scheme": "HTTPS",
                                       "httpHeaders": [{"name": "X-A", "value": "b"}]}},
    })
    probers = json.loads(rewrite_probes(p))
    assert probers == {
        "/app-health/app/livez": {"tcpSocket": {"port": 5432}, "timeoutSeconds": 2},
        "/app-health/app/readyz": {"httpGet": {
            "path": "ready", "port": 8443, "scheme": "HTTPS",
            "httpHeaders": [{"name": "X-A", "value": "b"}]}},
    }
    c = p["spec"]["containers"][0]
    assert c["livenessProbe"] == {"httpGet": {"path": "/app-health/app/livez", "port": 15020},
                                  "timeoutSeconds": 2, "failureThreshold": 5}
    assert c["readinessProbe"]["httpGet"] == {
        "path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP",
        "httpHeaders": [{"name": "X-A", "value": "b"}]}
    assert parse_app_probers(json.dumps(probers))


def test_rewrite_disabled_by_annotation():
    p = pod(annotations={"sidecar.istio.io/rewriteAppHTTPProbers": "false"})
    p["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"port": 8080}}
    out = inject(p, discovery_address="d:1", proxy_argv_prefix=[])
    assert out["spec"]["containers"][0]["readinessProbe"] == {"httpGet": {"port": 8080}}
    assert all(e["name"] != "ISTIO_KUBE_APP_PROBERS"
               for e in out["spec"]["containers"][-1]["env"])


def test_status_port_annotation():
    p = pod(annotations={"status.sidecar.istio.io/port": "15999"})
    p["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"port": 8080}}
    out = inject(p, discovery_address="d:1", proxy_argv_prefix=[])
    assert out["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] == 15999
    cmd = out["spec"]["containers"][-1]["command"]
    assert cmd[cmd.index("--status-port") + 1] == "15999"


def test_workload_name_of_a_node_named_pod():
    """The local node names a Deployment's pods itself (no generateName) and records the
    owner: the workload is the Deployment, as Istio's metrics label it."""
    pod_doc = json.loads(json.dumps(BOOKINFO_REVIEWS))
    meta = pod_doc["metadata"]
    del meta["generateName"]
    meta["name"] = "reviews-v2-jrlgmld7sk-958cl"
    meta["annotations"] = {"pistio.io/owner": "Deployment/reviews-v2"}
    out = inject(pod_doc, discovery_address="10.88.0.1:15010", proxy_argv_prefix=PREFIX)
    proxy = out["spec"]["containers"][1]
    env = container_env(out, proxy, pod_ip="10.88.0.12", host_ip="10.88.0.1")
    assert env["ISTIO_META_WORKLOAD_NAME"] == "reviews-v2"
    # A bare pod (no owner, no generateName) is its own workload.
    del meta["annotations"]
    out = inject(pod_doc, discovery_address="10.88.0.1:15010", proxy_argv_prefix=PREFIX)
    env = container_env(out, out["spec"]["containers"][1], pod_ip="10.88.0.12",
                        host_ip="10.88.0.1")
    assert env["ISTIO_META_WORKLOAD_NAME"] == "reviews-v2-jrlgmld7sk-958cl"
