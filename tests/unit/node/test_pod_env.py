"""A container's environment and argv as the kubelet builds them."""

from __future__ import annotations

import os

import pytest

from pistio.node.pods.env import EnvError, container_argv, container_env, expand

POD = {
    "metadata": {
        "name": "reviews-v1-abc", "namespace": "default", "uid": "1234-uid",
        "labels": {"app": "reviews", "version": "v1"},
        "annotations": {"team": "books"},
    },
    "spec": {"serviceAccountName": "bookinfo-reviews", "nodeName": "node-1"},
}


def env_of(container, **kw):
    return container_env(POD, container, pod_ip="10.88.0.7", **kw)


@pytest.mark.parametrize(
    ("text", "values", "want"),
    [
        ("$(A)", {"A": "x"}, "x"),
        ("pre-$(A)-post", {"A": "x"}, "pre-x-post"),
        ("$(A)$(B)", {"A": "x", "B": "y"}, "xy"),
        ("$$(A)", {"A": "x"}, "$(A)"),  # escaped: literal
        ("$$$(A)", {"A": "x"}, "$x"),
        ("$$", {}, "$"),
        ("$(UNDEFINED)", {}, "$(UNDEFINED)"),  # kept literally
        ("a $(UNDEFINED) b $(A)", {"A": "x"}, "a $(UNDEFINED) b x"),
        ("$(A", {"A": "x"}, "$(A"),  # unterminated
        ("$A", {"A": "x"}, "$A"),  # not an expression
        ("cost: 5$", {}, "cost: 5$"),  # trailing operator
        ("$()", {"": "empty"}, "empty"),
        ("$(A)(B)", {"A": "x"}, "x(B)"),
        ("", {}, ""),
    ],
)
def test_expand(text, values, want):
    assert expand(text, values) == want


def test_plain_values_and_node_defaults():
    env = env_of({"name": "c", "env": [{"name": "A", "value": "1"}, {"name": "EMPTY"}]})
    assert env["A"] == "1"
    assert env["EMPTY"] == ""
    assert env["HOSTNAME"] == "reviews-v1-abc"
    assert env["PATH"] == os.environ["PATH"]


def test_spec_hostname_wins_and_env_can_override_defaults():
    pod = {**POD, "spec": {**POD["spec"], "hostname": "custom"}}
    env = container_env(pod, {"name": "c"}, pod_ip="10.88.0.7")
    assert env["HOSTNAME"] == "custom"
    env = env_of({"name": "c", "env": [{"name": "PATH", "value": "/opt/bin:$(PATH)"}]})
    assert env["PATH"] == "/opt/bin:" + os.environ["PATH"]


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("metadata.name", "reviews-v1-abc"),
        ("metadata.namespace", "default"),
        ("metadata.uid", "1234-uid"),
        ("metadata.labels['app']", "reviews"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['team']", "books"),
        ("spec.serviceAccountName", "bookinfo-reviews"),
        ("spec.nodeName", "node-1"),
        ("status.podIP", "10.88.0.7"),
        ("status.podIPs", "10.88.0.7"),
    ],
)
def test_field_ref(path, want):
    env = env_of({"name": "c", "env": [
        {"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]})
    assert env["V"] == want


def test_field_ref_defaults_and_host_ip():
    pod = {"metadata": {"name": "p"}, "spec": {}}
    env = container_env(pod, {"name": "c", "env": [
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
    ]}, pod_ip="10.88.0.9", host_ip="10.88.0.1")
    assert (env["NS"], env["SA"], env["HOST"]) == ("default", "default", "10.88.0.1")


def test_unsupported_field_ref():
    with pytest.raises(EnvError, match="fieldPath"):
        env_of({"name": "c", "env": [
            {"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]})


CMS = {("default", "cfg"): {"MODE": "fast", "LEVEL": "3", "bad key": "x"}}
SECRETS = {("default", "creds"): {"password": "s3cr$(MODE)et"}}


def test_config_map_and_secret_key_refs():
    env = env_of({"name": "c", "env": [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
    ]}, config_maps=CMS, secrets=SECRETS)
    assert env["MODE"] == "fast"
    assert env["PW"] == "s3cr$(MODE)et"  # valueFrom values are never expanded


def test_missing_refs():
    optional = {"name": "c", "env": [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "NOPE",
                                                        "optional": True}}},
        {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k",
                                                     "optional": True}}},
    ]}
    env = env_of(optional, config_maps=CMS, secrets=SECRETS)
    assert "X" not in env and "Y" not in env
    with pytest.raises(EnvError, match="couldn't find key NOPE"):
        env_of({"name": "c", "env": [{"name": "X", "valueFrom": {
            "configMapKeyRef": {"name": "cfg", "key": "NOPE"}}}]}, config_maps=CMS)
    with pytest.raises(EnvError, match='secret "gone" not found'):
        env_of({"name": "c", "env": [{"name": "X", "valueFrom": {
            "secretKeyRef": {"name": "gone", "key": "k"}}}]})


def test_namespaced_lookup():
    pod = {"metadata": {"name": "p", "namespace": "other"}, "spec": {}}
    with pytest.raises(EnvError):
        container_env(pod, {"name": "c", "env": [{"name": "X", "valueFrom": {
            "configMapKeyRef": {"name": "cfg", "key": "MODE"}}}]}, pod_ip="1.2.3.4",
            config_maps=CMS)


def test_env_from_order_prefix_and_override():
    env = env_of({"name": "c", "envFrom": [
        {"configMapRef": {"name": "cfg"}},
        {"secretRef": {"name": "creds"}, "prefix": "DB_"},
        {"configMapRef": {"name": "absent", "optional": True}},
    ], "env": [{"name": "LEVEL", "value": "9"}]}, config_maps=CMS, secrets=SECRETS)
    assert env["MODE"] == "fast"
    assert env["LEVEL"] == "9"  # env overrides envFrom
    assert env["DB_password"] == "s3cr$(MODE)et"
    assert "bad key" not in env  # invalid names are skipped
    with pytest.raises(EnvError, match='configmap "absent" not found'):
        env_of({"name": "c", "envFrom": [{"configMapRef": {"name": "absent"}}]})


def test_expansion_sees_only_earlier_variables():
    env = env_of({"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}], "env": [
        {"name": "URL", "value": "http://$(HOST):$(PORT)/$(MODE)"},
        {"name": "HOST", "value": "reviews"},
        {"name": "PORT", "value": "9080"},
        {"name": "URL2", "value": "http://$(HOST):$(PORT)"},
        {"name": "LITERAL", "value": "$$(HOST) costs $$5"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "WHO", "value": "$(POD)@$(POD_IP_UNSET)"},
    ]}, config_maps=CMS)
    assert env["URL"] == "http://$(HOST):$(PORT)/fast"
    assert env["URL2"] == "http://reviews:9080"
    assert env["LITERAL"] == "$(HOST) costs $5"
    assert env["WHO"] == "reviews-v1-abc@$(POD_IP_UNSET)"


def test_resource_field_ref():
    env = env_of({"name": "c", "resources": {"limits": {"cpu": "1500m", "memory": "64Mi"}},
                  "env": [
                      {"name": "CPU", "valueFrom": {"resourceFieldRef": {
                          "resource": "limits.cpu"}}},
                      {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                          "resource": "limits.memory", "divisor": "1Mi"}}},
                  ]})
    assert (env["CPU"], env["MEM"]) == ("2", "64")


def test_argv():
    env = {"PORT": "9080", "NAME": "reviews"}
    assert container_argv({"command": ["python3", "app.py"], "args": ["--port", "$(PORT)"]},
                          env) == ["python3", "app.py", "--port", "9080"]
    assert container_argv({"args": ["sh", "-c", "echo $(NAME) $$HOME $(NOPE)"]}, env) == [
        "sh", "-c", "echo reviews $HOME $(NOPE)"]
    assert container_argv({"command": ["sleep", 5]}) == ["sleep", "5"]
    with pytest.raises(ValueError, match="neither command nor args"):
        container_argv({"name": "c", "image": "busybox"})


def test_argv_against_built_env():
    container = {"name": "c", "command": ["echo", "$(POD_NAME)", "$(HOSTNAME)"], "env": [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}
    assert container_argv(container, env_of(container)) == [
        "echo", "reviews-v1-abc", "reviews-v1-abc"]
