"""Original destination: ``sockaddr`` parsing, the fallback for connections that were not
redirected, the ``use_original_dst`` listener hand-off, and — as root, in a network namespace
of its own — a real iptables REDIRECT read back with ``SO_ORIGINAL_DST``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from envoy.config.listener.v3 import listener_pb2

from pistio.pilot.networking.listener_filters import socket_address, tcp_proxy_filter
from pistio.proxy.config.listener_config import compile_listener
from pistio.proxy.network.original_dst import (
    handoff_listener,
    original_destination,
    parse_sockaddr_in,
    parse_sockaddr_in6,
)

REPO = Path(__file__).resolve().parents[3]


def test_parse_sockaddr_in_and_in6() -> None:
    raw4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 9080) + bytes([10, 1, 2, 3])
    assert parse_sockaddr_in(raw4 + bytes(8)) == ("10.1.2.3", 9080)
    addr6 = socket.inet_pton(socket.AF_INET6, "fd00::1:2")
    raw6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 443) + bytes(4) + addr6
    assert parse_sockaddr_in6(raw6 + bytes(4)) == ("fd00::1:2", 443)
    assert parse_sockaddr_in(b"\x02\x00") is None
    assert parse_sockaddr_in6(raw6[:10]) is None


def _pair(family: int, host: str):
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((host, 0))
    server.listen()
    client = socket.create_connection(server.getsockname()[:2])
    accepted, _ = server.accept()
    return server, client, accepted


def test_not_redirected_connection_falls_back_to_local_address() -> None:
    server, client, accepted = _pair(socket.AF_INET, "127.0.0.1")
    try:
        assert original_destination(accepted) == accepted.getsockname()
    finally:
        for s in (server, client, accepted):
            s.close()


def test_not_redirected_ipv6_and_dual_stack() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        server, client, accepted = _pair(socket.AF_INET6, "::1")
    except OSError as err:
        pytest.skip(f"::1 unavailable: {err}")
    try:
        assert original_destination(accepted) == accepted.getsockname()[:2]
    finally:
        for s in (server, client, accepted):
            s.close()
    # An IPv4 client of a dual-stack socket is answered in dotted form.
    server = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    client = socket.create_connection(("127.0.0.1", server.getsockname()[1]))
    accepted, _ = server.accept()
    try:
        assert original_destination(accepted) == ("127.0.0.1", server.getsockname()[1])
    finally:
        for s in (server, client, accepted):
            s.close()


def _listener(name: str, address: str, port: int, use_original_dst: bool = False):
    proto = listener_pb2.Listener(name=name, address=socket_address(address, port))
    proto.filter_chains.add().filters.append(tcp_proxy_filter(name, "PassthroughCluster"))
    if use_original_dst:
        proto.use_original_dst.value = True
    return compile_listener(proto)


def test_handoff_prefers_the_exact_address_then_the_wildcard() -> None:
    server, client, accepted = _pair(socket.AF_INET, "127.0.0.1")
    port = accepted.getsockname()[1]
    exact = _listener("127.0.0.1_x", "127.0.0.1", port)
    wildcard = _listener("0.0.0.0_x", "0.0.0.0", port)
    try:
        listeners = {(c.address, c.port): c for c in (exact, wildcard)}
        assert handoff_listener(listeners, accepted) == (exact, ("127.0.0.1", port))
        del listeners[("127.0.0.1", port)]
        assert handoff_listener(listeners, accepted)[0] is wildcard
        assert handoff_listener({}, accepted)[0] is None
    finally:
        for s in (server, client, accepted):
            s.close()


# --- a real REDIRECT, in a namespace of our own ----------------------------------------------

_IN_NAMESPACE = r"""
import json, socket, sys
sys.path.insert(0, sys.argv[1])
from pistio.proxy.network.original_dst import original_destination
listen4, listen6, orig_port, v6 = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
out = {}

def probe(family, bind, target):
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(bind)
    server.listen()
    client = socket.create_connection(target, timeout=5)
    conn, _ = server.accept()
    got = [original_destination(conn), conn.getsockname()[:2]]
    for s in (conn, client, server):
        s.close()
    return got

out["loopback"] = probe(socket.AF_INET, ("0.0.0.0", listen4), ("127.0.0.1", orig_port))
out["pod_ip"] = probe(socket.AF_INET, ("0.0.0.0", listen4), ("10.99.0.1", 80))
if v6:
    out["v6"] = probe(socket.AF_INET6, ("::1", listen6), ("::1", orig_port))
print(json.dumps(out))
"""


def _need_root() -> None:
    why = None
    if os.geteuid() != 0:
        why = "needs root to create a network namespace and iptables rules"
    elif not (shutil.which("ip") and shutil.which("iptables")):
        why = "needs iproute2 and iptables (make deb)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why + " (CI runs this suite as root)")
        pytest.skip(why)


def _sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=20)


@pytest.mark.root
@pytest.mark.netns
def test_iptables_redirect_is_undone_by_so_original_dst() -> None:
    _need_root()
    ns = f"pistio-test-{uuid.uuid4().hex[:8]}"
    listen4, listen6, orig_port = 15001, 15006, 9080

    def in_ns(*args: str) -> subprocess.CompletedProcess:
        return _sh("ip", "netns", "exec", ns, *args)

    created = _sh("ip", "netns", "add", ns)
    assert created.returncode == 0, created.stderr
    try:
        for cmd in (
            ("ip", "link", "set", "lo", "up"),
            ("ip", "addr", "add", "10.99.0.1/32", "dev", "lo"),
            # Only in this namespace: its nat table is its own.
            ("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1",
             "--dport", str(orig_port), "-j", "REDIRECT", "--to-ports", str(listen4)),
            ("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.99.0.1",
             "--dport", "80", "-j", "REDIRECT", "--to-ports", str(listen4)),
        ):
            done = in_ns(*cmd)
            assert done.returncode == 0, f"{cmd}: {done.stderr}"
        v6 = shutil.which("ip6tables") is not None and in_ns(
            "ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "::1", "--dport",
            str(orig_port), "-j", "REDIRECT", "--to-ports", str(listen6),
        ).returncode == 0
        probe = in_ns(sys.executable, "-c", _IN_NAMESPACE, str(REPO), str(listen4),
                      str(listen6), str(orig_port), "1" if v6 else "0")
        assert probe.returncode == 0, probe.stderr
        got = json.loads(probe.stdout)
        assert got["loopback"] == [["127.0.0.1", orig_port], ["127.0.0.1", listen4]]
        assert got["pod_ip"] == [["10.99.0.1", 80], ["127.0.0.1", listen4]]
        if v6:
            assert got["v6"] == [["::1", orig_port], ["::1", listen6]]
    finally:
        deleted = _sh("ip", "netns", "del", ns)
        assert deleted.returncode == 0, deleted.stderr
    assert ns not in _sh("ip", "netns", "list").stdout
