"""The node's network over real namespaces (root only): a bridge on a random 10.250.x.0/24,
pods as network namespaces, Istio's capture rules and kube-proxy-like service DNAT.

Listeners and clients are small programs of the system python run through ``ip netns exec``;
a listener answers every connection with JSON naming itself, the local port it accepted on
and the connection's SO_ORIGINAL_DST, so a test sees where iptables sent each connection.
Nothing leaves the host: pods have no default route, the host forwards nothing.
"""

from __future__ import annotations

import json
import random
import select
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pistio.node.network import (
    CaptureSpec,
    NetworkError,
    NodeNetwork,
    ServiceNat,
    apply_capture,
    apply_service_nat,
    in_netns,
    list_node_netns,
    pod_netns_name,
    run,
    setup_node_network,
    setup_pod_network,
    teardown_node_network,
    teardown_pod_network,
)
from pistio.node.network.pod_network import NETNS_ETC, host_veth_name
from tests.integration.root_guard import need_root

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(120)]

# The system interpreter: readable by uid 1337, unlike the venv's under /root.
PYTHON = sys.executable

LISTENER = r"""
import json, selectors, socket, struct, sys, time
label, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
sel = selectors.DefaultSelector()
for port in ports:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
deadline = time.monotonic() + 110
while time.monotonic() < deadline:
    for key, _ in sel.select(timeout=1):
        conn, peer = key.fileobj.accept()
        try:
            raw = conn.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST
            orig = "%s:%d" % (socket.inet_ntoa(raw[4:8]), struct.unpack("!H", raw[2:4])[0])
        except OSError:
            orig = None
        reply = {"label": label, "port": conn.getsockname()[1], "original_dst": orig,
                 "peer": peer[0]}
        conn.sendall(json.dumps(reply).encode())
        conn.close()
"""

CLIENT = r"""
import errno, json, socket, sys
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    try:
        with socket.create_connection((ip, port), timeout=5) as s:
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        print(data.decode(), flush=True)
    except OSError as e:
        print(json.dumps({"error": errno.errorcode.get(e.errno, str(e))}), flush=True)
"""


def _need_root() -> None:
    need_root("create network namespaces, a bridge and iptables rules",
              ("ip", "iptables", "iptables-restore", "setpriv"))


def _random_net() -> NodeNetwork:
    tag = uuid.uuid4().hex[:6]
    pod_x, svc_x = random.sample(range(1, 255), 2)
    return NodeNetwork(name=f"pt{tag}", bridge=f"pt{tag}br", pod_cidr=f"10.250.{pod_x}.0/24",
                       service_cidr=f"10.250.{svc_x}.0/24")


def _host_of(cidr: str, n: int) -> str:
    base = cidr.split("/")[0].rsplit(".", 1)[0]
    return f"{base}.{n}"


def _connect(netns: str, ip: str, port: int, count: int = 1,
             as_proxy: bool = False) -> list[dict]:
    # As the proxy does: uid 1337, allowed to read an interpreter under a private home.
    user = ["setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups",
            "--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"] \
        if as_proxy else []
    done = in_netns(netns, *user, PYTHON, "-c", CLIENT, ip, str(port), str(count), timeout=60)
    return [json.loads(line) for line in done.stdout.splitlines()]


def _connect_from_host(ip: str, port: int) -> dict:
    done = run(PYTHON, "-c", CLIENT, ip, str(port), "1")
    return json.loads(done.stdout)


@dataclass
class Node:
    net: NodeNetwork
    pods: dict[str, tuple[str, str]]  # name -> (netns, ip)
    procs: list[subprocess.Popen]

    def listen(self, pod: str, label: str, *ports: int) -> None:
        netns = self.pods[pod][0]
        proc = subprocess.Popen(["ip", "netns", "exec", netns, PYTHON, "-c", LISTENER, label,
                                 *map(str, ports)], stdout=subprocess.PIPE, text=True, cwd="/")
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready and proc.stdout.readline().strip() == "ready", f"{label} did not start"


def _cleanup(net: NodeNetwork, netns_names: list[str], procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
    for netns in netns_names:
        teardown_pod_network(netns)
    teardown_node_network(net)


def _assert_gone(net: NodeNetwork, netns_names: list[str]) -> None:
    listed = run("ip", "netns", "list").stdout
    links = run("ip", "-o", "link", "show").stdout
    for netns in netns_names:
        assert netns not in listed
        assert not Path("/run/netns", netns).exists()
        assert not (NETNS_ETC / netns).exists()
        assert host_veth_name(netns) not in links
    assert f"{net.bridge}:" not in links
    assert net.comment not in run("iptables", "-w", "5", "-S").stdout
    assert list_node_netns(net.name) == []


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    _need_root()
    net = _random_net()
    pods = {name: (pod_netns_name(net.name, "default", name), _host_of(net.pod_cidr, n))
            for n, name in ((2, "a"), (3, "b"), (4, "c"))}
    procs: list[subprocess.Popen] = []
    try:
        setup_node_network(net)
        for name, (netns, ip) in pods.items():
            setup_pod_network(net, netns, ip, hostname=f"{name}-pod", namespace="default",
                              extra_hosts={"10.250.0.77": ["extra", "extra.example"]})
        apply_capture(pods["c"][0], CaptureSpec())
        node = Node(net, pods, procs)
        node.listen("b", "b", 8080, 8081)
        node.listen("c", "c", 8080, 15021, 15001, 15006)
        yield node
    finally:
        _cleanup(net, [netns for netns, _ in pods.values()], procs)
        _assert_gone(net, [netns for netns, _ in pods.values()])


def test_pods_talk_over_the_bridge(node: Node) -> None:
    (a, a_ip), (_, b_ip) = node.pods["a"], node.pods["b"]
    [got] = _connect(a, b_ip, 8080)
    # (no original_dst: B has no nat rules, so nothing tracks its connections)
    assert (got["label"], got["port"], got["peer"]) == ("b", 8080, a_ip)
    # The host (probes, DNS, discovery live there) reaches pods through the bridge.
    assert _connect_from_host(b_ip, 8081)["label"] == "b"
    assert in_netns(a, "ip", "route", "show", "default").stdout.strip() == ""
    routes = in_netns(a, "ip", "route", "show").stdout
    assert f"{node.net.service_cidr} via {node.net.gateway} dev eth0" in routes


def test_resolv_conf_and_hosts_are_seen_through_ip_netns_exec(node: Node) -> None:
    a, a_ip = node.pods["a"]
    resolv = in_netns(a, "cat", "/etc/resolv.conf").stdout
    assert resolv.splitlines() == [
        f"nameserver {node.net.gateway}",
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ]
    hosts = in_netns(a, "cat", "/etc/hosts").stdout
    assert "127.0.0.1\tlocalhost" in hosts
    assert f"{a_ip}\ta-pod" in hosts.splitlines()
    assert "10.250.0.77\textra\textra.example" in hosts.splitlines()
    # glibc reads the mounted files: the pod's hostname and host aliases resolve.
    got = in_netns(a, "getent", "hosts", "a-pod", "extra.example").stdout.split()
    assert got[:2] == [a_ip, "a-pod"] and "10.250.0.77" in got


def test_capture_redirects_outbound_and_inbound(node: Node) -> None:
    (a, a_ip), (_, b_ip), (c, c_ip) = node.pods["a"], node.pods["b"], node.pods["c"]
    # The app's outbound TCP lands on 15001 with the original destination kept.
    [out] = _connect(c, b_ip, 8080)
    assert out["label"] == "c" and out["port"] == 15001
    assert out["original_dst"] == f"{b_ip}:8080"
    # Inbound from another pod lands on 15006.
    [inb] = _connect(a, c_ip, 8080)
    assert (inb["port"], inb["original_dst"], inb["peer"]) == (15006, f"{c_ip}:8080", a_ip)
    # The proxy's own ports are excluded from inbound capture.
    [health] = _connect(a, c_ip, 15021)
    assert health["port"] == 15021
    # uid 1337 (the proxy) is not redirected: it reaches B itself.
    [proxy_out] = _connect(c, b_ip, 8080, as_proxy=True)
    assert (proxy_out["label"], proxy_out["port"], proxy_out["peer"]) == ("b", 8080, c_ip)
    # ... except to the pod's own IP, which loops through inbound capture (Istio's rule).
    [loop] = _connect(c, c_ip, 8080, as_proxy=True)
    assert (loop["port"], loop["original_dst"]) == (15006, f"{c_ip}:8080")
    # The app calling its own pod IP over lo is left alone.
    [own] = _connect(c, c_ip, 8080)
    assert own["port"] == 8080
    # Localhost is never captured.
    [local] = _connect(c, "127.0.0.1", 8080)
    assert local["port"] == 8080


def test_service_nat_reaches_the_endpoints(node: Node) -> None:
    (a, _), (_, b_ip) = node.pods["a"], node.pods["b"]
    vip, empty_vip = _host_of(node.net.service_cidr, 10), _host_of(node.net.service_cidr, 11)
    services = [ServiceNat(vip, 80, "TCP", ((b_ip, 8080), (b_ip, 8081))),
                ServiceNat(empty_vip, 80, "TCP", ())]
    apply_service_nat(a, services)
    apply_service_nat(a, services)  # rewritten whole: still one jump per table
    for table in ("nat", "filter"):
        rules = in_netns(a, "iptables", "-t", table, "-S", "OUTPUT").stdout
        assert rules.count("-j PISTIO-SERVICES") == 1, rules
    got = _connect(a, vip, 80, count=40)
    assert {g.get("label") for g in got} == {"b"}
    assert {g["port"] for g in got} == {8080, 8081}  # both endpoints picked (p miss ~ 1e-12)
    [refused] = _connect(a, empty_vip, 80)
    assert refused == {"error": "ECONNREFUSED"}
    # A rewrite without the first service removes its DNAT.
    apply_service_nat(a, services[1:])
    [gone] = _connect(a, vip, 80)
    assert "error" in gone


def test_teardown_leaves_nothing_behind() -> None:
    _need_root()
    net = _random_net()
    netns = pod_netns_name(net.name, "default", "solo")
    ip = _host_of(net.pod_cidr, 5)
    procs: list[subprocess.Popen] = []
    try:
        setup_node_network(net)
        setup_node_network(net)  # idempotent: one rule, one bridge
        if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() == "1":
            assert run("iptables", "-S", "FORWARD").stdout.count(net.comment) == 1
        setup_pod_network(net, netns, ip, hostname="solo", namespace="default")
        with pytest.raises(NetworkError, match="already exists"):
            setup_pod_network(net, netns, ip, hostname="solo", namespace="default")
        apply_capture(netns, CaptureSpec())
        apply_service_nat(netns, [])
        assert list_node_netns(net.name) == [netns]
        # A leftover process in the namespace is killed by teardown.
        procs.append(subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "60"]))
        teardown_pod_network(netns)
        assert procs[0].wait(timeout=10) != 0
        teardown_pod_network(netns)  # idempotent
        teardown_node_network(net)
        teardown_node_network(net)
        _assert_gone(net, [netns])
    finally:
        _cleanup(net, [netns], procs)


def test_failed_setup_is_undone() -> None:
    _need_root()
    net = _random_net()  # its bridge is never created: attaching the veth fails half-way
    netns = pod_netns_name(net.name, "default", "broken")
    try:
        with pytest.raises(NetworkError, match=net.bridge):
            setup_pod_network(net, netns, _host_of(net.pod_cidr, 6), hostname="broken",
                              namespace="default")
        with pytest.raises(NetworkError, match="not a host address"):
            setup_pod_network(net, netns, "192.0.2.1", hostname="x", namespace="default")
        _assert_gone(net, [netns])
    finally:
        _cleanup(net, [netns], [])
