"""xDS resources (as ``Any``) compiled into the proxy's immutable config objects, by type.

One entry point per xDS type, so the agent (which compiles to decide ACK or NACK) and each
worker (which recompiles what the agent accepted) run exactly the same code. A resource whose
serialized bytes did not change since the last compilation is not parsed again: Pilot re-sends
every cluster and listener on a full push, and most of them are unchanged.

Beyond the per-resource compilers in ``pistio.proxy.config``, a listener's HTTP connection
managers are looked into here for what the subscription flow needs: the RDS route config names
they reference, their inline ``route_config`` (compiled into a ``RouteTable``) and the RDS
``initial_fetch_timeout`` (Envoy: 15 s when unset, 0 = wait for ever).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from pistio.proxy.config.cluster_config import ClusterConfig, DiscoveryType, compile_cluster
from pistio.proxy.config.endpoints import LoadAssignment, compile_load_assignment
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.listener_config import HCM_TYPE, ListenerConfig, compile_listener
from pistio.proxy.config.route_table import RouteTable
from pistio.proxy.tls.secrets import Secret, compile_secret
from pistio.xds import types as T

# Envoy's ConfigSource.initial_fetch_timeout when the field is unset.
DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0

DEFAULT_CHAIN = -1  # key of a listener's default_filter_chain among its chain indexes


@dataclass(frozen=True, slots=True)
class CompiledCluster:
    config: ClusterConfig
    # EDS: how long the cluster may warm without its ClusterLoadAssignment (None: for ever).
    eds_fetch_timeout: float | None = None

    @property
    def eds_service_name(self) -> str | None:
        if self.config.discovery_type is DiscoveryType.EDS:
            return self.config.eds_service_name
        return None


@dataclass(frozen=True, slots=True)
class CompiledListener:
    config: ListenerConfig
    rds_names: frozenset[str]  # route configurations the HCMs take from RDS
    inline_routes: Mapping[int, RouteTable]  # chain index (DEFAULT_CHAIN) → inline route_config
    rds_fetch_timeout: float | None = None  # None: wait for the routes for ever


Compiled = CompiledCluster | CompiledListener | RouteTable | LoadAssignment | Secret


def _seconds(d: object) -> float:
    return d.seconds + d.nanos / 1e9  # type: ignore[attr-defined]


def _fetch_timeout(source: config_source_pb2.ConfigSource) -> float | None:
    if not source.HasField("initial_fetch_timeout"):
        return DEFAULT_INITIAL_FETCH_TIMEOUT
    return _seconds(source.initial_fetch_timeout) or None


def compile_cluster_resource(proto: cluster_pb2.Cluster) -> CompiledCluster:
    config = compile_cluster(proto)
    timeout = None
    if config.discovery_type is DiscoveryType.EDS:
        timeout = _fetch_timeout(proto.eds_cluster_config.eds_config)
    return CompiledCluster(config, timeout)


def compile_listener_resource(proto: listener_pb2.Listener) -> CompiledListener:
    config = compile_listener(proto)
    problems: list[str] = []
    rds: set[str] = set()
    inline: dict[int, RouteTable] = {}
    timeouts: list[float | None] = []
    chains: list[tuple[int, listener_pb2.FilterChain]] = list(enumerate(proto.filter_chains))
    if proto.HasField("default_filter_chain"):
        chains.append((DEFAULT_CHAIN, proto.default_filter_chain))
    for index, chain in chains:
        for f in chain.filters:
            if f.typed_config.type_url != HCM_TYPE:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            f.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                rds.add(hcm.rds.route_config_name)
                timeouts.append(_fetch_timeout(hcm.rds.config_source))
            elif hcm.HasField("route_config"):
                try:
                    inline[index] = RouteTable.compile(hcm.route_config)
                except ConfigError as err:
                    where = "default_filter_chain" if index == DEFAULT_CHAIN else (
                        f"filter_chains[{index}]")
                    problems.extend(f"Listener {proto.name}: {where} route_config: {p}"
                                    for p in err.problems)
    if problems:
        raise ConfigError(problems)
    timeout = None if not timeouts or None in timeouts else max(t for t in timeouts if t)
    return CompiledListener(config, frozenset(rds), MappingProxyType(inline), timeout)


_PARSERS = {
    T.CLUSTER: (cluster_pb2.Cluster, compile_cluster_resource),
    T.LISTENER: (listener_pb2.Listener, compile_listener_resource),
    T.ROUTE: (route_pb2.RouteConfiguration, RouteTable.compile),
    T.ENDPOINT: (endpoint_pb2.ClusterLoadAssignment, compile_load_assignment),
    # SDS secrets the agent resolved, forwarded to the workers (pistio.proxy.tls.secrets).
    T.SECRET: (secret_pb2.Secret, compile_secret),
}

SUPPORTED_TYPES = frozenset(_PARSERS)


def compile_resource(type_url: str, packed: any_pb2.Any) -> Compiled:
    """Compile one resource of ``type_url``; ``ConfigError`` names every problem."""
    entry = _PARSERS.get(type_url)
    if entry is None:
        raise ConfigError(f"{T.short_name(type_url)}: resource type {type_url} is not supported")
    message_type, compile_fn = entry
    if packed.type_url != type_url:
        raise ConfigError(f"{T.short_name(type_url)}: a {packed.type_url} resource in a "
                          f"{type_url} response")
    try:
        proto = message_type.FromString(packed.value)
    except DecodeError as err:
        raise ConfigError(f"{T.short_name(type_url)}: cannot decode resource: {err}") from None
    return compile_fn(proto)  # type: ignore[operator]


class ResourceCompiler:
    """Compiles resources, remembering per (type, name) the last bytes and their result."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[bytes, Compiled]] = {}
        self.compilations = 0  # resources actually parsed and compiled (not cache hits)

    def compile(self, type_url: str, name: str, packed: any_pb2.Any) -> Compiled:
        key = (type_url, name)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == packed.value and packed.type_url == type_url:
            return hit[1]
        compiled = compile_resource(type_url, packed)
        self.compilations += 1
        self._cache[key] = (packed.value, compiled)
        return compiled

    def retain(self, type_url: str, names: Iterable[str]) -> None:
        """Forget cached results of ``type_url`` for every name not in ``names``."""
        keep = set(names)
        for key in [k for k in self._cache if k[0] == type_url and k[1] not in keep]:
            del self._cache[key]
