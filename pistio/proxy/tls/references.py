"""The SDS secrets a listener or cluster needs before it can serve (Envoy's init targets:
a resource with TLS warms until its secrets arrive or their ``initial_fetch_timeout`` passes)."""

from __future__ import annotations

from collections.abc import Iterable

from pistio.proxy.config.cluster_config import ClusterConfig, UpstreamTlsConfig
from pistio.proxy.config.listener_config import DownstreamTlsConfig, ListenerConfig

SdsNeeds = tuple[frozenset[str], float | None]  # names, fetch timeout (None: for ever)
NO_SECRETS: SdsNeeds = (frozenset(), None)


def _combine(contexts: Iterable[DownstreamTlsConfig | UpstreamTlsConfig]) -> SdsNeeds:
    names: set[str] = set()
    timeouts: list[float | None] = []
    for tls in contexts:
        if tls.sds_names:
            names.update(tls.sds_names)
            timeouts.append(tls.sds_fetch_timeout)
    if not names:
        return NO_SECRETS
    if any(t is None for t in timeouts):
        return frozenset(names), None
    return frozenset(names), max(t for t in timeouts if t is not None)


def listener_secrets(config: ListenerConfig) -> SdsNeeds:
    chains = list(config.filter_chains)
    if config.default_filter_chain is not None:
        chains.append(config.default_filter_chain)
    return _combine(c.tls for c in chains if c.tls is not None)


def cluster_secrets(config: ClusterConfig) -> SdsNeeds:
    sockets = [config.transport_socket, *(m.socket for m in config.transport_socket_matches)]
    return _combine(s.tls for s in sockets if s.tls is not None)
