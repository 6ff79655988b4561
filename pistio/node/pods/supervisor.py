"""The node's kubelet for processes: runs each pod's containers, restarts them, probes them.

Semantics follow the kubelet with ``restartPolicy: Always``:

- containers start in the given order, the sidecar (``sidecar=True``) first;
- a container that exits (any code) is restarted after a back-off that starts at
  ``backoff_initial`` and doubles up to ``backoff_max``; it resets once the container ran for
  10 minutes. While waiting the container is ``waiting``/``CrashLoopBackOff``;
- a startup probe gates liveness and readiness; ``failureThreshold`` consecutive liveness (or
  startup) failures kill the container's process group (SIGTERM, SIGKILL after the grace) and
  the restart path takes over; readiness decides ``ready`` (a container without a readiness
  probe is ready once started);
- when the main process exits, the rest of its process group is killed, as a container's
  cgroup would be.

``on_change(key)`` is called (on the event loop) whenever a pod's visible status changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pistio.node.pods.probes import Probe, run_probe
from pistio.node.pods.process import group_pids, kill_group, spawn, terminate_group

__all__ = ["ContainerRun", "ContainerStatus", "PodStatus", "Supervisor"]

log = logging.getLogger("pistio.node.supervisor")

BACKOFF_RESET_AFTER = 600.0  # kubelet: a container that ran 10 minutes starts afresh


@dataclass
class ContainerRun:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | Path | None = None
    uid: int | None = None
    gid: int | None = None
    ambient_caps: tuple[str, ...] = ()
    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    sidecar: bool = False


@dataclass
class ContainerStatus:
    name: str
    ready: bool = False
    restart_count: int = 0
    state: str = "waiting"  # "running" | "waiting" | "terminated"
    reason: str = "ContainerCreating"  # CrashLoopBackOff, Error, Completed, RunContainerError
    pid: int | None = None
    started: bool = False  # startup probe passed (or none)
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None  # of the last exit, 128+signal when killed
    message: str = ""


@dataclass
class PodStatus:
    phase: str  # "Pending" | "Running" | "Failed"
    ready: bool
    start_time: float
    containers: list[ContainerStatus] = field(default_factory=list)


@dataclass
class _Container:
    run: ContainerRun
    status: ContainerStatus
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    ever_started: bool = False


@dataclass
class _Pod:
    key: str
    netns: str
    pod_ip: str
    containers: list[_Container]
    start_time: float
    stopping: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stop_task: asyncio.Task[None] | None = None


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    def __init__(self, log_dir: Path, on_change: Callable[[str], None],
                 backoff_initial: float = 10.0, backoff_max: float = 300.0) -> None:
        self.log_dir = Path(log_dir)
        self.on_change = on_change
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # Grace between SIGTERM and SIGKILL when a failed probe kills a container.
        self.probe_kill_grace = 5.0
        self._pods: dict[str, _Pod] = {}

    # ---- public API
    async def start_pod(self, key: str, netns: str, pod_ip: str,
                        containers: Sequence[ContainerRun]) -> None:
        if key in self._pods:
            raise ValueError(f"pod {key} is already running")
        if "/" not in key:
            raise ValueError(f"pod key {key!r} must be namespace/name")
        names = [c.name for c in containers]
        if len(set(names)) != len(names):
            raise ValueError(f"pod {key}: duplicate container names {names}")
        ordered = sorted(containers, key=lambda c: not c.sidecar)  # stable: sidecar first
        pod = _Pod(key, netns, pod_ip,
                   [_Container(run, ContainerStatus(run.name)) for run in ordered], time.time())
        self._pods[key] = pod
        for c in pod.containers:
            c.task = asyncio.get_running_loop().create_task(
                self._run_container(pod, c), name=f"container {key}/{c.run.name}")
        self._notify(key)

    def status(self, key: str) -> PodStatus | None:
        pod = self._pods.get(key)
        if pod is None:
            return None
        statuses = [copy.copy(c.status) for c in pod.containers]
        all_started = all(c.ever_started for c in pod.containers)
        phase = "Running" if all_started and pod.containers else "Pending"
        ready = phase == "Running" and all(s.ready for s in statuses)
        return PodStatus(phase, ready, pod.start_time, statuses)

    def pids(self, key: str) -> list[int]:
        pod = self._pods.get(key)
        if pod is None:
            return []
        out: set[int] = set()
        for c in pod.containers:
            if c.proc is not None:
                if c.proc.returncode is None:
                    out.add(c.proc.pid)
                out.update(group_pids(c.proc.pid))
        return sorted(out)

    def keys(self) -> list[str]:
        return sorted(self._pods)

    async def stop_pod(self, key: str, grace: float = 5.0) -> None:
        pod = self._pods.get(key)
        if pod is None:
            return
        if pod.stop_task is None:
            pod.stop_task = asyncio.get_running_loop().create_task(self._stop(pod, grace))
        await asyncio.shield(pod.stop_task)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_pod(k) for k in list(self._pods)),
                             return_exceptions=True)

    # ---- internals
    def _notify(self, key: str) -> None:
        try:
            self.on_change(key)
        except Exception:  # a broken listener must not stop the pods
            log.exception("on_change(%s) failed", key)

    def _log_line(self, pod: _Pod, c: _Container, text: str) -> None:
        path = self._log_path(pod, c)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(text.rstrip("\n") + "\n")

    def _log_path(self, pod: _Pod, c: _Container) -> Path:
        namespace, _, name = pod.key.partition("/")
        return self.log_dir / namespace / name / f"{c.run.name}.log"

    async def _sleep(self, pod: _Pod, seconds: float) -> bool:
        """Sleep unless the pod is stopped meanwhile; ``True`` when it was."""
        if pod.stopping:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pod.wake.wait(), max(seconds, 0.0))
        return pod.stopping

    async def _run_container(self, pod: _Pod, c: _Container) -> None:
        backoff = self.backoff_initial
        attempt = 0
        st = c.status
        while not pod.stopping:
            if attempt:
                st.state, st.reason, st.pid = "waiting", "CrashLoopBackOff", None
                st.message = (f"back-off {backoff:g}s restarting failed container="
                              f"{c.run.name} pod={pod.key}")
                self._notify(pod.key)
                if await self._sleep(pod, backoff):
                    break
                backoff = min(backoff * 2, self.backoff_max)
            attempt += 1
            run = c.run
            try:
                proc = await spawn(pod.netns, run.argv, env=run.env, cwd=run.cwd,
                                   log_file=self._log_path(pod, c), uid=run.uid, gid=run.gid,
                                   ambient_caps=run.ambient_caps)
            except OSError as exc:
                self._log_line(pod, c, f"pistio: cannot start container {run.name}: {exc}")
                st.state, st.reason, st.message = "waiting", "RunContainerError", str(exc)
                if attempt > 1:
                    st.restart_count += 1
                self._notify(pod.key)
                continue
            c.proc = proc
            if pod.stopping:  # stop_pod ran while we were starting it
                await terminate_group(proc, 0)
                break
            if attempt > 1:
                st.restart_count += 1
            c.ever_started = True
            st.state, st.reason, st.message = "running", "", ""
            st.pid, st.started_at, st.finished_at = proc.pid, time.time(), None
            st.started = run.startup is None
            st.ready = st.started and run.readiness is None
            self._notify(pod.key)
            probes = asyncio.get_running_loop().create_task(self._probe(pod, c, proc))
            try:
                returncode = await proc.wait()
            finally:
                probes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probes
                kill_group(proc.pid, signal.SIGKILL)  # leftovers of the container
                c.proc = None  # its pid may be reused: never signal that group again
            ran = time.time() - (st.started_at or time.time())
            st.state, st.pid, st.ready = "terminated", None, False
            st.exit_code = _exit_code(returncode)
            st.reason = "Completed" if returncode == 0 else "Error"
            st.finished_at = time.time()
            if not pod.stopping:
                log.info("container %s/%s exited with %d after %.1fs", pod.key, run.name,
                         st.exit_code, ran)
                if ran >= BACKOFF_RESET_AFTER:
                    backoff = self.backoff_initial
                self._notify(pod.key)

    async def _probe(self, pod: _Pod, c: _Container, proc: asyncio.subprocess.Process) -> None:
        run, st = c.run, c.status
        if run.startup is not None:
            if not await self._until(pod, c, run.startup, "startup"):
                await self._kill_for(pod, c, proc, "startup")
                return
            st.started = True
            if run.readiness is None:
                st.ready = True
            self._notify(pod.key)
        loops = []
        if run.liveness is not None:
            loops.append(self._liveness(pod, c, proc, run.liveness))
        if run.readiness is not None:
            loops.append(self._readiness(pod, c, run.readiness))
        if loops:
            await asyncio.gather(*loops)

    async def _attempt(self, pod: _Pod, c: _Container, probe: Probe) -> bool:
        run = c.run
        try:
            return await run_probe(probe, pod_ip=pod.pod_ip, netns=pod.netns, env=run.env,
                                   cwd=str(run.cwd) if run.cwd is not None else None,
                                   uid=run.uid, gid=run.gid)
        except (OSError, ValueError) as exc:
            log.warning("probe of %s/%s failed to run: %s", pod.key, run.name, exc)
            return False

    async def _next(self, pod: _Pod, probe: Probe, last: float | None) -> bool:
        """Wait for the next attempt: ``initialDelaySeconds`` first, then ``periodSeconds``
        from the previous attempt's start. ``False`` when the pod is being stopped."""
        delay = probe.initial_delay if last is None else probe.period - (time.monotonic() - last)
        return not await self._sleep(pod, delay)

    async def _until(self, pod: _Pod, c: _Container, probe: Probe, what: str) -> bool:
        failures, last = 0, None
        while await self._next(pod, probe, last):
            last = time.monotonic()
            if await self._attempt(pod, c, probe):
                return True
            failures += 1
            if failures >= probe.failure_threshold:
                return False
        return False

    async def _liveness(self, pod: _Pod, c: _Container, proc: asyncio.subprocess.Process,
                        probe: Probe) -> None:
        failures, last = 0, None
        while await self._next(pod, probe, last):
            last = time.monotonic()
            if await self._attempt(pod, c, probe):
                failures = 0
                continue
            failures += 1
            if failures >= probe.failure_threshold:
                await self._kill_for(pod, c, proc, "liveness")
                return

    async def _readiness(self, pod: _Pod, c: _Container, probe: Probe) -> None:
        successes = failures = 0
        last = None
        st = c.status
        while await self._next(pod, probe, last):
            last = time.monotonic()
            if await self._attempt(pod, c, probe):
                successes, failures = successes + 1, 0
                if not st.ready and successes >= probe.success_threshold:
                    st.ready = True
                    self._notify(pod.key)
            else:
                successes, failures = 0, failures + 1
                if st.ready and failures >= probe.failure_threshold:
                    st.ready = False
                    self._notify(pod.key)

    async def _kill_for(self, pod: _Pod, c: _Container, proc: asyncio.subprocess.Process,
                        what: str) -> None:
        message = f"Container {c.run.name} failed {what} probe, will be restarted"
        log.info("pod %s: %s", pod.key, message)
        self._log_line(pod, c, f"pistio: {message}")
        c.status.ready = False
        c.status.message = message
        self._notify(pod.key)
        # The main task sees the exit, cleans the group and restarts; this task is then
        # cancelled, which also cuts the grace short once the process is gone.
        kill_group(proc.pid, signal.SIGTERM)
        await asyncio.sleep(self.probe_kill_grace)
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGKILL)

    async def _stop(self, pod: _Pod, grace: float) -> None:
        pod.stopping = True
        pod.wake.set()
        procs = [c.proc for c in pod.containers if c.proc is not None]
        await asyncio.gather(*(terminate_group(p, grace) for p in procs),
                             return_exceptions=True)
        tasks = [c.task for c in pod.containers if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace + 10)
            for task in pending:  # should not happen; do not leave it running
                task.cancel()
        for c in pod.containers:  # a process started while we were stopping
            if c.proc is not None:
                await terminate_group(c.proc, 0)
        self._pods.pop(pod.key, None)
        self._notify(pod.key)
