"""One pod = one network namespace with a veth on the node's bridge and its own
resolv.conf/hosts under /etc/netns/<netns>/ (``ip netns exec`` bind-mounts them over /etc).

A pod gets a route to the service CIDR via the bridge address and nothing else: no default
route, so its traffic cannot leave the host."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import signal
import time
from pathlib import Path

from pistio.node.network.bridge import NodeNetwork
from pistio.node.network.commands import NetworkError, in_netns, run

NETNS_ETC = Path("/etc/netns")
_KILL_WAIT = 5.0  # seconds for SIGKILLed leftovers to leave the namespace

# kubelet's managed hosts file, minus the comment naming Kubernetes.
_LOCAL_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def pod_netns_name(node: str, namespace: str, pod: str) -> str:
    return f"{node}-{namespace}-{pod}"


def _digest(netns: str) -> str:
    return hashlib.sha256(netns.encode()).hexdigest()


def host_veth_name(netns: str) -> str:
    """The host end of the pod's veth: stable per namespace, unique, <= 15 chars."""
    return f"pv{_digest(netns)[:13]}"


def _temp_peer_name(netns: str) -> str:
    # The pod end is created in the host namespace under this name, then moved and renamed
    # eth0 (creating it as "eth0" on the host would clash with the host's own eth0).
    return f"pp{_digest(netns)[:13]}"


def resolv_conf(net: NodeNetwork, namespace: str) -> str:
    """As the kubelet writes it for dnsPolicy ClusterFirst."""
    return (f"nameserver {net.gateway}\n"
            f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            "options ndots:5\n")


def hosts_file(ip: str, hostname: str, extra_hosts: dict[str, list[str]] | None) -> str:
    text = _LOCAL_HOSTS + f"{ip}\t{hostname}\n"
    if extra_hosts:
        text += "\n# Entries added by HostAliases.\n"
        for addr, names in extra_hosts.items():
            text += "\t".join([addr, *names]) + "\n"
    return text


def _netns_exists(netns: str) -> bool:
    return Path("/run/netns", netns).exists()


def setup_pod_network(net: NodeNetwork, netns: str, ip: str, *, hostname: str,
                      namespace: str, extra_hosts: dict[str, list[str]] | None = None) -> None:
    """Create the pod's namespace, wire it to the bridge and write its resolver files.
    On any failure, what was created is removed again and NetworkError is raised."""
    address = ipaddress.IPv4Address(ip)
    if address not in ipaddress.IPv4Network(net.pod_cidr) or ip == net.gateway:
        raise NetworkError(f"pod IP {ip} is not a host address of {net.pod_cidr} "
                           f"other than the gateway")
    if "/" in netns or netns in ("", ".", ".."):
        raise NetworkError(f"bad network namespace name {netns!r}")
    if _netns_exists(netns):
        # Checked first: the undo below must never delete a namespace we did not create.
        raise NetworkError(f"network namespace {netns} already exists")
    host_end, peer = host_veth_name(netns), _temp_peer_name(netns)
    run("ip", "netns", "add", netns)  # outside the undo: a clash must not delete theirs
    try:
        in_netns(netns, "ip", "link", "set", "dev", "lo", "up")
        run("ip", "link", "add", "name", host_end, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", "dev", peer, "netns", netns)
        run("ip", "link", "set", "dev", host_end, "master", net.bridge)
        run("ip", "link", "set", "dev", host_end, "up")
        in_netns(netns, "ip", "link", "set", "dev", peer, "name", "eth0")
        in_netns(netns, "ip", "addr", "add", f"{ip}/{net.prefixlen}", "dev", "eth0")
        in_netns(netns, "ip", "link", "set", "dev", "eth0", "up")
        in_netns(netns, "ip", "route", "add", net.service_cidr, "via", net.gateway,
                 "dev", "eth0")
        _write_etc(netns, {"resolv.conf": resolv_conf(net, namespace),
                           "hosts": hosts_file(ip, hostname, extra_hosts)})
    except (NetworkError, OSError) as e:
        # The veth may still be in the host namespace (not yet moved): remove it by name.
        run("ip", "link", "del", "dev", host_end, check=False)
        run("ip", "link", "del", "dev", peer, check=False)
        teardown_pod_network(netns)
        if isinstance(e, NetworkError):
            raise
        raise NetworkError(f"pod network {netns}: {e}") from e


def _write_etc(netns: str, files: dict[str, str]) -> None:
    for attempt in range(3):
        try:
            etc = NETNS_ETC / netns
            etc.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (etc / name).write_text(text)
            return
        except FileNotFoundError:
            # Another pod's teardown removed the empty /etc/netns between our mkdirs.
            if attempt == 2:
                raise


def _netns_pids(netns: str) -> list[int]:
    done = run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()] if done.returncode == 0 else []


def teardown_pod_network(netns: str) -> None:
    """Kill what still runs in the namespace, delete it (the veth pair goes with it) and its
    /etc/netns directory. Idempotent."""
    if _netns_exists(netns):
        deadline = time.monotonic() + _KILL_WAIT
        while pids := _netns_pids(netns):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise NetworkError(f"processes {pids} keep running in {netns}")
            time.sleep(0.05)
        done = run("ip", "netns", "del", netns, check=False)
        if done.returncode != 0 and _netns_exists(netns):
            raise NetworkError(f"ip netns del {netns}: {done.stderr.strip()}")
    # The kernel destroys a deleted namespace's veth pair asynchronously; deleting our end
    # now makes teardown complete when it returns (absent already is fine).
    run("ip", "link", "del", host_veth_name(netns), check=False)
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)
    # Leave /etc as found once no pod uses /etc/netns (rmdir fails on a non-empty dir, so a
    # concurrent setup keeps it; _write_etc retries if it lost the race).
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()


def list_node_netns(node: str) -> list[str]:
    """Namespaces (and orphaned /etc/netns dirs) of this node, for cleanup after a crash."""
    prefix = f"{node}-"
    names: set[str] = set()
    done = run("ip", "netns", "list", check=False)
    for line in done.stdout.splitlines():
        name = line.split(" ", 1)[0]
        if name.startswith(prefix):
            names.add(name)
    if NETNS_ETC.is_dir():
        names.update(p.name for p in NETNS_ETC.iterdir() if p.name.startswith(prefix))
    return sorted(names)
