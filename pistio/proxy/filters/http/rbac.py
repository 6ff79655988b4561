"""Envoy's HTTP RBAC filter (``envoy.filters.http.rbac``): allow or deny each request by the
policies of an ``RBAC`` message (compiled by ``pistio.proxy.filters.matchers``).

Per request, on the request headers, in Envoy's order:

1. the **shadow** rules (``shadow_rules``), when present, are evaluated for their stats only:
   ``http.<stat_prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed`` / ``shadow_denied``, and
   the dynamic metadata of ``envoy.filters.http.rbac`` gets
   ``<shadow_rules_stat_prefix>shadow_effective_policy_id`` (when a policy matched) and
   ``<shadow_rules_stat_prefix>shadow_engine_result`` (``allowed`` / ``denied``). Istio's
   CUSTOM action uses this (prefix ``istio_ext_authz_``) to switch ext_authz on;
2. the enforced ``rules``: allowed → ``<rules_stat_prefix>allowed`` and the chain goes on;
   denied → ``<rules_stat_prefix>denied`` and a local reply 403 ``RBAC: access denied`` with
   details ``rbac_access_denied_matched_policy[<policy>]`` (``none`` when no policy matched,
   as with an ALLOW policy that nothing matched). A ``LOG`` action never denies; it writes
   ``access_log_hint`` under ``envoy.common`` and counts ``logged`` / ``not_logged``.

Without ``rules`` the filter allows everything (Envoy's "no engine"). Per-route
``RBACPerRoute`` is refused by the route compiler; the xDS ``matcher`` forms are refused here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2

from pistio.proxy.config.errors import ConfigError
from pistio.proxy.config.unsupported import unsupported_fields
from pistio.proxy.filters.matchers import (
    LOG,
    AuthzContext,
    RbacEngine,
    compile_rules_and_shadow,
    response_detail,
)
from pistio.proxy.http.headers import Fields

if TYPE_CHECKING:
    from pistio.proxy.http.connection_manager import ActiveStream
    from pistio.proxy.stats.store import Counter, StatsStore

RBAC_FILTER_NAME = "envoy.filters.http.rbac"
COMMON_NAMESPACE = "envoy.common"
DENIED_BODY = b"RBAC: access denied"

_ALLOWED: Mapping[str, frozenset[str]] = {
    "envoy.extensions.filters.http.rbac.v3.RBAC": frozenset(
        {"rules", "rules_stat_prefix", "shadow_rules", "shadow_rules_stat_prefix"}
    ),
}


@dataclass(frozen=True, slots=True)
class HttpRbacConfig:
    rules: RbacEngine | None
    shadow: RbacEngine | None
    rules_stat_prefix: str
    shadow_rules_stat_prefix: str


def compile_http_rbac(msg: http_rbac_pb2.RBAC, where: str) -> HttpRbacConfig:
    problems = unsupported_fields(msg, _ALLOWED, where)
    rules, shadow = compile_rules_and_shadow(msg, where, problems)
    if problems:
        raise ConfigError(problems)
    return HttpRbacConfig(rules, shadow, msg.rules_stat_prefix, msg.shadow_rules_stat_prefix)


def unpack_http_rbac(typed: Any, where: str) -> HttpRbacConfig:
    msg = http_rbac_pb2.RBAC()
    typed.Unpack(msg)
    return compile_http_rbac(msg, where)


def authz_context(s: ActiveStream) -> AuthzContext:
    """The facts the RBAC checks of one request read (built once per filter run)."""
    info = s.info
    # info.downstream.remote_address is already the client address the connection manager
    # settled on (x-forwarded-for, pistio.proxy.http.header_sanitizing).
    return AuthzContext(s.request_view(), info.downstream, info.dynamic_metadata,
                        info.filter_state)


def set_metadata(s: ActiveStream, namespace: str, fields: Mapping[str, Any]) -> None:
    """Merge ``fields`` into the stream's dynamic metadata under ``namespace``."""
    info = s.info
    md = info.dynamic_metadata
    if md is None:
        md = info.dynamic_metadata = {}
    md.setdefault(namespace, {}).update(fields)


class RbacFilter:
    """One ``envoy.filters.http.rbac`` entry of a connection manager."""

    __slots__ = ("name", "config", "allowed", "denied", "shadow_allowed", "shadow_denied",
                 "logged", "not_logged", "_shadow_id_key", "_shadow_result_key")

    def __init__(self, name: str, config: HttpRbacConfig, store: StatsStore,
                 stat_prefix: str) -> None:
        self.name = name
        self.config = config
        prefix = f"http.{stat_prefix}.rbac."
        rules, shadow = prefix + config.rules_stat_prefix, prefix + config.shadow_rules_stat_prefix
        self.allowed: Counter = store.counter(rules + "allowed")
        self.denied: Counter = store.counter(rules + "denied")
        self.shadow_allowed: Counter = store.counter(shadow + "shadow_allowed")
        self.shadow_denied: Counter = store.counter(shadow + "shadow_denied")
        self.logged: Counter = store.counter(rules + "logged")
        self.not_logged: Counter = store.counter(rules + "not_logged")
        self._shadow_id_key = config.shadow_rules_stat_prefix + "shadow_effective_policy_id"
        self._shadow_result_key = config.shadow_rules_stat_prefix + "shadow_engine_result"

    # ``encode_headers`` is a no-op: the connection manager skips it.
    encodes = False

    def decode_headers(self, s: ActiveStream, position: int) -> bool:
        config = self.config
        ctx = authz_context(s)
        shadow = config.shadow
        if shadow is not None:
            ok, policy = shadow.evaluate(ctx)
            if ok:
                self.shadow_allowed.value += 1
            else:
                self.shadow_denied.value += 1
            fields = {self._shadow_result_key: "allowed" if ok else "denied"}
            if policy is not None:
                fields[self._shadow_id_key] = policy
            set_metadata(s, RBAC_FILTER_NAME, fields)
            ctx.metadata = s.info.dynamic_metadata
        rules = config.rules
        if rules is None:
            return True
        if rules.action == LOG:
            logged = rules.matched_policy(ctx) is not None
            set_metadata(s, COMMON_NAMESPACE, {"access_log_hint": logged})
            if logged:
                self.logged.value += 1
            else:
                self.not_logged.value += 1
            self.allowed.value += 1
            return True
        ok, policy = rules.evaluate(ctx)
        if ok:
            self.allowed.value += 1
            return True
        self.denied.value += 1
        s.send_local_reply(403, DENIED_BODY, details=response_detail(policy),
                           filter_position=position)
        return False

    def encode_headers(self, s: ActiveStream, status: int, fields: Fields) -> Fields:
        return fields
