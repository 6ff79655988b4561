"""Envoy's xDS subscription flow on one ADS stream: receive, compile, warm, ACK or NACK,
publish.

The flow, as Envoy runs it with ADS (simplified where noted):

1. **CDS** is subscribed first, as a wildcard. After its first response (accepted or not),
   **LDS** is subscribed, also as a wildcard (Envoy requests listeners once cluster
   initialization is done).
2. After each accepted CDS response, **EDS** is subscribed to the ``service_name`` of every
   EDS cluster; after each accepted LDS response, **RDS** to every route configuration an
   HTTP connection manager names. Names that are no longer referenced are unsubscribed and
   their resources dropped. **SDS** (over ADS) is subscribed to the ``kubernetes://`` secrets
   (a ``credentialName``) that the accepted clusters and listeners reference, as Envoy
   requests an ADS-sourced SDS secret by name; a changed secret applies to new connections.
3. **Warming.** A new or changed EDS cluster is *warming* until a ClusterLoadAssignment for
   its service name has been received, or its ``initial_fetch_timeout`` passes (Envoy's
   default 15 s; 0 — what Istio sends — waits for ever); a timed-out cluster serves with no
   hosts. A new or changed listener warms until every route configuration it references has
   arrived (same timeout rule, from the HCM's RDS config source). While a resource warms, its
   previous version — if any — keeps serving. Simplification: a changed cluster whose
   service's ClusterLoadAssignment is already held warms at once (Envoy waits for a fresh EDS
   response; Pilot sends one after every cluster change anyway).
4. **All or nothing per response.** Every resource of a response is compiled before the
   answer. If any is rejected (``ConfigError``, an undecodable resource, two listeners bound
   to the same address), the whole response is NACKed with every problem in
   ``error_detail`` and nothing of it is applied: all last good resources stay. (Envoy
   applies the valid listeners or clusters of a partly invalid response and names the invalid
   ones; pistio keeps responses atomic.)
5. **Publish.** When the set of active resources changed, an immutable ``ConfigSnapshot``
   with the next version is published to a ``SnapshotHolder``; the data path and the worker
   feed observe it.

While the control plane is away nothing changes: the last snapshot serves, and the
``AdsClient`` reconnects with exponential back-off and resubscribes with the versions it
holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.runtime.resource_compiler import (
    Compiled,
    CompiledCluster,
    CompiledListener,
    ResourceCompiler,
)
from pistio.proxy.runtime.snapshot import ConfigSnapshot, SnapshotHolder, build_snapshot
from pistio.proxy.tls.references import cluster_secrets, listener_secrets
from pistio.proxy.tls.secret_source import SecretProvider, SecretResolver
from pistio.proxy.tls.secrets import (
    ROOT_CERT,
    WORKLOAD_CERT,
    Secret,
    compile_secret,
    is_credential,
    secret_kind,
    to_proto,
)
from pistio.xds import types as T
from pistio.xds.client import AdsClient, ResponseUpdate

log = logging.getLogger("pistio.agent.xds")

# How often file-based SDS secrets (file-cert:, file-root:) are checked for changes.
FILE_SECRET_POLL = 5.0

# The types this flow subscribes to, in Envoy's order.
MANAGED_TYPES: tuple[str, ...] = (T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE)


@dataclass(slots=True)
class Accepted:
    """One accepted resource: the bytes as received (for config dumps and the workers), the
    compiled result, and the version_info of the response that last changed it."""

    packed: any_pb2.Any
    compiled: Compiled
    version: str
    updated_at: float  # wall clock


@dataclass(slots=True)
class Rejected:
    """The last rejected version of a resource (Envoy's ``UpdateFailureState``)."""

    packed: any_pb2.Any
    details: str
    version: str
    at: float


@dataclass(slots=True)
class WarmingSlot:
    """A listener or cluster: the version serving now and the one warming to replace it."""

    active: Accepted | None = None
    warming: Accepted | None = None
    timed_out: bool = False
    timer: asyncio.TimerHandle | None = None
    # SDS secrets (their own init target): timed out waiting, and the timer.
    sds_timed_out: bool = False
    sds_timer: asyncio.TimerHandle | None = None

    @property
    def latest(self) -> Accepted:
        latest = self.warming or self.active
        assert latest is not None
        return latest

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sds_timer is not None:
            self.sds_timer.cancel()
            self.sds_timer = None


@dataclass(slots=True)
class TypeStatus:
    """Per type: counts and the last NACK, for logs and the admin API."""

    version: str = ""
    acks: int = 0
    nacks: int = 0
    last_error: str = ""
    last_updated: float = 0.0  # wall clock of the last accepted response
    rejected: dict[str, Rejected] = field(default_factory=dict)


class ConfigManager:
    """Drives one ``AdsClient`` and keeps the accepted config of the proxy."""

    def __init__(
        self,
        client: AdsClient,
        holder: SnapshotHolder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        client.on_update = self.on_update
        self.holder = holder or SnapshotHolder()
        self.clock = clock
        self.compiler = ResourceCompiler()
        self.clusters: dict[str, WarmingSlot] = {}
        self.listeners: dict[str, WarmingSlot] = {}
        self.endpoints: dict[str, Accepted] = {}  # by EDS service name
        self.routes: dict[str, Accepted] = {}
        self.status: dict[str, TypeStatus] = {t: TypeStatus()
                                              for t in (*MANAGED_TYPES, T.SECRET)}
        self.snapshot_version = 0
        self._eds_names: frozenset[str] | None = None
        self._rds_names: frozenset[str] | None = None
        self._sds_names: frozenset[str] | None = None  # kubernetes:// secrets over ADS
        self._lds_requested = False
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # SDS (pistio.proxy.tls): the agent's SecretManager for `default` / `ROOTCA` (None
        # without a CA; set before start()), files for `file-cert:` / `file-root:`.
        self.secrets: SecretProvider | None = None
        self._resolver: SecretResolver | None = None
        self.active_secrets: dict[str, Secret] = {}  # in the current snapshot
        self.secret_updated: dict[str, float] = {}  # name → wall clock of its last change
        self._packed_secrets: dict[str, tuple[Secret, any_pb2.Any]] = {}
        self._file_timer: asyncio.TimerHandle | None = None

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to clusters and open the stream."""
        self._loop = asyncio.get_running_loop()
        self.secret_resolver()
        self._file_timer = self._loop.call_later(FILE_SECRET_POLL, self._poll_file_secrets)
        self.client.subscribe(T.CLUSTER)
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()
        for slot in (*self.clusters.values(), *self.listeners.values()):
            slot.cancel_timer()
        if self._file_timer is not None:
            self._file_timer.cancel()
            self._file_timer = None

    @property
    def snapshot(self) -> ConfigSnapshot:
        return self.holder.current

    @property
    def initialized(self) -> bool:
        """Envoy's initialization: clusters and listeners answered once, nothing warming."""
        return (
            self.status[T.CLUSTER].acks + self.status[T.CLUSTER].nacks > 0
            and self.status[T.LISTENER].acks + self.status[T.LISTENER].nacks > 0
            and not any(s.warming for s in self.clusters.values())
            and not any(s.warming for s in self.listeners.values())
        )

    async def wait_for(
        self, predicate: Callable[[ConfigManager], bool], timeout: float = 5.0
    ) -> None:
        """Wait until ``predicate(self)`` holds after some response or timer; TimeoutError."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- one response ------------------------------------------------------------------------

    def on_update(self, update: ResponseUpdate) -> str | None:
        """The AdsClient's callback: ``None`` to ACK, the NACK's error text otherwise."""
        type_url = update.type_url
        try:
            if type_url not in self.status:
                return f"resource type {type_url} is not supported by pistio proxy"
            error = (self._apply_secrets(update) if type_url == T.SECRET
                     else self._apply(update))
            status = self.status[type_url]
            if error is None:
                status.acks += 1
                status.version = update.version
                status.last_updated = self.clock()
                status.last_error = ""
            else:
                status.nacks += 1
                status.last_error = error
                log.warning("NACK %s version %s: %s", T.short_name(type_url),
                            update.version or "(none)", error)
            return error
        finally:
            if type_url == T.CLUSTER and not self._lds_requested:
                # Listeners after the first cluster response, whatever its verdict (Envoy's
                # cluster initialization ends either way).
                self._lds_requested = True
                self._subscribe_soon(T.LISTENER, None)
            self._notify()

    def _apply(self, update: ResponseUpdate) -> str | None:
        type_url = update.type_url
        current = self._current_resources(type_url)
        if update.delta:
            incoming = dict(update.resources)
            removed = [n for n in update.removed if n in current]
        elif type_url in T.SOTW_COMPLETE_TYPES:
            incoming = dict(update.resources)
            removed = [n for n in current if n not in incoming]
        else:
            incoming = dict(update.resources)
            removed = []
        compiled: dict[str, Compiled] = {}
        problems: list[str] = []
        failed: dict[str, list[str]] = {}
        for name, packed in incoming.items():
            try:
                compiled[name] = self.compiler.compile(type_url, name, packed)
            except ConfigError as err:
                failed[name] = err.problems
                problems.extend(err.problems)
        if not problems and type_url == T.LISTENER:
            problems = self._address_conflicts(compiled, current, removed)
        if problems:
            now = self.clock()
            status = self.status[type_url]
            for name, why in failed.items():
                status.rejected[name] = Rejected(incoming[name], "; ".join(why),
                                                 update.version, now)
            return "; ".join(problems)

        now = self.clock()
        changed = [n for n, p in incoming.items() if n not in current or current[n] != p.value]
        rejected = self.status[type_url].rejected
        for name in incoming:
            rejected.pop(name, None)
        accepted = {
            name: Accepted(incoming[name], compiled[name], update.version, now) for name in changed
        }
        if type_url == T.CLUSTER:
            self._update_slots(self.clusters, accepted, removed, T.CLUSTER)
            self._resubscribe_endpoints()
            self._resubscribe_secrets()
        elif type_url == T.LISTENER:
            self._update_slots(self.listeners, accepted, removed, T.LISTENER)
            self._resubscribe_routes()
            self._resubscribe_secrets()
        elif type_url == T.ENDPOINT:
            self.endpoints.update(accepted)
            for name in removed:
                self.endpoints.pop(name, None)
        else:
            self.routes.update(accepted)
            for name in removed:
                self.routes.pop(name, None)
        promoted = self._promote()
        dirty = bool(changed or removed or promoted)
        log.info(
            "ACK %s version %s: %d resource(s), %d changed, %d removed",
            T.short_name(type_url), update.version or "(none)",
            len(self._current_resources(type_url)), len(changed), len(removed),
        )
        if dirty:
            self._publish()
        return None

    def _current_resources(self, type_url: str) -> dict[str, bytes]:
        """The bytes of the latest accepted version of each resource of a type."""
        if type_url == T.CLUSTER:
            return {n: s.latest.packed.value for n, s in self.clusters.items()}
        if type_url == T.LISTENER:
            return {n: s.latest.packed.value for n, s in self.listeners.items()}
        table = self.endpoints if type_url == T.ENDPOINT else self.routes
        return {n: a.packed.value for n, a in table.items()}

    def _address_conflicts(
        self, compiled: Mapping[str, Compiled], current: Mapping[str, bytes],
        removed: Iterable[str],
    ) -> list[str]:
        """Envoy refuses two listeners bound to one address and port."""
        listeners: dict[str, CompiledListener] = {
            n: s.latest.compiled for n, s in self.listeners.items()  # type: ignore[misc]
        }
        for name in removed:
            listeners.pop(name, None)
        listeners.update(compiled)  # type: ignore[arg-type]
        owner: dict[tuple[str, int], str] = {}
        problems = []
        for name in sorted(listeners):
            cfg = listeners[name].config
            if not cfg.bind_to_port:
                continue
            key = (cfg.address, cfg.port)
            if key in owner:
                problems.append(f"Listener {name}: address {cfg.address}:{cfg.port} is already "
                                f"used by listener {owner[key]}")
            else:
                owner[key] = name
        return problems

    # -- warming -----------------------------------------------------------------------------

    def _update_slots(
        self,
        slots: dict[str, WarmingSlot],
        accepted: Mapping[str, Accepted],
        removed: Iterable[str],
        type_url: str,
    ) -> None:
        for name in removed:
            slot = slots.pop(name, None)
            if slot is not None:
                slot.cancel_timer()
        for name, entry in accepted.items():
            slot = slots.setdefault(name, WarmingSlot())
            slot.cancel_timer()
            slot.warming = entry
            slot.timed_out = False
            slot.sds_timed_out = False
            timeout = self._fetch_timeout(entry.compiled)
            if timeout is not None and self._loop is not None and not self._warm(slot):
                slot.timer = self._loop.call_later(
                    timeout, self._warming_timeout, type_url, name, entry
                )
            # SDS is a separate init target with its own initial_fetch_timeout.
            needs = cluster_secrets if type_url == T.CLUSTER else listener_secrets
            names, sds_timeout = needs(entry.compiled.config)  # type: ignore[arg-type]
            if names and sds_timeout is not None and self._loop is not None and (
                    not self._secrets_ready(names)):
                slot.sds_timer = self._loop.call_later(
                    sds_timeout, self._sds_timeout, type_url, name, entry)
            resolver = self.secret_resolver()
            awaited = sorted(n for n in names if is_credential(n) and resolver.get(n) is None)
            if awaited:
                log.info("%s %s: warming until the discovery sends SDS secret(s) %s",
                         T.short_name(type_url), name, ", ".join(awaited))

    @staticmethod
    def _fetch_timeout(compiled: Compiled) -> float | None:
        if isinstance(compiled, CompiledCluster):
            return compiled.eds_fetch_timeout if compiled.eds_service_name else None
        if isinstance(compiled, CompiledListener):
            return compiled.rds_fetch_timeout if compiled.rds_names else None
        return None

    def _warm(self, slot: WarmingSlot) -> bool:
        entry = slot.warming
        if entry is None or slot.timed_out:
            return True
        compiled = entry.compiled
        if isinstance(compiled, CompiledCluster):
            service = compiled.eds_service_name
            return (service is None or service in self.endpoints) and (
                slot.sds_timed_out or self._secrets_ready(cluster_secrets(compiled.config)[0]))
        assert isinstance(compiled, CompiledListener)
        return all(name in self.routes for name in compiled.rds_names) and (
            slot.sds_timed_out or self._secrets_ready(listener_secrets(compiled.config)[0]))

    def _sds_timeout(self, type_url: str, name: str, entry: Accepted) -> None:
        slots = self.clusters if type_url == T.CLUSTER else self.listeners
        slot = slots.get(name)
        if slot is None or slot.warming is not entry:
            return
        slot.sds_timer = None
        slot.sds_timed_out = True
        needs = cluster_secrets if type_url == T.CLUSTER else listener_secrets
        resolver = self.secret_resolver()
        missing = [f"{n} ({resolver.errors.get(n, 'unavailable')})"
                   for n in sorted(needs(entry.compiled.config)[0])  # type: ignore[arg-type]
                   if resolver.get(n) is None]
        log.warning("%s %s: initial fetch timeout waiting for SDS secret(s) %s; serving it "
                    "without (its TLS connections fail)", T.short_name(type_url), name,
                    ", ".join(missing) or "(none missing now)")
        if self._promote():
            self._publish()
        self._notify()

    def _promote(self) -> list[str]:
        """Make every warmed resource active; returns the names promoted."""
        promoted = []
        for slots in (self.clusters, self.listeners):
            for name, slot in slots.items():
                if slot.warming is not None and self._warm(slot):
                    slot.active, slot.warming = slot.warming, None
                    slot.cancel_timer()
                    promoted.append(name)
        return promoted

    def _warming_timeout(self, type_url: str, name: str, entry: Accepted) -> None:
        slots = self.clusters if type_url == T.CLUSTER else self.listeners
        slot = slots.get(name)
        if slot is None or slot.warming is not entry:
            return
        slot.timer = None
        slot.timed_out = True
        what = "ClusterLoadAssignment" if type_url == T.CLUSTER else "route configuration(s)"
        log.warning("%s %s: initial fetch timeout waiting for its %s; serving it without",
                    "cluster" if type_url == T.CLUSTER else "listener", name, what)
        if self._promote():
            self._publish()
        self._notify()

    # -- follow-up subscriptions ----------------------------------------------------------------

    def _resubscribe_endpoints(self) -> None:
        names: set[str] = set()
        for slot in self.clusters.values():
            for entry in (slot.active, slot.warming):
                if entry is not None and entry.compiled.eds_service_name:  # type: ignore[union-attr]
                    names.add(entry.compiled.eds_service_name)  # type: ignore[union-attr]
        wanted = frozenset(names)
        if wanted == self._eds_names or (self._eds_names is None and not wanted):
            return
        self._eds_names = wanted
        for name in [n for n in self.endpoints if n not in wanted]:
            del self.endpoints[name]
        self.compiler.retain(T.ENDPOINT, wanted)
        self._subscribe_soon(T.ENDPOINT, wanted)

    def _resubscribe_routes(self) -> None:
        names: set[str] = set()
        for slot in self.listeners.values():
            for entry in (slot.active, slot.warming):
                if entry is not None:
                    names |= entry.compiled.rds_names  # type: ignore[union-attr]
        wanted = frozenset(names)
        if wanted == self._rds_names or (self._rds_names is None and not wanted):
            return
        self._rds_names = wanted
        for name in [n for n in self.routes if n not in wanted]:
            del self.routes[name]
        self.compiler.retain(T.ROUTE, wanted)
        self._subscribe_soon(T.ROUTE, wanted)

    def _resubscribe_secrets(self) -> None:
        """SDS over ADS: the ``kubernetes://`` secrets referenced by any cluster or listener,
        active or warming (Envoy subscribes to an ADS-sourced secret when a resource that
        uses it arrives, and drops it with the last one)."""
        wanted = frozenset(n for n in self.referenced_secrets(include_warming=True)
                           if is_credential(n))
        if wanted == self._sds_names or (self._sds_names is None and not wanted):
            return
        self._sds_names = wanted
        held = self.secret_resolver().ads
        for name in [n for n in held if n not in wanted]:
            del held[name]
        self._subscribe_soon(T.SECRET, wanted)

    def _apply_secrets(self, update: ResponseUpdate) -> str | None:
        """An SDS response: every secret compiles, or the response is NACKed and the secrets
        held stay. A new version of a secret serves new connections (the snapshot carries
        it); warming clusters and listeners waiting for it become active."""
        compiled: dict[str, Secret] = {}
        failed: dict[str, list[str]] = {}
        for name, packed in update.resources.items():
            proto = secret_pb2.Secret()
            try:
                if not packed.Unpack(proto):
                    raise ConfigError(f"Secret {name}: not a Secret ({packed.type_url})")
                if not is_credential(name):
                    raise ConfigError(f"Secret {name}: over ADS pistio proxy takes only "
                                      "kubernetes:// secrets (a credentialName)")
                secret = compile_secret(proto)
                expected = secret_kind(name)
                if expected is not None and expected.value != proto.WhichOneof("type"):
                    raise ConfigError(f"Secret {name}: a {expected.value} secret was "
                                      f"expected, not a {proto.WhichOneof('type')}")
                compiled[name] = dataclasses.replace(secret, version=update.version)
            except ConfigError as err:
                failed[name] = err.problems
        status = self.status[T.SECRET]
        if failed:
            now = self.clock()
            for name, why in failed.items():
                status.rejected[name] = Rejected(update.resources[name], "; ".join(why),
                                                 update.version, now)
            return "; ".join(p for why in failed.values() for p in why)
        held = self.secret_resolver().ads
        wanted = self._sds_names or frozenset()
        changed = []
        for name, secret in compiled.items():
            status.rejected.pop(name, None)
            if name not in wanted:
                continue  # no longer referenced
            old = held.get(name)
            if old is None or old.digest != secret.digest:
                changed.append(name)
            held[name] = secret
        if update.removed:
            # Envoy keeps an SDS secret the server says is gone; so does pistio.
            log.info("SDS: the discovery removed %s; keeping the last version",
                     ", ".join(update.removed))
        log.info("ACK SDS version %s: %d secret(s), %d changed", update.version or "(none)",
                 len(compiled), len(changed))
        if changed:
            promoted = self._promote()
            if self._refresh_secrets() or promoted:
                self._publish()
        return None

    def _subscribe_soon(self, type_url: str, names: Iterable[str] | None) -> None:
        # After the current response's ACK has been queued: the proxy answers what it was
        # sent before it asks for more.
        names = None if names is None else sorted(names)
        if self._loop is None:
            self.client.subscribe(type_url, names)
        else:
            self._loop.call_soon(self.client.subscribe, type_url, names)

    # -- snapshots ---------------------------------------------------------------------------

    def active_resources(self) -> dict[str, dict[str, any_pb2.Any]]:
        """What the current snapshot is built from, as received: the workers rebuild the same
        snapshot from it."""
        clusters = {n: s.active.packed for n, s in self.clusters.items() if s.active}
        services = {
            s.active.compiled.eds_service_name  # type: ignore[union-attr]
            for s in self.clusters.values() if s.active
        }
        resources = {
            T.CLUSTER: clusters,
            T.ENDPOINT: {n: a.packed for n, a in self.endpoints.items() if n in services},
            T.LISTENER: {n: s.active.packed for n, s in self.listeners.items() if s.active},
            T.ROUTE: {n: a.packed for n, a in self.routes.items()},
        }
        if self.active_secrets:  # SDS secrets travel to the workers as Secret resources
            resources[T.SECRET] = {n: self._packed_secret(s)
                                   for n, s in self.active_secrets.items()}
        return resources

    def _publish(self) -> None:
        self._refresh_secrets()
        self.snapshot_version += 1
        snapshot = build_snapshot(
            self.snapshot_version,
            {n: s.active.compiled for n, s in self.clusters.items() if s.active},  # type: ignore[misc]
            {n: a.compiled for n, a in self.endpoints.items()},  # type: ignore[misc]
            {n: s.active.compiled for n, s in self.listeners.items() if s.active},  # type: ignore[misc]
            {n: a.compiled for n, a in self.routes.items()},  # type: ignore[misc]
            {t: s.version for t, s in self.status.items() if t in MANAGED_TYPES or s.version},
            secrets=self.active_secrets,
        )
        self.holder.publish(snapshot)


    # -- SDS secrets (pistio.proxy.tls) ---------------------------------------------------------

    def secret_resolver(self) -> SecretResolver:
        """The resolver over ``self.secrets`` (made, and subscribed to, on first use)."""
        resolver = self._resolver
        if resolver is None or resolver.provider is not self.secrets:
            resolver = self._resolver = SecretResolver(self.secrets)
            if self.secrets is not None:
                self.secrets.subscribe(self.on_secret_changed)
        return resolver

    def _secrets_ready(self, names: Iterable[str]) -> bool:
        """Every secret available. Without a certificate provider (a proxy started without a
        CA) ``default`` and ``ROOTCA`` can never come: they are not awaited, so plaintext
        traffic is served and TLS needing them fails (Envoy would wait for ever)."""
        resolver = self.secret_resolver()
        no_provider = self.secrets is None
        return all(resolver.get(n) is not None
                   or (no_provider and n in (WORKLOAD_CERT, ROOT_CERT)) for n in names)

    def referenced_secrets(self, include_warming: bool = False) -> set[str]:
        names: set[str] = set()
        for slots, needs in ((self.clusters, cluster_secrets), (self.listeners, listener_secrets)):
            for slot in slots.values():
                for entry in (slot.active, slot.warming if include_warming else None):
                    if entry is not None:
                        names |= needs(entry.compiled.config)[0]  # type: ignore[union-attr,arg-type]
        return names

    def _refresh_secrets(self) -> bool:
        """Resolve the secrets of the active resources again; True when any changed."""
        resolver = self.secret_resolver()
        wanted = self.referenced_secrets()
        fresh = {n: s for n in sorted(wanted) if (s := resolver.get(n)) is not None}
        now = self.clock()
        for name, secret in fresh.items():
            old = self.active_secrets.get(name)
            if old is None or old.digest != secret.digest:
                self.secret_updated[name] = now
        changed = fresh.keys() != self.active_secrets.keys() or any(
            fresh[n].digest != self.active_secrets[n].digest for n in fresh)
        self.active_secrets = fresh
        resolver.forget(self.referenced_secrets(include_warming=True))
        return changed

    def on_secret_changed(self, name: str) -> None:
        """The SecretManager's callback (a rotation, new roots): warming resources may be
        ready, and the next snapshot carries the new secret (new connections use it)."""
        if name not in self.referenced_secrets(include_warming=True):
            return
        promoted = self._promote()
        if self._refresh_secrets() or promoted:
            self._publish()
        self._notify()

    def _poll_file_secrets(self) -> None:
        self._file_timer = None
        if any(n.startswith(("file-cert:", "file-root:"))
               for n in self.referenced_secrets(include_warming=True)):
            promoted = self._promote()
            if self._refresh_secrets() or promoted:
                self._publish()
                self._notify()
        if self._loop is not None:
            self._file_timer = self._loop.call_later(FILE_SECRET_POLL, self._poll_file_secrets)

    def _packed_secret(self, secret: Secret) -> any_pb2.Any:
        cached = self._packed_secrets.get(secret.name)
        if cached is None or cached[0] is not secret:
            packed = any_pb2.Any()
            packed.Pack(to_proto(secret))
            cached = self._packed_secrets[secret.name] = (secret, packed)
        return cached[1]
