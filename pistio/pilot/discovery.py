"""The discovery service (istiod's Pilot): config store + registries → push context → xDS.

Istio's ``pilot/pkg/bootstrap`` wiring, for a config directory:

- the :class:`~pistio.pilot.config_store.ConfigStore` holds the last valid version of every
  resource and reports which keys changed;
- the :class:`~pistio.pilot.registry.AggregateRegistry` merges service sources:
  ``kubernetes`` (Service, Pod, Endpoints, EndpointSlice from the store) and ``serviceentry``
  (ServiceEntry, WorkloadEntry); other sources (the local runtime, a Kubernetes watch) call
  ``discovery.registry.update(name, Snapshot)`` and their changes are pushed the same way;
- every debounced push gets a fresh immutable
  :class:`~pistio.pilot.model.push_context.PushContext` (the transport's ``prepare`` hook);
- a config change is a full push; a registry change that touches endpoints only is an
  EDS-only push, sent only to proxies that can see one of the changed services;
- a Kubernetes ``Secret`` change regenerates SDS only (``kubernetes://`` credentials, see
  :mod:`pistio.pilot.generators.sds`), for the proxies of the Secret's namespace;
- the mesh config is the ``--mesh`` file when given, else (as istiod without one) the
  ``mesh`` key of the ``istio`` ConfigMap in istiod's namespace, applied over Istio's
  defaults; an invalid one is logged and the last good one stays; a change is a full push.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from pistio.api.mesh import MeshConfig, default_mesh_config, load_mesh_config
from pistio.config.resource import Resource
from pistio.pilot import xds_cache
from pistio.pilot.config_store import ConfigStore, FileEvents, StoreKey, file_stamp
from pistio.pilot.generators.cds import ClusterGenerator
from pistio.pilot.generators.connection import connection_proxy
from pistio.pilot.generators.eds import EndpointGenerator
from pistio.pilot.generators.lds import ListenerGenerator
from pistio.pilot.generators.rds import RouteGenerator
from pistio.pilot.generators.sds import SECRET_KIND, SdsErrors, SecretGenerator
from pistio.pilot.metrics import CONVERGENCE_BUCKETS, PUSH_TIME_BUCKETS, Histogram
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.model.service import DEFAULT_DOMAIN_SUFFIX
from pistio.pilot.registry import AggregateRegistry, Snapshot
from pistio.pilot.registry.kubernetes import kubernetes_snapshot
from pistio.pilot.registry.service_entry import service_entry_snapshot
from pistio.pilot.security.credentials import Credentials
from pistio.pilot.security.jwks import JwksResolver
from pistio.security.ca import CertificateAuthority
from pistio.security.ca_server import SecureServer
from pistio.security.istiod import CaOptions, build_ca, secure_server
from pistio.xds import types as T
from pistio.xds.connection import Connection, ConnectionInfo, PushEvent, WatchState
from pistio.xds.debounce import DebounceOptions
from pistio.xds.generator import Generator
from pistio.xds.generator import Resource as XdsResource
from pistio.xds.push_request import ConfigKey, PushRequest
from pistio.xds.server import GRPC_OPTIONS, DiscoveryServer

log = logging.getLogger("pistio.discovery")

KUBERNETES_SOURCE = "kubernetes"
SERVICE_ENTRY_SOURCE = "serviceentry"

# Kinds that only feed the registries: their changes reach proxies through the registry's
# change events (full when a service changed, EDS-only when only endpoints did).
REGISTRY_KINDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "Service"),
        ("", "Pod"),
        ("", "Endpoints"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("networking.istio.io", "ServiceEntry"),
        ("networking.istio.io", "WorkloadEntry"),
    }
)

# Namespace-scoped kinds that only concern proxies in their namespace (or every proxy
# when in the root namespace): Istio's Sidecar-scope dependency tracking, coarse.
NAMESPACE_SCOPED_KINDS = frozenset({"Sidecar", "EnvoyFilter"})

CONTROL_PLANE_ID = "pistiod"
# istiod reads its mesh config from this ConfigMap in its own namespace.
MESH_CONFIG_MAP = "istio"
DEFAULT_MESH_NAMESPACE = "istio-system"


def is_mesh_config(res: Resource) -> bool:
    """Istio config (networking, security, telemetry, extensions, Gateway API) for the push
    context; plain Kubernetes objects feed the registries instead."""
    return _is_mesh_group(res.group)


def proxy_of(info: ConnectionInfo) -> Proxy:
    """The proxy record of a connection, parsed once and shared with the generators."""
    return connection_proxy(info)


def proxy_name(info: ConnectionInfo) -> str:
    """istioctl's NAME for a proxy: ``pod.namespace`` for Istio node ids, else the node id."""
    parts = info.node_id.split("~")
    return parts[2] if len(parts) == 4 and parts[2] else info.node_id


def _load_generators() -> dict[str, Generator]:
    """The xDS builders by type URL (each serves sidecars and proxyless gRPC clients)."""
    return {
        T.CLUSTER: ClusterGenerator(),
        T.ENDPOINT: EndpointGenerator(),
        T.LISTENER: ListenerGenerator(),
        T.ROUTE: RouteGenerator(),
    }


class PilotServer(DiscoveryServer):
    """The transport, plus the timings pilot exports as histograms."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.convergence = Histogram(CONVERGENCE_BUCKETS)
        self.push_time: dict[str, Histogram] = {}

    def push_converged(self, event: PushEvent) -> None:
        super().push_converged(event)
        self.convergence.observe(time.monotonic() - event.request.start)

    def generate(
        self, conn: Connection, state: WatchState, push: PushRequest
    ) -> list[XdsResource] | None:
        start = time.perf_counter()
        try:
            return super().generate(conn, state, push)
        finally:
            short = T.short_name(state.type_url).lower()
            hist = self.push_time.get(short)
            if hist is None:
                hist = self.push_time[short] = Histogram(PUSH_TIME_BUCKETS)
            hist.observe(time.perf_counter() - start)

    def push_types(self, conn: Connection, request: PushRequest) -> list[str]:
        """A push that changed Secrets only regenerates SDS (Istio: only SecretGen cares)."""
        if _secrets_only(request):
            return [T.SECRET] if T.SECRET in conn.watches else []
        return super().push_types(conn, request)

    def generate_untimed(
        self, conn: Connection, state: WatchState, push: PushRequest
    ) -> list[XdsResource] | None:
        """Generation for debug views: not a push, so not in pilot_xds_push_time."""
        return DiscoveryServer.generate(self, conn, state, push)


class Discovery:
    """``pistio discovery``: config directory in, xDS out, debug HTTP beside."""

    def __init__(
        self,
        config_dir: str | Path,
        *,
        mesh_file: str | Path | None = None,
        mesh: MeshConfig | None = None,
        domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
        debounce: DebounceOptions | None = None,
        watch_interval: float = 0.5,
        generators: dict[str, Generator] | None = None,
        ca_options: CaOptions | None = None,
        mesh_namespace: str = DEFAULT_MESH_NAMESPACE,
    ) -> None:
        self.store = ConfigStore(config_dir)
        # Without a file or an explicit mesh config, the istio ConfigMap is the source.
        self.mesh_config_map = (
            StoreKey("", "ConfigMap", mesh_namespace, MESH_CONFIG_MAP)
            if mesh_file is None and mesh is None
            else None
        )
        self._mesh_text: str | None = None  # the ConfigMap's mesh text last looked at
        self.registry = AggregateRegistry()
        self.mesh_file = Path(mesh_file) if mesh_file else None
        self.mesh = mesh or default_mesh_config()
        self.domain_suffix = domain_suffix
        self.watch_interval = watch_interval
        self.started_at = time.time()
        self.push_context: PushContext | None = None
        self.server = PilotServer(
            generators if generators is not None else _load_generators(),
            debounce=debounce,
            prepare=self._prepare,
            needs_push=self._needs_push,
            on_connect=self._on_connect,
            control_plane_id=CONTROL_PLANE_ID,
        )
        # Kubernetes Secrets served as credentials over SDS (Istio's credentials controller).
        self.credentials = Credentials()
        self.sds_errors = SdsErrors()
        if generators is None:
            self.server.register(
                T.SECRET, SecretGenerator(lambda: self.credentials, self.sds_errors))
        self.registry.subscribe(self._on_registry_change)
        self._mesh_stamp = file_stamp(self.mesh_file) if self.mesh_file else None
        self._watcher: asyncio.Task[None] | None = None
        # RequestAuthentication keys fetched from jwksUri, refreshed in the background.
        self.jwks = JwksResolver(on_change=self._on_jwks_change)
        self._jwks_task: asyncio.Task[None] | None = None
        self.ready = False
        # The CA and the TLS port (istiod's 15012): only with a secure address at start().
        self.ca_options = ca_options or CaOptions()
        self.ca: CertificateAuthority | None = None
        self.secure: SecureServer | None = None

    # -- lifecycle -----------------------------------------------------------

    def load(self) -> None:
        """Read the mesh config and the config directory once (no pushes yet)."""
        if self.mesh_file is not None:
            mesh = self._read_mesh()
            if mesh is None:
                raise ValueError(f"invalid mesh config {self.mesh_file}")
            self.mesh = mesh
        self.store.reload()
        self._read_mesh_config_map()
        self._sync_registries()
        self._sync_credentials()
        log.info(
            "config: %d resource(s) loaded from %s; %d service(s), %d endpoint(s)",
            len(self.store),
            self.store.root,
            len(self.registry.services()),
            len(self.registry.endpoints()),
        )

    async def start(self, grpc_address: str = "127.0.0.1:15010",
                    secure_address: str | None = None) -> int:
        """Load config, build the first push context and serve ADS; returns the xDS port.
        With ``secure_address`` (Istio: 15012) the CA runs and serves, with ADS, over TLS."""
        self.load()
        # The first push context exists before any proxy can ask.
        await self.server.push_now(PushRequest(full=True, reasons=frozenset({"initial"})))
        port = await self.server.start(grpc_address)
        if secure_address:
            self.ca = build_ca(self.ca_options, self.mesh.trust_domain or "cluster.local")
            self.secure = secure_server(
                self.ca, self.ca_options, lambda: self.mesh.trust_domain or "cluster.local",
                ads_server=self.server, grpc_options=GRPC_OPTIONS)
            try:
                await self.secure.start(secure_address)
            except Exception:
                await self.server.stop()
                raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="config-watch")
        self._jwks_task = asyncio.get_running_loop().create_task(self.jwks.run(), name="jwks")
        self.ready = True
        return port

    async def stop(self) -> None:
        self.ready = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._jwks_task is not None:
            self._jwks_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._jwks_task
            self._jwks_task = None
        if self.secure is not None:
            await self.secure.stop()
            self.secure = None
        await self.server.stop()

    # -- config and registry changes ------------------------------------------

    def mesh_configs(self) -> list[Resource]:
        return [r for r in self.store if is_mesh_config(r)]

    def _sync_registries(self) -> None:
        resources = list(self.store)
        trust_domain = self.mesh.trust_domain or "cluster.local"
        kube = [r for r in resources if r.group in ("", "discovery.k8s.io")]
        self.registry.update(
            KUBERNETES_SOURCE, kubernetes_snapshot(kube, self.domain_suffix, trust_domain)
        )
        se = [r for r in resources if r.group == "networking.istio.io"]
        self.registry.update(
            SERVICE_ENTRY_SOURCE, service_entry_snapshot(se, self.domain_suffix, trust_domain)
        )

    def _sync_credentials(self) -> bool:
        """Re-index the store's Secrets; True when any changed."""
        fresh = Credentials.from_resources(self.store, self.credentials.authorizer)
        if fresh.same_secrets(self.credentials):
            return False
        self.credentials = fresh
        return True

    def on_config_change(self, changed: Iterable[StoreKey]) -> None:
        """Store keys changed: refresh the registries, push config changes in full."""
        changed = list(changed)
        log.info("config: %d resource(s) changed: %s", len(changed), _summary(changed))
        if self.mesh_config_map in changed and self._read_mesh_config_map():
            self._mesh_changed()
        if any((k.group, k.kind) in REGISTRY_KINDS for k in changed):
            self._sync_registries()
        secrets = frozenset(
            ConfigKey(SECRET_KIND, k.name, k.namespace)
            for k in changed if k.group == "" and k.kind == SECRET_KIND
        )
        if secrets and self._sync_credentials():
            self.server.config_update(
                PushRequest(full=True, configs_updated=secrets, reasons=frozenset({"secret"}))
            )
        config_keys = frozenset(
            ConfigKey(k.kind, k.name, k.namespace)
            for k in changed
            if (k.group, k.kind) not in REGISTRY_KINDS and _is_mesh_group(k.group)
        )
        if config_keys:
            self.server.config_update(
                PushRequest(full=True, configs_updated=config_keys, reasons=frozenset({"config"}))
            )

    def _on_registry_change(self, endpoints_only: bool, hosts: frozenset[str]) -> None:
        if not self.ready:
            return  # startup: the initial push covers it
        keys = frozenset(ConfigKey("ServiceEntry", h) for h in hosts)
        if endpoints_only:
            request = PushRequest(full=False, configs_updated=keys, reasons=frozenset({"endpoint"}))
        else:
            request = PushRequest(full=True, configs_updated=keys, reasons=frozenset({"service"}))
        self.server.config_update(request)

    def update_source(self, name: str, snapshot: Snapshot) -> None:
        """A registry source (the local runtime, Kubernetes) replaces its snapshot."""
        self.registry.update(name, snapshot)

    def _read_mesh(self) -> MeshConfig | None:
        assert self.mesh_file is not None
        mesh, issues = load_mesh_config(self.mesh_file)
        for issue in issues:
            if issue.level == "error":
                log.error("mesh config: %s", issue)
            else:
                log.warning("mesh config: %s", issue)
        return mesh

    def _check_mesh_file(self) -> None:
        if self.mesh_file is None:
            return
        stamp = file_stamp(self.mesh_file)
        if stamp == self._mesh_stamp:
            return
        self._mesh_stamp = stamp
        mesh = self._read_mesh()
        if mesh is None:
            log.error("mesh config: %s rejected; the previous mesh config stays", self.mesh_file)
            return
        self.mesh = mesh
        log.info("mesh config: reloaded %s", self.mesh_file)
        self._mesh_changed()

    def _read_mesh_config_map(self) -> bool:
        """Apply the ``istio`` ConfigMap's ``mesh`` over Istio's defaults; True when the mesh
        config changed. No ConfigMap (or no ``mesh`` key) means the defaults; an invalid
        one is logged and the current mesh config stays."""
        key = self.mesh_config_map
        if key is None:
            return False
        res = self.store.get(key)
        data = getattr(res.obj, "data", {}) if res is not None else {}
        text = data.get("mesh") or ""
        if text == self._mesh_text:
            return False
        self._mesh_text = text
        if not text.strip():
            mesh: MeshConfig | None = default_mesh_config()
        else:
            # A newline keeps a one-line value from being taken for a file name.
            mesh, issues = load_mesh_config(text if "\n" in text else text + "\n")
            where = f"ConfigMap {key.namespace}/{key.name} data.mesh"
            for issue in issues:
                level = logging.ERROR if issue.level == "error" else logging.WARNING
                log.log(level, "mesh config: %s: %s", where, issue)
            if mesh is None:
                log.error("mesh config: %s rejected; the previous mesh config stays", where)
                return False
        assert mesh is not None
        if mesh == self.mesh:
            return False
        self.mesh = mesh
        log.info("mesh config: applied ConfigMap %s/%s", key.namespace, key.name)
        return True

    def _mesh_changed(self) -> None:
        """A new mesh config reaches every proxy (Istio: a global full push)."""
        self._sync_registries()  # the trust domain names endpoint identities
        self.server.config_update(
            PushRequest(
                full=True,
                configs_updated=frozenset({ConfigKey("MeshConfig")}),
                reasons=frozenset({"global"}),
            )
        )

    async def _watch(self) -> None:
        """Reload on file events (inotify), polling every ``watch_interval`` as well."""
        paths = [self.store.root] + ([self.mesh_file] if self.mesh_file else [])
        events = FileEvents.open(paths)
        try:
            while True:
                if events is None:
                    await asyncio.sleep(self.watch_interval)
                else:
                    await events.wait(self.watch_interval)
                try:
                    changed = await asyncio.to_thread(self.store.reload)
                    if changed:
                        self.on_config_change(changed)
                    self._check_mesh_file()
                except Exception:
                    log.exception("config: reload failed")
        finally:
            if events is not None:
                events.close()

    # -- transport hooks -------------------------------------------------------

    def build_push_context(self) -> PushContext:
        return PushContext(
            self.mesh_configs(),
            self.registry.services(),
            self.registry.endpoints(),
            self.mesh,
            self.domain_suffix,
            jwks_resolver=self.jwks,
        )

    def _on_jwks_change(self) -> None:
        """Fetched JWKS changed: every proxy's JWT filter inlines them (Istio pushes in full)."""
        self.server.config_update(
            PushRequest(
                full=True,
                configs_updated=frozenset({ConfigKey("RequestAuthentication")}),
                reasons=frozenset({"jwks"}),
            )
        )

    def _prepare(self, request: PushRequest) -> PushRequest:
        context = self.build_push_context()
        # Generated config whose inputs did not change is reused (Istio's XdsCache).
        xds_cache.inherit(self.push_context, context)
        self.push_context = context
        return replace(request, context=context)

    def _on_connect(self, info: ConnectionInfo) -> None:
        proxy_of(info)

    def _needs_push(self, info: ConnectionInfo, request: PushRequest) -> bool:
        """Skip proxies a change cannot concern (Istio's ProxyNeedsPush, coarsely)."""
        proxy = proxy_of(info)
        keys = request.configs_updated
        if not keys:
            return True
        if request.full:
            if _secrets_only(request):  # credentials reach proxies of their namespace only
                return any(k.namespace == proxy.namespace for k in keys)
            if all(k.kind in NAMESPACE_SCOPED_KINDS for k in keys):
                root = self.mesh.root_namespace or "istio-system"
                return any(k.namespace in (proxy.namespace, root) for k in keys)
            return True
        context: PushContext | None = request.context
        if context is None:
            return True
        hosts = {k.name for k in keys}
        return any(s.hostname in hosts for s in context.services_for(proxy))

    # -- debug views -----------------------------------------------------------

    def connections_for(self, proxy_id: str) -> list[Connection]:
        """Connections of a proxy named by node id, ``pod.namespace`` or connection id."""
        found = []
        for conn in self.server.registry:
            info = conn.info
            if proxy_id in (info.node_id, info.conn_id, proxy_name(info)):
                found.append(conn)
        return found

    def generate_for(self, conn: Connection, type_url: str) -> list[XdsResource]:
        """What the proxy gets for a type from the current push context, within its
        subscription (istiod's config_dump regenerates the same way)."""
        state = conn.watches.get(type_url)
        if state is None:
            return []
        resources = self.server.generate_untimed(conn, state, self.server.request_push())
        return resources or []


def _secrets_only(request: PushRequest) -> bool:
    keys = request.configs_updated
    return bool(request.full and keys and all(k.kind == SECRET_KIND for k in keys))


def _is_mesh_group(group: str) -> bool:
    return group.endswith("istio.io") or (
        group.endswith("networking.k8s.io") and group != "networking.k8s.io"
    )


def _summary(keys: list[StoreKey], limit: int = 5) -> str:
    names = [str(k) for k in sorted(keys)[:limit]]
    more = len(keys) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")
