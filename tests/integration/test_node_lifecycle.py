"""The node's life cycle (root): `up` with one injected pod, kubectl-like `get`/`logs`, a node
that crashes (SIGKILL: nothing of it gets to clean up), `down` cleaning up after it, twice."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from tests.integration.node_fixture import REPO, make_node, need_root, wait_for

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(300)]


def test_down_cleans_up_after_a_crashed_node(tmp_path: Path) -> None:
    need_root()
    node = make_node(tmp_path)
    try:
        up = node.pistio("up", "-f", str(REPO / "examples" / "curl" / "httpbin.yaml"),
                         "-f", str(REPO / "examples" / "curl" / "namespace.yaml"),
                         timeout=180)
        assert up.returncode == 0, (up.stdout, up.stderr, node.log_tail())

        pods = yaml.safe_load(node.pistio("get", "pods", "-o", "yaml", check=True).stdout)
        assert pods["kind"] == "List" and len(pods["items"]) == 1
        pod = pods["items"][0]
        names = [c["name"] for c in pod["spec"]["containers"]]
        assert names[0] == "istio-proxy" or "istio-proxy" in names, names
        assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"]
        assert pod["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
        svc = json.loads(node.pistio("get", "svc", "httpbin", "-o", "json", check=True).stdout)
        assert svc["spec"]["clusterIP"].startswith("10.97.")
        proxy_log = node.pistio("logs", "deploy/httpbin", "-c", "istio-proxy", check=True).stdout
        assert "pistio proxy sidecar starting" in proxy_log, proxy_log[-2000:]
        bad = node.pistio("logs", "deploy/httpbin", "-c", "nope")
        assert bad.returncode == 1 and "container nope is not valid" in bad.stderr, bad.stderr

        # A pod the node cannot create (a bad capture annotation) holds `up` and says why.
        bad_pod = tmp_path / "bad.yaml"
        bad_pod.write_text("""
apiVersion: v1
kind: Pod
metadata:
  name: bad-capture
  annotations: {traffic.sidecar.istio.io/includeInboundPorts: "http"}
spec:
  containers: [{name: main, image: none, command: [sleep, infinity]}]
""")
        node.pistio("apply", "-f", str(bad_pod), check=True)
        held = node.pistio("up", "--timeout", "3")
        assert held.returncode == 1, held.stdout
        assert "bad-capture.default" in held.stderr, held.stderr
        assert "traffic.sidecar.istio.io/includeInboundPorts" in held.stderr, held.stderr
        node.pistio("delete", "-f", str(bad_pod), check=True)

        # The node and its discovery die without a chance to clean up.
        recorded = json.loads((node.state_dir / "node.json").read_text())
        for pid in (recorded["pid"], recorded["discovery_pid"]):
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not Path(f"/proc/{recorded['pid']}").exists(), 10)
        assert node.leftovers(), "a crashed node should leave its pods behind"
        unavailable = node.pistio("get", "pods")
        assert unavailable.returncode == 1 and "not running" in unavailable.stderr
    finally:
        first = node.pistio("down", timeout=120)
        second = node.pistio("down", timeout=120)
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert node.leftovers() == []
