"""DestinationRule ``tls.credentialName`` end to end (root only: a network namespace of its
own, as ``test_sidecar_capture``).

Inside the namespace: ``pistio discovery`` with its CA and secure port (tokens as the node
issues them), a Kubernetes ``Secret client-cred`` (``tls.crt``/``tls.key``/``ca.crt``) and a
DestinationRule selecting the client workload with ``tls: {mode: MUTUAL, credentialName:
client-cred}``; a TLS server on loopback that requires a client certificate from the test CA
and answers with the client's common name; ``pistio proxy sidecar`` with ADS over TLS and a
pod token, under Istio's outbound capture. ``curl http://<ClusterIP>:8443/`` in plaintext
must arrive at the server over mutual TLS with the Secret's certificate:

- the proxy asks the discovery for ``kubernetes://client-cred`` and ``-cacert`` over ADS;
- rewriting the Secret rotates the client certificate for new connections;
- a DestinationRule naming a Secret that does not exist leaves its cluster waiting (the
  discovery says why, the proxy says what it waits for) and requests fail; creating the
  Secret makes them succeed.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pistio.security.tokens import TokenIssuer
from tests.integration.root_guard import need_root
from tests.integration.test_discovery import pod, write
from tests.unit.proxy.tls.tls_fixtures import Pki

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
PORT = 8443
API_IP, MISSING_IP, CLIENT_IP = "10.99.0.7", "10.99.0.8", "10.99.0.9"
SERVER_NAME = "secure-api.example.com"

CAPTURE_RULES = (
    ("-A", "OUTPUT", "-p", "tcp", "-m", "owner", "--uid-owner", "1337", "-j", "RETURN"),
    ("-A", "OUTPUT", "-p", "tcp", "-m", "owner", "--gid-owner", "1337", "-j", "RETURN"),
    ("-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.0/8", "-j", "RETURN"),
    ("-A", "OUTPUT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"),
)

# HTTP/1.0 (http.server's default): one request per connection, so every request is a new
# upstream TLS handshake and shows the client certificate the proxy has now.
SERVER = """
import http.server, ssl, sys
cert, key, roots, port = sys.argv[1:5]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        peer = self.connection.getpeercert() or {}
        cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn
                   if k == "commonName"), "none")
        body = f"client={cn}\\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(roots)
ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
server = http.server.HTTPServer(("0.0.0.0", int(port)), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


def service(name: str, ip: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {ip}
  selector: {{app: {name}}}
  ports: [{{name: http, port: {PORT}}}]
"""


def destination_rule(host: str, credential: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}
  workloadSelector: {{matchLabels: {{app: sleep}}}}
  trafficPolicy:
    tls:
      mode: MUTUAL
      credentialName: {credential}
      sni: {SERVER_NAME}
      subjectAltNames: [{SERVER_NAME}]
"""


def secret(name: str, chain: bytes, key: bytes, roots: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {b64(chain)}
  tls.key: {b64(key)}
  ca.crt: {b64(roots)}
"""


def _sh(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _wait_file(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never came:\n{log.read_text()}")
        time.sleep(0.05)
    time.sleep(0.05)
    return json.loads(path.read_text())


def test_destination_rule_credential_name_mutual_tls(tmp_path: Path) -> None:
    need_root("create a network namespace and iptables rules",
              ("ip", "iptables", "curl", "setpriv"))
    ns = f"pcred-{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen] = []

    def in_ns(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return _sh("ip", "netns", "exec", ns, *args, timeout=timeout)

    def spawn(name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc, log

    def get(ip: str) -> str:
        got = in_ns("curl", "-s", "-o", "-", "-w", "%{http_code}", "--max-time", "5",
                    f"http://{ip}:{PORT}/")
        return got.stdout

    def until(ip: str, expected: str, what: str, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while (got := get(ip)) != expected:
            assert proxy.poll() is None, proxy_log.read_text()
            assert time.monotonic() < deadline, (
                f"{what}: got {got!r}\n--- proxy\n{proxy_log.read_text()[-4000:]}"
                f"\n--- discovery\n{discovery_log.read_text()[-4000:]}")
            time.sleep(0.2)

    pki = Pki()
    server_chain, server_key = pki.issue(dns=(SERVER_NAME,), common_name="secure-api")
    certs = tmp_path / "server"
    certs.mkdir()
    (certs / "cert.pem").write_bytes(server_chain)
    (certs / "key.pem").write_bytes(server_key)
    (certs / "root.pem").write_bytes(pki.root_pem)
    (tmp_path / "server.py").write_text(SERVER)

    config = tmp_path / "config"
    config.mkdir()
    write(config / "services.yaml", "---".join([service("secure-api", API_IP),
                                                service("missing-api", MISSING_IP)]))
    write(config / "pods.yaml", "---".join([
        pod("secure-api-v1", "secure-api", "v1", "127.0.0.1"),
        pod("missing-api-v1", "missing-api", "v1", "127.0.0.2"),
        pod("sleep-v1", "sleep", "v1", CLIENT_IP),
    ]))
    write(config / "dr.yaml", destination_rule("secure-api", "client-cred"))
    chain1, key1 = pki.issue(common_name="client-v1")
    write(config / "secrets.yaml", secret("client-cred", chain1, key1, pki.root_pem))

    issuer = TokenIssuer.generate()
    issuer.write_jwks(tmp_path / "jwks.json")
    token = tmp_path / "istio-token"
    token.write_text(issuer.issue("default", "sleep", pod_name="sleep-v1"))

    created = _sh("ip", "netns", "add", ns)
    assert created.returncode == 0, created.stderr
    try:
        for cmd in (("ip", "link", "set", "lo", "up"),
                    ("ip", "addr", "add", f"{API_IP}/32", "dev", "lo"),
                    ("ip", "addr", "add", f"{MISSING_IP}/32", "dev", "lo"),
                    *(("iptables", "-t", "nat", *rule) for rule in CAPTURE_RULES)):
            done = in_ns(*cmd)
            assert done.returncode == 0, f"{cmd}: {done.stderr}"

        spawn("server", sys.executable, str(tmp_path / "server.py"), str(certs / "cert.pem"),
              str(certs / "key.pem"), str(certs / "root.pem"), str(PORT))
        discovery, discovery_log = spawn(
            "discovery", sys.executable, "-m", "pistio.cli", "discovery", "--config-dir",
            str(config), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
            "--secure-grpc-addr", "127.0.0.1:0", "--ca-dir", str(tmp_path / "ca"),
            "--token-jwks", str(tmp_path / "jwks.json"),
            "--ready-file", str(tmp_path / "discovery.json"))
        info = _wait_file(tmp_path / "discovery.json", discovery, discovery_log)
        secure = info["secure_grpc_address"]

        proxy, proxy_log = spawn(
            "proxy", "setpriv", "--regid", "1337", "--clear-groups",
            sys.executable, "-m", "pistio.cli", "proxy", "sidecar",
            "--discovery-address", secure, "--xds-tls", "--ca-address", secure,
            "--ca-root-cert", str(tmp_path / "ca" / "root-cert.pem"),
            "--token-file", str(token), "--concurrency", "1", "--pod", "sleep-v1",
            "--namespace", "default", "--service-account", "sleep", "--label", "app=sleep",
            "--label", "version=v1", "--ip", CLIENT_IP,
            "--ready-file", str(tmp_path / "proxy.json"))
        _wait_file(tmp_path / "proxy.json", proxy, proxy_log)

        # Plaintext from the app, mutual TLS with the Secret's certificate to the server.
        until(API_IP, "client=client-v1\n200", "the first request")
        assert get(API_IP) == "client=client-v1\n200"
        dump = json.loads(in_ns("curl", "-s", "--max-time", "5",
                                "http://127.0.0.1:15000/config_dump").stdout)
        active = {s["name"] for s in dump["configs"][-1].get("dynamic_active_secrets", [])}
        assert {"kubernetes://client-cred", "kubernetes://client-cred-cacert"} <= active

        # Rotation: a new certificate in the Secret; the next connections present it.
        chain2, key2 = pki.issue(common_name="client-v2")
        write(config / "secrets.yaml", secret("client-cred", chain2, key2, pki.root_pem))
        until(API_IP, "client=client-v2\n200", "the rotated certificate")

        # A Secret that does not exist: the cluster waits for it, and requests fail.
        write(config / "dr-missing.yaml", destination_rule("missing-api", "no-such-cred"))
        deadline = time.monotonic() + 40
        while "kubernetes://no-such-cred" not in proxy_log.read_text():
            assert time.monotonic() < deadline, proxy_log.read_text()
            time.sleep(0.2)
        assert "CDS outbound|8443||missing-api.default.svc.cluster.local: warming until the " \
            "discovery sends SDS secret(s) kubernetes://no-such-cred" in proxy_log.read_text()
        dump = json.loads(in_ns("curl", "-s", "--max-time", "5",
                                "http://127.0.0.1:15000/config_dump").stdout)
        warming = {s["name"] for s in dump["configs"][-1].get("dynamic_warming_secrets", [])}
        assert "kubernetes://no-such-cred" in warming
        # (the cluster's previous, plaintext version serves while the new one warms: the TLS
        # server drops it; after the fetch timeout it has no client certificate: refused too)
        assert get(MISSING_IP).endswith("503")
        assert "failed to fetch key and certificate for kubernetes://no-such-cred: secret " \
            "default/no-such-cred not found" in discovery_log.read_text()
        assert get(API_IP) == "client=client-v2\n200"  # the other cluster is unaffected

        # The Secret appears: the discovery pushes it, the cluster serves.
        chain3, key3 = pki.issue(common_name="client-v3")
        write(config / "secrets-2.yaml", secret("no-such-cred", chain3, key3, pki.root_pem))
        until(MISSING_IP, "client=client-v3\n200", "the late Secret")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        deleted = _sh("ip", "netns", "del", ns)
        assert deleted.returncode == 0, deleted.stderr
    assert ns not in _sh("ip", "netns", "list").stdout
