"""The node: one background process per host that runs the mesh (started by ``pistio up``).

It owns the bridge, the cluster DNS server, the discovery process, the pods' processes (through
the supervisor) and the control socket the CLI talks to. On ``pistio down`` (or SIGTERM) it
stops every pod, removes every namespace, rule and file it made, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pistio.node.api import ApiServer
from pistio.node.config import NodeConfig
from pistio.node.controller import PROXY_NAME, Controller, PodRecord
from pistio.node.dns.records import DnsTable
from pistio.node.dns.server import DnsServer
from pistio.node.network.bridge import setup_node_network, teardown_node_network
from pistio.node.pods.env import container_env
from pistio.node.pods.supervisor import Supervisor
from pistio.node.store import BatchError, Incoming, Store
from pistio.node.tokens import PodTokens

log = logging.getLogger("pistio.node")

DISCOVERY_START_TIMEOUT = 60.0
CA_PORT = 15012  # istiod's xDS + CA over TLS


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store = Store()
        self.dns_table = DnsTable()
        self.dns = DnsServer(self.dns_table)
        self.supervisor = Supervisor(config.log_dir, self._pod_changed,
                                     backoff_initial=config.restart_backoff,
                                     backoff_max=config.restart_backoff_max)
        # Pod tokens for the CA, which the discovery runs on the gateway's 15012 with its
        # self-signed root kept in <state>/ca.
        self.tokens = PodTokens(config.state_dir / "tokens",
                                ca_address=f"{config.network.gateway}:{CA_PORT}",
                                ca_root_cert=self.ca_dir / "root-cert.pem")
        self.controller = Controller(config, self.store, self.supervisor, self.dns_table,
                                     self.tokens)
        self.api = ApiServer(config.socket, {
            "ping": self._ping, "apply": self._apply, "delete": self._delete,
            "delete_pod": self._delete_pod, "get": self._get, "status": self._status,
            "exec_info": self._exec_info, "shutdown": self._shutdown,
        })
        self.stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._discovery: subprocess.Popen[bytes] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ca_dir(self) -> Path:
        return self.config.state_dir / "ca"

    # ---- life cycle

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            await asyncio.to_thread(setup_node_network, self.config.network)
            await self.dns.start(self.config.network.gateway, self.config.dns_port)
            self.tokens.start()
            await self._start_discovery()
            self.config.discovery_dir.mkdir(parents=True, exist_ok=True)
            await self.api.start()
            self._write_node_file()
            self._tasks = [asyncio.create_task(self._publisher()),
                           asyncio.create_task(self._watch_discovery()),
                           asyncio.create_task(self._refresh_tokens())]
            log.info("node %s up: bridge %s %s, discovery %s", self.config.network.name,
                     self.config.network.bridge, self.config.network.pod_cidr,
                     self.config.discovery_address)
            await self.stop.wait()
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        log.info("node shutting down")
        for task in self._tasks:
            task.cancel()
        await self.api.close()
        with contextlib.suppress(Exception):
            await self.controller.close()
        await self.supervisor.close()
        self._stop_discovery()
        self.tokens.close()
        await self.dns.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(teardown_node_network, self.config.network)
        for path in (self.config.discovery_dir,):
            shutil.rmtree(path, ignore_errors=True)
        log.info("node down")

    def _write_node_file(self) -> None:
        data = {**self.config.to_json(), "pid": os.getpid(),
                "discovery_pid": self._discovery.pid if self._discovery else None,
                "started": time.time()}
        tmp = self.config.node_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.config.node_file)

    # ---- discovery

    async def _start_discovery(self) -> None:
        ready = self.config.state_dir / "discovery.ready.json"
        ready.unlink(missing_ok=True)
        self.config.discovery_dir.mkdir(parents=True, exist_ok=True)
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        out = (self.config.log_dir / "discovery.log").open("ab")
        self._discovery = subprocess.Popen(
            [sys.executable, "-m", "pistio.cli", "discovery",
             "--config-dir", str(self.config.discovery_dir),
             "--grpc-addr", self.config.discovery_address,
             "--http-addr", self.config.discovery_http,
             "--secure-grpc-addr", self.tokens.ca_address,
             "--ca-dir", str(self.ca_dir),
             "--token-jwks", str(self.tokens.jwks_file),
             "--ready-file", str(ready)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        out.close()
        deadline = time.monotonic() + DISCOVERY_START_TIMEOUT
        while not ready.exists():
            if self._discovery.poll() is not None:
                raise RuntimeError("the discovery exited at start; see "
                                   f"{self.config.log_dir / 'discovery.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("the discovery did not start within "
                                   f"{DISCOVERY_START_TIMEOUT:.0f}s")
            await asyncio.sleep(0.1)

    async def _watch_discovery(self) -> None:
        """A dead discovery is restarted; the proxies keep their last config meanwhile."""
        while True:
            await asyncio.sleep(1.0)
            if self._discovery is not None and self._discovery.poll() is not None:
                log.warning("the discovery exited (%s); restarting it", self._discovery.returncode)
                try:
                    await self._start_discovery()
                    self._write_node_file()
                except RuntimeError as exc:
                    log.error("%s", exc)

    async def _refresh_tokens(self) -> None:
        """The kubelet's token refresh: rewrite pod tokens before they expire."""
        while True:
            await asyncio.sleep(self.tokens.refresh_interval)
            try:
                self.tokens.refresh_due()
            except Exception:
                log.exception("pod token refresh failed")

    def _stop_discovery(self) -> None:
        proc = self._discovery
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    # ---- pod status → publish (debounced: one burst of changes, one publication)

    def _pod_changed(self, key: str) -> None:
        self._changed.set()

    async def _publisher(self) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(0.05)
            self._changed.clear()
            try:
                await self.controller.publish()
            except Exception:
                log.exception("publishing the node's state failed")

    # ---- API

    async def _ping(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid()}

    async def _apply(self, req: dict[str, Any]) -> dict[str, Any]:
        items = [Incoming(**i) for i in req.get("items") or []]
        try:
            objects = self.store.check_apply(items, req.get("namespace") or "default")
        except BatchError as exc:
            return {"ok": False, "errors": exc.errors}
        results = self.store.apply(objects)
        await self.controller.reconcile()
        return {"ok": True, "results": [[o.kind, o.namespace, o.name, what]
                                        for o, what in results]}

    async def _delete(self, req: dict[str, Any]) -> dict[str, Any]:
        items = [Incoming(**i) for i in req.get("items") or []]
        try:
            keys = self.store.check_delete(items, req.get("namespace") or "default",
                                           bool(req.get("ignore_not_found")))
        except BatchError as exc:
            return {"ok": False, "errors": exc.errors}
        removed = self.store.delete(keys)
        await self.controller.reconcile()
        return {"ok": True, "results": [[o.kind, o.namespace, o.name, "deleted"]
                                        for o in removed]}

    async def _delete_pod(self, req: dict[str, Any]) -> dict[str, Any]:
        found = await self.controller.delete_pod(req["namespace"], req["name"])
        if not found:
            return {"ok": False, "errors": [f'pods "{req["name"]}" not found']}
        return {"ok": True, "results": [["Pod", req["namespace"], req["name"], "deleted"]]}

    async def _get(self, req: dict[str, Any]) -> dict[str, Any]:
        kind = req["kind"]
        namespace = req.get("namespace")  # None: every namespace
        out: list[dict[str, Any]] = []
        if kind == "Pod":
            for record in sorted(self.controller.pods.values(), key=lambda r: r.key):
                if namespace is None or record.namespace == namespace:
                    out.append(self._pod_row(record))
        else:
            for obj in sorted(self.store.of_kind(kind, namespace), key=lambda o: o.key):
                data = dict(obj.data)
                meta = dict(data.get("metadata") or {})
                meta.setdefault("creationTimestamp",
                                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(obj.created)))
                meta.setdefault("generation", obj.generation)
                data["metadata"] = meta
                if kind == "Deployment":
                    data["status"] = self.controller.deployment_status(obj)
                out.append(data)
        return {"ok": True, "items": out, "now": time.time()}

    def _pod_row(self, record: PodRecord) -> dict[str, Any]:
        manifest = self.controller.pod_manifest(record)
        meta = dict(manifest.get("metadata") or {})
        meta.setdefault("creationTimestamp",
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)))
        manifest["metadata"] = meta
        return manifest

    async def _status(self, _: dict[str, Any]) -> dict[str, Any]:
        pods = []
        for record in self.controller.pods.values():
            status = self.supervisor.status(record.key)
            pods.append({
                "namespace": record.namespace, "name": record.name, "injected": record.injected,
                "ready": bool(status and status.ready),
                "phase": status.phase if status else "Pending",
                "reasons": sorted({c.reason for c in (status.containers if status else [])
                                   if c.reason and c.state != "running"}),
            })
        for key, why in sorted(self.controller.failed.items()):
            namespace, _, name = key.partition("/")
            pods.append({"namespace": namespace, "name": name, "injected": False,
                         "ready": False, "phase": "Pending", "reasons": [why]})
        syncz: Any = None
        try:
            syncz = await asyncio.to_thread(self._fetch_syncz)
        except OSError as exc:
            syncz = {"error": str(exc)}
        return {"ok": True, "pods": pods, "syncz": syncz, "events": self.controller.events}

    def _fetch_syncz(self) -> Any:
        url = f"http://{self.config.discovery_http}/debug/syncz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    async def _exec_info(self, req: dict[str, Any]) -> dict[str, Any]:
        namespace, target = req["namespace"], req["pod"]
        record = self._find_pod(namespace, target)
        if record is None:
            return {"ok": False, "errors": [f"{target} not found in namespace {namespace}"]}
        containers = (record.manifest.get("spec") or {}).get("containers") or []
        wanted = req.get("container")
        if wanted:
            chosen = next((c for c in containers if c.get("name") == wanted), None)
            if chosen is None:
                names = " ".join(c.get("name", "") for c in containers)
                return {"ok": False, "errors": [
                    f"container {wanted} is not valid for pod {record.name}; "
                    f"valid containers: {names}"]}
        else:  # kubectl's default: the first container that is not the sidecar
            chosen = next((c for c in containers if c.get("name") != PROXY_NAME),
                          containers[0] if containers else None)
        if chosen is None:
            return {"ok": False, "errors": [f"pod {record.name} has no containers"]}
        cm, secrets = self.controller._env_sources(record.namespace)
        env = container_env(record.manifest, chosen, pod_ip=record.ip, config_maps=cm,
                            secrets=secrets)
        cwd = str(Path(record.source_dir, chosen.get("workingDir") or "."))
        return {"ok": True, "pod": record.name, "namespace": record.namespace,
                "container": chosen.get("name"), "netns": record.netns, "env": env, "cwd": cwd,
                "log": str(self.config.log_dir / record.namespace / record.name
                           / f"{chosen.get('name')}.log")}

    def _find_pod(self, namespace: str, target: str) -> PodRecord | None:
        kind, _, name = target.rpartition("/")
        if kind in ("", "pod", "pods", "po"):
            return self.controller.pods.get(f"{namespace}/{name}")
        if kind in ("deploy", "deployment", "deployments"):
            mine = [r for r in self.controller.pods.values()
                    if r.namespace == namespace and r.owner == f"Deployment/{name}"]
            # kubectl picks a running pod; prefer the ready ones, then the newest.
            mine.sort(key=lambda r: (not self._ready(r), -r.created))
            return mine[0] if mine else None
        return None

    def _ready(self, record: PodRecord) -> bool:
        status = self.supervisor.status(record.key)
        return bool(status and status.ready)

    async def _shutdown(self, _: dict[str, Any]) -> dict[str, Any]:
        self.stop.set()
        return {"ok": True}


def main() -> None:
    parser = argparse.ArgumentParser(description="the pistio node (started by `pistio up`)")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args()
    config = NodeConfig.from_json(json.loads((args.state_dir / "node.json").read_text()))
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(Node(config).run())
    except Exception:
        log.exception("the node failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
