"""The node's controllers: what the kubelet, the ReplicaSet controller, the endpoints
controller, the sidecar injector and kube-proxy do on a cluster, for one host.

``reconcile()`` makes the running pods match the applied Deployments and Pods (creating and
removing network namespaces, starting and stopping containers); ``publish()`` tells everyone
else what is running: the discovery (Services with their ClusterIPs, Pods with their IPs and
readiness), the DNS table, and the NAT rules of pods without a sidecar. Both run under one
lock, so the view they publish is always one consistent state.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pistio.node.config import NodeConfig
from pistio.node.discovery_feed import DiscoveryFeed, stem
from pistio.node.dns.records import DnsTable
from pistio.node.ipam import Ipam
from pistio.node.network.capture import CaptureSpec, apply_capture
from pistio.node.network.commands import NetworkError
from pistio.node.network.pod_network import (
    pod_netns_name,
    setup_pod_network,
    teardown_pod_network,
)
from pistio.node.network.service_nat import ServiceNat, apply_service_nat
from pistio.node.pods.env import container_argv, container_env
from pistio.node.pods.inject import inject, injection_wanted
from pistio.node.pods.probes import Probe
from pistio.node.pods.supervisor import ContainerRun, PodStatus, Supervisor
from pistio.node.prometheus_targets import pod_targets, write_targets
from pistio.node.services import PodView, dns_records, nat_entries
from pistio.node.store import Store, StoredObject
from pistio.node.tokens import PodTokens
from pistio.node.workloads import (
    OWNER_ANNOTATION,
    TEMPLATE_HASH_LABEL,
    bare_pod,
    pod_from_template,
    pod_spec_digest,
    random_suffix,
    replicas,
    template_hash,
)

log = logging.getLogger("pistio.node")

PROXY_NAME = "istio-proxy"
PROXY_CAPS = ("dac_read_search",)  # the proxy's uid 1337 must read an interpreter under /root
# Kinds the discovery has no use for: it reads pods, not their controllers. (Secrets go to
# it: SDS serves credentialName secrets from them, as istiod does.)
NOT_FOR_DISCOVERY = frozenset({"Deployment", "Pod"})


@dataclass
class PodRecord:
    name: str
    namespace: str
    manifest: dict[str, Any]  # as run: after injection
    ip: str
    netns: str
    injected: bool
    source_dir: str
    owner: str = ""  # "Deployment/<name>", or "" for a bare pod
    template_hash: str = ""
    spec_digest: str = ""
    created: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.manifest.get("metadata") or {}).get("labels") or {})


class Controller:
    def __init__(self, config: NodeConfig, store: Store, supervisor: Supervisor,
                 dns: DnsTable, tokens: PodTokens | None = None) -> None:
        self.config = config
        self.tokens = tokens  # pod tokens and CA settings for sidecars; None: no CA
        self.store = store
        self.supervisor = supervisor
        self.dns = dns
        self.feed = DiscoveryFeed(config.discovery_dir)
        net = config.network
        self.pod_ips = Ipam(net.pod_cidr, reserved=1)  # .1 is the bridge's gateway
        self.service_ips = Ipam(net.service_cidr, reserved=9)  # leave .1-.10 to the user
        self.pods: dict[str, PodRecord] = {}
        self.lock = asyncio.Lock()
        self.events: list[str] = []  # recent failures, for `pistio get events`-like answers
        self.failed: dict[str, str] = {}  # pod key → why it could not be created (retried)
        self._nat_applied: dict[str, tuple[ServiceNat, ...]] = {}

    # ---- services

    def _allocate_service_ips(self) -> None:
        live = set()
        for svc in self.store.of_kind("Service"):
            spec = svc.data.setdefault("spec", {})
            owner = f"{svc.namespace}/{svc.name}"
            live.add(owner)
            ip = spec.get("clusterIP")
            if ip == "None" or spec.get("type") == "ExternalName":
                continue
            if ip:
                try:
                    self.service_ips.claim(ip, owner)
                except ValueError as exc:
                    self._event(f"Service {owner}: spec.clusterIP: {exc}")
                    spec.pop("clusterIP", None)
                    ip = ""
            if not ip:
                spec["clusterIP"] = self.service_ips.allocate(owner)
            spec["clusterIPs"] = [spec["clusterIP"]]
        for ip, owner in list(self.service_ips.used.items()):
            if owner not in live:
                self.service_ips.release(ip)

    # ---- pods

    def _desired_pods(self) -> dict[str, tuple[dict[str, Any], str, str, str]]:
        """Pod key → (manifest before injection, owner, template hash, source dir)."""
        want: dict[str, tuple[dict[str, Any], str, str, str]] = {}
        for deploy in self.store.of_kind("Deployment"):
            owner = f"Deployment/{deploy.name}"
            template = (deploy.data.get("spec") or {}).get("template") or {}
            hash_ = template_hash(template)
            keep = [p for p in self.pods.values()
                    if p.namespace == deploy.namespace and p.owner == owner
                    and p.template_hash == hash_]
            keep.sort(key=lambda p: p.created)
            keep = keep[:replicas(deploy)]
            names = [p.name for p in keep]
            while len(names) < replicas(deploy):
                name = f"{deploy.name}-{hash_}-{random_suffix()}"
                if name not in names:
                    names.append(name)
            for name in names:
                manifest = pod_from_template(deploy, name, hash_)
                want[f"{deploy.namespace}/{name}"] = (manifest, owner, hash_, deploy.source_dir)
        for pod in self.store.of_kind("Pod"):
            want[f"{pod.namespace}/{pod.name}"] = (bare_pod(pod), "", "", pod.source_dir)
        return want

    async def reconcile(self) -> None:
        async with self.lock:
            self._allocate_service_ips()
            want = self._desired_pods()
            namespaces = self.store.namespaces()
            for key, record in list(self.pods.items()):
                wanted = want.get(key)
                if wanted is None or (not record.owner and
                                      pod_spec_digest(wanted[0]) != record.spec_digest):
                    await self._remove_pod(record)
            self.failed = {k: v for k, v in self.failed.items() if k in want}
            for key, (manifest, owner, hash_, source_dir) in want.items():
                if key in self.pods:
                    continue
                ns = manifest["metadata"]["namespace"]
                if ns not in namespaces:
                    continue
                try:
                    await self._create_pod(manifest, owner, hash_, source_dir,
                                           namespaces.get(ns, {}))
                except (NetworkError, ValueError) as exc:
                    self.failed[key] = str(exc)
                    self._event(f"Pod {key}: {exc}")
                else:
                    self.failed.pop(key, None)
            await self._publish_locked()

    def _event(self, message: str) -> None:
        log.warning("%s", message)
        self.events = [*self.events[-49:], f"{time.strftime('%H:%M:%S')} {message}"]

    async def _create_pod(self, manifest: dict[str, Any], owner: str, hash_: str,
                          source_dir: str, namespace_labels: Mapping[str, str]) -> None:
        meta = manifest["metadata"]
        name, ns = meta["name"], meta["namespace"]
        digest = pod_spec_digest(manifest)
        injected = injection_wanted(manifest, namespace_labels)
        if injected:
            ca = self._ca_settings(manifest)
            # As Istio's sidecars do, xDS goes to the discovery's TLS port (15012) with the
            # pod token when the CA runs: the stream then has an identity, which SDS needs
            # for DestinationRule credentialName secrets.
            manifest = inject(manifest, discovery_address=ca.get("ca_address")
                              or self.config.discovery_address,
                              proxy_argv_prefix=[sys.executable, "-m", "pistio.cli"], **ca)
        capture = CaptureSpec.from_annotations(meta.get("annotations") or {}) if injected else None
        key = f"{ns}/{name}"
        ip = self.pod_ips.allocate(key)
        netns = pod_netns_name(self.config.network.name, ns, name)
        record = PodRecord(name, ns, manifest, ip, netns, injected, source_dir, owner, hash_,
                           digest)
        hostname = (manifest.get("spec") or {}).get("hostname") or name
        try:
            await asyncio.to_thread(setup_pod_network, self.config.network, netns, ip,
                                    hostname=hostname, namespace=ns)
            if capture is not None:
                await asyncio.to_thread(apply_capture, netns, capture)
        except Exception:
            self.pod_ips.release(ip)
            await asyncio.to_thread(teardown_pod_network, netns)
            raise
        runs = self._container_runs(record)
        self.pods[key] = record
        log.info("pod %s: ip %s, %s", key, ip, "with sidecar" if injected else "no sidecar")
        await self.supervisor.start_pod(key, netns, ip, runs)

    def _ca_settings(self, manifest: dict[str, Any]) -> dict[str, str]:
        """The sidecar's CA flags, with a fresh token for the pod's service account (the
        kubelet's projected ``istio-token``)."""
        if self.tokens is None or not self.tokens.ca_address:
            return {}
        meta, spec = manifest["metadata"], manifest.get("spec") or {}
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        path = self.tokens.issue(meta["namespace"], meta["name"], str(sa),
                                 uid=str(meta.get("uid") or ""), owner=(1337, 1337))
        out = {"ca_address": self.tokens.ca_address, "token_file": str(path)}
        if self.tokens.ca_root_cert is not None:
            out["ca_root_cert"] = str(self.tokens.ca_root_cert)
        return out

    def _container_runs(self, record: PodRecord) -> list[ContainerRun]:
        pod = record.manifest
        spec = pod.get("spec") or {}
        pod_security = spec.get("securityContext") or {}
        config_maps, secrets = self._env_sources(record.namespace)
        runs = []
        containers = sorted(spec.get("containers") or [],
                            key=lambda c: c.get("name") != PROXY_NAME)  # the sidecar first
        for c in containers:
            env = container_env(pod, c, pod_ip=record.ip, config_maps=config_maps,
                                secrets=secrets)
            argv = container_argv(c, env)
            security = {**pod_security, **(c.get("securityContext") or {})}
            uid = security.get("runAsUser")
            gid = security.get("runAsGroup", uid)
            sidecar = c.get("name") == PROXY_NAME
            ports = c.get("ports") or []
            runs.append(ContainerRun(
                name=c["name"], argv=argv, env=env,
                cwd=str(Path(record.source_dir, c.get("workingDir") or ".")),
                uid=uid, gid=gid, ambient_caps=PROXY_CAPS if sidecar else (),
                readiness=_probe(c.get("readinessProbe"), ports),
                liveness=_probe(c.get("livenessProbe"), ports),
                startup=_probe(c.get("startupProbe"), ports),
                sidecar=sidecar,
            ))
        return runs

    def _env_sources(self, namespace: str) -> tuple[dict, dict]:
        config_maps = {(o.namespace, o.name): dict(o.data.get("data") or {})
                       for o in self.store.of_kind("ConfigMap", namespace)}
        secrets = {(o.namespace, o.name): _secret_data(o)
                   for o in self.store.of_kind("Secret", namespace)}
        return config_maps, secrets

    async def _remove_pod(self, record: PodRecord) -> None:
        log.info("pod %s: removing", record.key)
        await self.supervisor.stop_pod(record.key)
        await asyncio.to_thread(teardown_pod_network, record.netns)
        self.pod_ips.release(record.ip)
        self.pods.pop(record.key, None)
        if self.tokens is not None:
            self.tokens.remove(record.namespace, record.name)
        self._nat_applied.pop(record.netns, None)

    async def delete_pod(self, namespace: str, name: str) -> bool:
        """``kubectl delete pod``: a deployment's pod comes back under a new name."""
        async with self.lock:
            record = self.pods.get(f"{namespace}/{name}")
            if record is None:
                return False
            await self._remove_pod(record)
        await self.reconcile()
        return True

    async def close(self) -> None:
        async with self.lock:
            for record in list(self.pods.values()):
                await self._remove_pod(record)

    # ---- publishing

    def status_of(self, record: PodRecord) -> PodStatus | None:
        return self.supervisor.status(record.key)

    def pod_view(self, record: PodRecord) -> PodView:
        status = self.status_of(record)
        return PodView(record.name, record.namespace, record.ip, record.labels,
                       bool(status and status.ready),
                       (record.manifest.get("spec") or {}).get("containers") or [])

    async def publish(self) -> None:
        async with self.lock:
            await self._publish_locked()

    async def _publish_locked(self) -> None:
        views = [self.pod_view(r) for r in self.pods.values()]
        services = [s.data for s in self.store.of_kind("Service")]
        self.dns.replace(dns_records(services, views))
        objects: dict[str, Mapping[str, Any]] = {}
        for obj in self.store.objects.values():
            if obj.kind not in NOT_FOR_DISCOVERY:
                objects[stem(obj.kind, obj.namespace, obj.name)] = obj.data
        for record in self.pods.values():
            objects[stem("Pod", record.namespace, record.name)] = self.pod_manifest(record)
        changed = await asyncio.to_thread(self.feed.publish, objects)
        if changed:
            log.debug("published %d change(s) to the discovery", changed)
        await asyncio.to_thread(write_targets, self.config.state_dir, pod_targets(
            (r.manifest, r.ip, (st := self.status_of(r)) is not None and st.phase == "Running")
            for r in self.pods.values()))
        entries = tuple(nat_entries(services, views))
        for record in list(self.pods.values()):
            if record.injected or self._nat_applied.get(record.netns) == entries:
                continue
            try:
                await asyncio.to_thread(apply_service_nat, record.netns, entries)
                self._nat_applied[record.netns] = entries
            except NetworkError as exc:
                self._event(f"Pod {record.key}: service NAT: {exc}")

    def pod_manifest(self, record: PodRecord) -> dict[str, Any]:
        """The pod as ``kubectl get pod -o yaml`` would show it, status included."""
        status = self.status_of(record)
        out = dict(record.manifest)
        phase = status.phase if status else "Pending"
        ready = bool(status and status.ready)
        started = status.start_time if status and status.start_time else record.created
        out["status"] = {
            "phase": phase,
            "podIP": record.ip,
            "podIPs": [{"ip": record.ip}],
            "hostIP": self.config.network.gateway,
            "startTime": _rfc3339(started),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {"name": c.name, "ready": c.ready, "restartCount": c.restart_count,
                 "state": {c.state: {"reason": c.reason} if c.reason else {}}}
                for c in (status.containers if status else [])
            ],
        }
        return out

    def deployment_status(self, deploy: StoredObject) -> dict[str, int]:
        owner = f"Deployment/{deploy.name}"
        hash_ = template_hash((deploy.data.get("spec") or {}).get("template") or {})
        mine = [r for r in self.pods.values()
                if r.namespace == deploy.namespace and r.owner == owner]
        ready = [r for r in mine if (s := self.status_of(r)) is not None and s.ready]
        return {
            "replicas": len(mine),
            "updatedReplicas": sum(1 for r in mine if r.template_hash == hash_),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
        }


def _probe(spec: Any, ports: Any) -> Probe | None:
    return Probe.from_spec(spec, ports) if isinstance(spec, dict) and spec else None


def _secret_data(obj: StoredObject) -> dict[str, str]:
    import base64

    out = {k: str(v) for k, v in (obj.data.get("stringData") or {}).items()}
    for k, v in (obj.data.get("data") or {}).items():
        try:
            out.setdefault(k, base64.b64decode(str(v)).decode())
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


__all__ = ["Controller", "PodRecord", "OWNER_ANNOTATION", "TEMPLATE_HASH_LABEL"]
