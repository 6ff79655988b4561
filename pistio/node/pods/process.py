"""One container process: how it is started inside its pod and how it is killed.

A container is ``ip netns exec <netns> setpriv [ids] [caps] -- argv``: both tools ``exec``, so
the pid we get is the container's own process. It leads a new session (its process group
is the whole container: whatever it forks without ``setsid`` dies with it), runs in the
given directory with exactly the given environment, and appends stdout and stderr to its
log file.

The proxy runs as uid 1337 while the interpreter lives in a mode-700 home, so the sidecar
keeps ``dac_read_search`` as an ambient capability (read access only); iptables'
``--uid-owner 1337`` then matches the proxy's own traffic as in Istio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["exec_argv", "group_alive", "group_pids", "kill_group", "spawn"]


def exec_argv(netns: str, argv: Sequence[str], *, uid: int | None = None,
              gid: int | None = None, ambient_caps: Sequence[str] = ()) -> list[str]:
    """``ip netns exec <netns> setpriv ... -- argv``, each part only when needed (``netns``
    "" stays in the caller's namespace)."""
    out: list[str] = ["ip", "netns", "exec", netns] if netns else []
    priv: list[str] = []
    if uid is not None:
        priv += ["--reuid", str(uid)]
    if gid is not None:
        priv += ["--regid", str(gid)]
    if uid is not None or gid is not None:
        priv.append("--clear-groups")
    if ambient_caps:
        caps = ",".join("+" + c.lower().removeprefix("cap_") for c in ambient_caps)
        priv += ["--inh-caps", caps, "--ambient-caps", caps]
    if priv:
        out += ["setpriv", *priv, "--"]
    return out + list(argv)


async def spawn(netns: str, argv: Sequence[str], *, env: Mapping[str, str],
                cwd: str | Path | None, log_file: Path, uid: int | None = None,
                gid: int | None = None, ambient_caps: Sequence[str] = ()
                ) -> asyncio.subprocess.Process:
    """Start one container process; raises ``OSError`` when it cannot be started."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        return await asyncio.create_subprocess_exec(
            *exec_argv(netns, argv, uid=uid, gid=gid, ambient_caps=ambient_caps),
            stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd, env=dict(env),
            cwd=str(cwd) if cwd is not None else None, start_new_session=True)
    finally:
        os.close(fd)  # the child has its copy


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) members of process group ``pgid``, from /proc."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            out.append(int(entry.name))
    return sorted(out)


def group_alive(pgid: int) -> bool:
    return bool(group_pids(pgid))


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def terminate_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the container's process group, SIGKILL what is left after ``grace`` seconds,
    and wait (bounded) until the leader is reaped and no member is left."""
    pgid = proc.pid
    if proc.returncode is None or group_alive(pgid):
        kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + max(grace, 0.0)
        while time.monotonic() < deadline and (proc.returncode is None or group_alive(pgid)):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), min(0.05, max(deadline - time.monotonic(),
                                                                  0.001)))
    # Signal only while the group provably exists (unreaped leader or live members): a
    # free pgid number could belong to someone else by now.
    if proc.returncode is None or group_alive(pgid):
        kill_group(pgid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 5)
    deadline = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < deadline:
        kill_group(pgid, signal.SIGKILL)
        await asyncio.sleep(0.02)
