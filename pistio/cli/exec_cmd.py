"""``pistio exec`` and ``pistio logs``: into a pod's network namespace, and its containers'
output (kubectl exec / kubectl logs)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import click

from pistio.cli.node_client import call, fail, need_root

FOLLOW_POLL = 0.2


def _target(namespace: str | None, pod: str, container: str | None) -> dict:
    return call("exec_info", namespace=namespace or "default", pod=pod, container=container)


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@click.option("-c", "--container", default=None,
              help="Container (default: the first that is not istio-proxy).")
@click.option("-i", "--stdin", "_stdin", is_flag=True, help="Accepted for kubectl's habit.")
@click.option("-t", "--tty", "_tty", is_flag=True, help="Accepted for kubectl's habit.")
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(namespace: str | None, container: str | None, _stdin: bool, _tty: bool, pod: str,
          command: tuple[str, ...]) -> None:
    """Run COMMAND inside POD (or deploy/NAME): its network namespace, resolv.conf and hosts,
    and the container's environment and working directory. The exit code is the command's.

        pistio exec deploy/curl -- curl -s productpage:9080/productpage
    """
    need_root("exec")
    info = _target(namespace, pod, container)
    ip = shutil.which("ip")
    if ip is None:
        fail("`ip` (iproute2) is not installed")
    env = dict(info["env"])
    cwd = info["cwd"] if Path(info["cwd"]).is_dir() else "/"
    os.chdir(cwd)
    sys.stdout.flush()
    # `ip netns exec` also bind-mounts the pod's /etc/netns files over /etc/resolv.conf and
    # /etc/hosts; the command replaces this process, so its exit code is ours.
    os.execve(ip, [ip, "netns", "exec", info["netns"], *command], env)


@click.command()
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@click.option("-c", "--container", default=None,
              help="Container (default: the first that is not istio-proxy).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the container writes.")
@click.option("--tail", type=int, default=-1, help="Lines from the end (-1: all).")
@click.argument("pod")
def logs(namespace: str | None, container: str | None, follow: bool, tail: int,
         pod: str) -> None:
    """Print what a container of POD (or deploy/NAME) wrote to stdout and stderr."""
    info = _target(namespace, pod, container)
    path = Path(info["log"])
    try:
        fh = path.open("rb")
    except OSError:
        fail(f'container "{info["container"]}" in pod "{info["pod"]}" has not written anything '
             "yet")
    with fh:
        data = fh.read()
        if tail >= 0:
            data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        while follow:  # until interrupted, as kubectl logs -f
            chunk = fh.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(FOLLOW_POLL)
