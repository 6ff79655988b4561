"""Istio's security tasks on a local node, end to end (root).

Namespace ``foo`` runs httpbin and curl with sidecars, namespace ``legacy`` a curl without one
(Istio's "mutual TLS migration" set-up). The tests follow Istio's tasks: PERMISSIVE then
STRICT; deny-all, then allow by path, method and principal; JWT required through
requestPrincipals with Istio's sample tokens and JWKS; proof on the wire that pod-to-pod
traffic is TLS and carries SPIFFE identities; certificate rotation under load.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.node_fixture import REPO, Node, make_node, need_root, wait_for
from tests.shared_data import shared_dir

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(600)]

CURL = REPO / "examples" / "curl"
NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: foo, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
"""
# httpbin whose sidecar asks for 8-second certificates: it rotates every ~4 s.
SHORT_LIVED = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: httpbin-short}
---
apiVersion: v1
kind: Service
metadata: {name: httpbin-short, labels: {app: httpbin-short}}
spec:
  selector: {app: httpbin-short}
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin-short}
spec:
  selector: {matchLabels: {app: httpbin-short}}
  template:
    metadata:
      labels: {app: httpbin-short, version: v1}
      annotations:
        proxy.istio.io/config: '{"proxyMetadata": {"SECRET_TTL": "8s"}}'
    spec:
      serviceAccountName: httpbin-short
      containers:
      - name: httpbin
        image: docker.io/mccutchen/go-httpbin
        command: [python3, "%s"]
        env: [{name: PORT, value: "8080"}]
        ports: [{containerPort: 8080}]
""" % (CURL / "apps" / "httpbin.py")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    need_root()
    tmp = tmp_path_factory.mktemp("security")
    node = make_node(tmp)
    (tmp / "namespaces.yaml").write_text(NAMESPACES)
    (tmp / "short.yaml").write_text(SHORT_LIVED)
    try:
        for args in (("up", "-f", str(tmp / "namespaces.yaml")),
                     ("apply", "-n", "foo", "-f", str(CURL / "httpbin.yaml"),
                      "-f", str(CURL / "curl.yaml"), "-f", str(tmp / "short.yaml")),
                     ("apply", "-n", "legacy", "-f", str(CURL / "curl.yaml")),
                     ("up", "--timeout", "180")):
            done = node.pistio(*args, timeout=240)
            assert done.returncode == 0, (args, done.stdout, done.stderr, node.log_tail())
        yield node
    finally:
        node.down()
        left = node.leftovers()
        assert not left, left


def curl(node: Node, ns: str, url: str, *opts: str) -> tuple[str, str, int]:
    """(HTTP status or curl's failure, body, curl's exit code) from ``ns``/curl."""
    done = node.exec("deploy/curl", "curl", "-s", "--max-time", "10", "-w", "\n%{http_code}",
                     *opts, url, namespace=ns, timeout=30)
    body, _, code = done.stdout.rpartition("\n")
    return code, body, done.returncode


def apply_yaml(node: Node, tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    done = node.pistio("apply", "-n", "foo", "-f", str(path))
    assert done.returncode == 0, (done.stdout, done.stderr)
    return path


def remove(node: Node, path: Path) -> None:
    if not path.exists():  # the test failed before applying it
        return
    node.pistio("delete", "-n", "foo", "--ignore-not-found", "-f", str(path), check=True)


HTTPBIN = "http://httpbin.foo:8000"


def test_mutual_tls_migration_permissive_then_strict(node: Node, tmp_path: Path) -> None:
    # PERMISSIVE (Istio's default): both the sidecar client and the legacy one get through.
    assert curl(node, "legacy", f"{HTTPBIN}/ip")[0] == "200"
    code, body, _ = curl(node, "foo", f"{HTTPBIN}/headers")
    assert code == "200", body
    # The server sidecar saw the client's certificate: its SPIFFE id is in XFCC.
    xfcc = json.loads(body)["headers"]["X-Forwarded-Client-Cert"]
    xfcc = xfcc[0] if isinstance(xfcc, list) else xfcc
    assert "By=spiffe://cluster.local/ns/foo/sa/httpbin" in xfcc, xfcc
    assert "URI=spiffe://cluster.local/ns/foo/sa/curl" in xfcc, xfcc

    strict = apply_yaml(node, tmp_path, "strict", """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
""")
    try:
        # The legacy client is refused (connection reset: curl 56, or empty reply: 52).
        refused = wait_for(lambda: curl(node, "legacy", f"{HTTPBIN}/ip")[2] in (52, 56), 5,
                           interval=0.1)
        assert refused, curl(node, "legacy", f"{HTTPBIN}/ip")
        assert curl(node, "foo", f"{HTTPBIN}/ip")[0] == "200"
    finally:
        remove(node, strict)
    assert wait_for(lambda: curl(node, "legacy", f"{HTTPBIN}/ip")[0] == "200", 5)
    # The client sidecar's pooled mTLS connection outlived two listener versions.
    assert curl(node, "foo", f"{HTTPBIN}/ip")[0] == "200"


CAPTURE = r"""
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind(("eth0", 0))
s.settimeout(0.2)
tls = plain = packets = 0
deadline = time.monotonic() + seconds
print("ready", flush=True)
while time.monotonic() < deadline and packets < 5000:
    try:
        frame = s.recv(65535)
    except TimeoutError:
        continue
    if frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4 / TCP only
        continue
    ihl = (frame[14] & 0x0F) * 4
    tcp = frame[14 + ihl:]
    src, dst = int.from_bytes(tcp[0:2], "big"), int.from_bytes(tcp[2:4], "big")
    if port not in (src, dst):
        continue
    payload = tcp[(tcp[12] >> 4) * 4:]
    if not payload:
        continue
    packets += 1
    if payload[0] in (0x16, 0x17) and payload[1] == 0x03:
        tls += 1
    if b"HTTP/1.1" in payload or b"GET /" in payload:
        plain += 1
print(json.dumps({"packets": packets, "tls": tls, "plain": plain}), flush=True)
"""


def test_pod_to_pod_traffic_is_tls_on_the_wire(node: Node) -> None:
    pods = json.loads(node.pistio("get", "pods", "-n", "foo", "-o", "json", check=True).stdout)
    server = next(p for p in pods["items"]
                  if p["metadata"]["labels"].get("app") == "httpbin")
    netns = f"{node.name}-foo-{server['metadata']['name']}"
    capture = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", CAPTURE,
                                "8080", "6"], stdout=subprocess.PIPE, text=True)
    try:
        assert capture.stdout is not None and capture.stdout.readline().strip() == "ready"
        for _ in range(5):
            assert curl(node, "foo", f"{HTTPBIN}/get")[0] == "200"
        out, _ = capture.communicate(timeout=30)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait(5)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["packets"] > 0 and seen["tls"] > 0, seen
    assert seen["plain"] == 0, seen


def test_authorization_deny_all_then_allow(node: Node, tmp_path: Path) -> None:
    deny_all = apply_yaml(node, tmp_path, "allow-nothing", """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing}
spec: {}
""")
    viewer = tmp_path / "viewer.yaml"
    try:
        denied = wait_for(lambda: curl(node, "foo", f"{HTTPBIN}/headers")[0] == "403", 5, 0.1)
        code, body, _ = curl(node, "foo", f"{HTTPBIN}/headers")
        assert denied and code == "403" and body == "RBAC: access denied", (code, body)
        viewer = apply_yaml(node, tmp_path, "viewer", """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-viewer}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/curl]}}]
    to: [{operation: {methods: [GET], paths: [/headers, /status/*]}}]
""")
        assert wait_for(lambda: curl(node, "foo", f"{HTTPBIN}/headers")[0] == "200", 5, 0.1)
        assert curl(node, "foo", f"{HTTPBIN}/status/200")[0] == "200"
        assert curl(node, "foo", f"{HTTPBIN}/ip")[0] == "403"  # path not allowed
        assert curl(node, "foo", f"{HTTPBIN}/headers", "-X", "POST")[0] == "403"  # method
        # A plaintext client has no principal: PERMISSIVE lets it connect, RBAC says no.
        assert curl(node, "legacy", f"{HTTPBIN}/headers")[0] == "403"
    finally:
        remove(node, viewer)
        remove(node, deny_all)
    assert wait_for(lambda: curl(node, "foo", f"{HTTPBIN}/ip")[0] == "200", 5)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_jwt_required_through_request_principals(node: Node, tmp_path: Path) -> None:
    jwt_dir = shared_dir() / "conformance" / "istio-samples" / "jwt"
    if not (jwt_dir / "jwks.json").is_file():
        pytest.fail(f"Istio's sample JWKS and tokens are absent from {jwt_dir}")
    token = (jwt_dir / "demo.jwt").read_text().strip()
    jwks = (jwt_dir / "jwks.json").read_text().strip()
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    expired = ".".join((header, _b64(json.dumps({**claims, "exp": 1_000_000_000}).encode()),
                        signature))
    tampered = ".".join((header, _b64(json.dumps({**claims, "sub": "mallory"}).encode()),
                         signature))
    policy = apply_yaml(node, tmp_path, "jwt", f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt-example}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{requestPrincipals: [testing@secure.istio.io/testing@secure.istio.io]}}}}]
""")
    try:
        bearer = ("-H", f"Authorization: Bearer {token}")
        assert wait_for(lambda: curl(node, "foo", f"{HTTPBIN}/headers")[0] == "403", 5, 0.1)
        assert curl(node, "foo", f"{HTTPBIN}/headers", *bearer)[0] == "200"
        code, body, _ = curl(node, "foo", f"{HTTPBIN}/headers", "-H",
                             f"Authorization: Bearer {tampered}")
        assert (code, body) == ("401", "Jwt verification fails"), (code, body)
        code, body, _ = curl(node, "foo", f"{HTTPBIN}/headers", "-H",
                             f"Authorization: Bearer {expired}")
        assert (code, body) == ("401", "Jwt is expired"), (code, body)
    finally:
        remove(node, policy)


def _secret_version(node: Node) -> str | None:
    done = node.exec("deploy/httpbin-short", "curl", "-s", "127.0.0.1:15000/config_dump",
                     namespace="foo")
    try:
        dump = json.loads(done.stdout)
    except ValueError:
        return None
    for config in dump.get("configs", []):
        for secret in config.get("dynamic_active_secrets", []):
            if secret.get("name") == "default":
                return str(secret.get("version_info"))
    return None


def test_certificate_rotation_under_load_fails_no_request(node: Node) -> None:
    first = wait_for(lambda: _secret_version(node), 10)
    assert first, "httpbin-short's sidecar shows no `default` secret"
    loop = ("ok=0; bad=0; for i in $(seq 120); do "
            "c=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "
            "http://httpbin-short:8000/get); "
            "if [ \"$c\" = 200 ]; then ok=$((ok+1)); else bad=$((bad+1)); echo \"fail $c\"; fi; "
            "sleep 0.1; done; echo \"ok=$ok bad=$bad\"")
    started = time.monotonic()
    done = node.exec("deploy/curl", "sh", "-c", loop, namespace="foo", timeout=240)
    took = time.monotonic() - started
    last = _secret_version(node)
    assert done.stdout.strip().endswith("ok=120 bad=0"), done.stdout[-2000:]
    assert last and last != first, (first, last, took)
