"""The node's pod tokens (the kubelet's projected istio-token) and the injector's CA flags."""

from __future__ import annotations

import json
import time

from pistio.node.pods.inject import inject
from pistio.node.tokens import REFRESH_RATIO, PodTokens
from pistio.security.tokens import TokenVerifier


def test_pod_token_issue_refresh_and_remove(tmp_path):
    tokens = PodTokens(tmp_path / "tokens", ca_address="10.88.0.1:15012", ttl=100)
    tokens.start()
    verifier = TokenVerifier(json.loads(tokens.jwks_file.read_text()))
    before = time.time()
    path = tokens.issue("default", "reviews-1", "bookinfo-reviews", uid="u1")
    assert path == tmp_path / "tokens" / "default" / "reviews-1" / "istio-token"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    claims = verifier.verify(path.read_text())
    assert (claims.namespace, claims.service_account, claims.pod_name, claims.pod_uid) == \
        ("default", "bookinfo-reviews", "reviews-1", "u1")
    first = path.read_text()
    assert tokens.refresh_due(now=before + REFRESH_RATIO * 100 - 1) == 0
    assert tokens.refresh_due(now=time.time() + REFRESH_RATIO * 100) == 1
    assert path.read_text() != first
    tokens.remove("default", "reviews-1")
    assert not path.exists()
    tokens.close()
    assert not (tmp_path / "tokens").exists()


POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "reviews-1", "namespace": "default"},
       "spec": {"containers": [{"name": "app", "command": ["sleep", "1"]}]}}


def test_inject_passes_the_ca_settings_to_the_sidecar():
    out = inject(POD, discovery_address="10.88.0.1:15010", proxy_argv_prefix=["pistio"],
                 ca_address="10.88.0.1:15012", ca_root_cert="/run/pistio/ca/root-cert.pem",
                 token_file="/run/pistio/tokens/default/reviews-1/istio-token")
    proxy = out["spec"]["containers"][-1]
    cmd = proxy["command"]
    assert cmd[cmd.index("--ca-address") + 1] == "10.88.0.1:15012"
    assert cmd[cmd.index("--ca-root-cert") + 1] == "/run/pistio/ca/root-cert.pem"
    assert cmd[cmd.index("--token-file") + 1].endswith("/istio-token")
    assert {"name": "CA_ADDR", "value": "10.88.0.1:15012"} in proxy["env"]


def test_inject_without_ca_is_unchanged():
    proxy = inject(POD, discovery_address="d:1", proxy_argv_prefix=[])["spec"]["containers"][-1]
    assert "--ca-address" not in proxy["command"]
    assert all(e["name"] != "CA_ADDR" for e in proxy["env"])
