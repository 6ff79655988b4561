"""Container probes run the way the kubelet runs them.

``httpGet`` and ``tcpSocket`` go from the node (the host network namespace) to the pod IP —
the bridge routes them, and in an injected pod the rewritten probes hit the agent's status
port, which the inbound capture leaves alone. ``exec`` runs inside the pod's namespace with
the container's environment, directory and user. A probe succeeds on HTTP 200–399, an open
TCP connection, or exit code 0; every probe is bounded by its ``timeoutSeconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pistio.agent.app_health import http_get
from pistio.node.pods.process import exec_argv

__all__ = ["Probe", "run_probe"]

PROBE_USER_AGENT = "kube-probe/1.30"


def _resolve_port(value: Any, container_ports: Sequence[Mapping[str, Any]] | None) -> int:
    if isinstance(value, bool):
        raise ValueError(f"probe port {value!r} is not a number or a port name")
    if isinstance(value, int):
        port = value
    elif isinstance(value, str) and value.isdigit():
        port = int(value)
    elif isinstance(value, str) and value:
        for p in container_ports or ():
            if p.get("name") == value:
                port = int(p.get("containerPort", 0))
                break
        else:
            raise ValueError(f"probe port {value!r} is not a named port of the container")
    else:
        raise ValueError("probe needs a port")
    if not 0 < port < 65536:
        raise ValueError(f"probe port {port} is out of range")
    return port


@dataclass(frozen=True)
class Probe:
    kind: str  # "http" | "tcp" | "exec"
    port: int = 0
    path: str = "/"
    host: str = ""
    scheme: str = "HTTP"
    http_headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    # Kubernetes' defaults; seconds may be fractional here (tests probe fast).
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any],
                  container_ports: Sequence[Mapping[str, Any]] | None = None) -> Probe:
        """A Kubernetes probe (``readinessProbe`` etc.); named ports are resolved against the
        container's ``ports``. :class:`ValueError` for what the node cannot run."""
        timing = {
            "initial_delay": float(spec.get("initialDelaySeconds") or 0),
            "period": float(spec.get("periodSeconds") or 10),
            "timeout": float(spec.get("timeoutSeconds") or 1),
            "success_threshold": int(spec.get("successThreshold") or 1),
            "failure_threshold": int(spec.get("failureThreshold") or 3),
        }
        if timing["period"] <= 0 or timing["timeout"] <= 0:
            raise ValueError("probe periodSeconds and timeoutSeconds must be positive")
        if "httpGet" in spec:
            action = spec["httpGet"] or {}
            scheme = str(action.get("scheme") or "HTTP").upper()
            if scheme not in ("HTTP", "HTTPS"):
                raise ValueError(f"probe scheme {scheme!r} must be HTTP or HTTPS")
            headers = tuple((str(h.get("name", "")), str(h.get("value", "")))
                            for h in action.get("httpHeaders") or [])
            path = str(action.get("path") or "/")
            return cls("http", _resolve_port(action.get("port"), container_ports),
                       path=path if path.startswith("/") else "/" + path,
                       host=str(action.get("host") or ""), scheme=scheme,
                       http_headers=headers, **timing)
        if "tcpSocket" in spec:
            action = spec["tcpSocket"] or {}
            return cls("tcp", _resolve_port(action.get("port"), container_ports),
                       host=str(action.get("host") or ""), **timing)
        if "exec" in spec:
            command = tuple(str(c) for c in (spec["exec"] or {}).get("command") or [])
            if not command:
                raise ValueError("exec probe needs a command")
            return cls("exec", command=command, **timing)
        if "grpc" in spec:
            raise ValueError("grpc probes are not supported by the local runtime")
        raise ValueError("probe needs one of httpGet, tcpSocket or exec")


async def _tcp(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _http(probe: Probe, host: str) -> bool:
    headers = {"User-Agent": PROBE_USER_AGENT, "Accept": "*/*"}
    for name, value in probe.http_headers:
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
        headers[name] = value
    if not any(k.lower() == "host" for k in headers):
        headers["Host"] = f"{host}:{probe.port}"
    try:
        status, _ = await asyncio.wait_for(asyncio.to_thread(
            http_get, host, probe.port, probe.path, scheme=probe.scheme, headers=headers,
            timeout=probe.timeout, max_body=10 * 1024), probe.timeout + 0.5)
    except (TimeoutError, OSError, http.client.HTTPException):
        return False
    return 200 <= status < 400


async def _exec(probe: Probe, netns: str, env: Mapping[str, str] | None, cwd: str | None,
                uid: int | None, gid: int | None) -> bool:
    argv = exec_argv(netns, probe.command, uid=uid, gid=gid)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=dict(env) if env is not None else None,
            cwd=cwd, start_new_session=True)
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), probe.timeout) == 0
    except TimeoutError:
        return False
    finally:
        if proc.returncode is None:  # timed out or cancelled: the whole group goes
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)


async def run_probe(probe: Probe, *, pod_ip: str, netns: str,
                    env: Mapping[str, str] | None = None, cwd: str | None = None,
                    uid: int | None = None, gid: int | None = None) -> bool:
    """One probe attempt: ``True`` on success. ``netns`` "" runs an exec probe on the host."""
    if probe.kind == "http":
        return await _http(probe, probe.host or pod_ip)
    if probe.kind == "tcp":
        return await _tcp(probe.host or pod_ip, probe.port, probe.timeout)
    if probe.kind == "exec":
        return await _exec(probe, netns, env, cwd, uid, gid)
    raise ValueError(f"unknown probe kind {probe.kind!r}")
