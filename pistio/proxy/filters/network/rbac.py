"""Envoy's network RBAC filter (``envoy.filters.network.rbac``): allow or close each
connection by the policies of an ``RBAC`` message (``pistio.proxy.filters.matchers``).

Envoy's ``ONE_TIME_ON_FIRST_BYTE`` enforcement decides once per connection. pistio decides
when the connection is handed to the chain's terminal filter — after the filter chain match
and the TLS handshake, so every fact a TCP policy can name (addresses, ports, SNI, the peer
certificate) is known — which is the same decision Envoy takes on the first byte, taken
without waiting for the client to speak. ``CONTINUOUS`` enforcement (re-evaluation on every
read, for protocol filters that add metadata) is refused: no such filter exists here.

Denied: the connection is closed, ``<stat_prefix>rbac.denied`` (Envoy joins the prefix with
a ``.`` when it has none: Istio's ``tcp.`` gives ``tcp.rbac.denied``) and the connection's
termination details read ``rbac_access_denied_matched_policy[<policy>]``. Shadow rules count
``shadow_allowed`` / ``shadow_denied`` under ``<shadow_rules_stat_prefix>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.unsupported import unsupported_fields
from pistio.proxy.filters.matchers import (
    LOG,
    AuthzContext,
    RbacEngine,
    compile_rules_and_shadow,
    response_detail,
)

if TYPE_CHECKING:
    from pistio.proxy.stats.store import Counter, StatsStore

NETWORK_RBAC_NAME = "envoy.filters.network.rbac"
NETWORK_RBAC_TYPE = "type.googleapis.com/" + net_rbac_pb2.RBAC.DESCRIPTOR.full_name
ONE_TIME_ON_FIRST_BYTE = net_rbac_pb2.RBAC.ONE_TIME_ON_FIRST_BYTE

_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.filters.network.rbac.v3.RBAC": frozenset(
        {"rules", "shadow_rules", "shadow_rules_stat_prefix", "stat_prefix",
         "enforcement_type"}
    ),
}


@dataclass(frozen=True, slots=True)
class NetworkRbacConfig:
    name: str
    stat_prefix: str
    rules: RbacEngine | None
    shadow: RbacEngine | None
    shadow_rules_stat_prefix: str


def compile_network_rbac(typed: Any, name: str, where: str) -> NetworkRbacConfig:
    msg = net_rbac_pb2.RBAC()
    typed.Unpack(msg)
    problems = unsupported_fields(msg, _ALLOWED, where)
    if not msg.stat_prefix:
        problems.append(f"{where}.stat_prefix: must not be empty")
    if msg.enforcement_type != ONE_TIME_ON_FIRST_BYTE:
        problems.append(f"{where}.enforcement_type: only ONE_TIME_ON_FIRST_BYTE is supported "
                        "by pistio")
    rules, shadow = compile_rules_and_shadow(msg, where, problems)
    if problems:
        raise ConfigError(problems)
    return NetworkRbacConfig(name, msg.stat_prefix, rules, shadow, msg.shadow_rules_stat_prefix)


def _join(prefix: str, token: str) -> str:
    """Envoy's ``statPrefixJoin``."""
    if not prefix:
        return token
    return prefix + token if prefix.endswith(".") else f"{prefix}.{token}"


class NetworkRbacFilter:
    """One compiled network RBAC filter with its counters (per worker)."""

    __slots__ = ("config", "allowed", "denied", "shadow_allowed", "shadow_denied", "logged",
                 "not_logged")

    def __init__(self, config: NetworkRbacConfig, store: StatsStore) -> None:
        self.config = config
        prefix = _join(config.stat_prefix, "rbac.")
        shadow = prefix + config.shadow_rules_stat_prefix
        self.allowed: Counter = store.counter(prefix + "allowed")
        self.denied: Counter = store.counter(prefix + "denied")
        self.logged: Counter = store.counter(prefix + "logged")
        self.not_logged: Counter = store.counter(prefix + "not_logged")
        self.shadow_allowed: Counter = store.counter(shadow + "shadow_allowed")
        self.shadow_denied: Counter = store.counter(shadow + "shadow_denied")

    def check(self, conn: DownstreamConnectionInfo) -> str | None:
        """``None`` when the connection may go on, else the termination details."""
        ctx = AuthzContext(None, conn)
        shadow = self.config.shadow
        if shadow is not None:
            if shadow.evaluate(ctx)[0]:
                self.shadow_allowed.value += 1
            else:
                self.shadow_denied.value += 1
        rules = self.config.rules
        if rules is None:
            return None
        if rules.action == LOG:
            if rules.matched_policy(ctx) is not None:
                self.logged.value += 1
            else:
                self.not_logged.value += 1
            self.allowed.value += 1
            return None
        ok, policy = rules.evaluate(ctx)
        if ok:
            self.allowed.value += 1
            return None
        self.denied.value += 1
        return response_detail(policy)


def build_network_rbac(configs: tuple[NetworkRbacConfig, ...], store: StatsStore
                       ) -> tuple[NetworkRbacFilter, ...]:
    return tuple(NetworkRbacFilter(c, store) for c in configs)


def connection_denied(filters: tuple[NetworkRbacFilter, ...],
                      conn: DownstreamConnectionInfo) -> str | None:
    """Run a chain's RBAC filters in order: the first denial's details, or ``None``.

    Call once per connection, after the TLS handshake (peer certificate known) and before
    the terminal filter gets the connection; close the connection on a denial."""
    for f in filters:
        denied = f.check(conn)
        if denied is not None:
            return denied
    return None
