"""AuthorizationPolicy → Envoy filters for one workload (Istio's ``authz/builder``).

Istio builds separate filters so that evaluation order is CUSTOM → DENY → ALLOW:

- CUSTOM: an ``envoy.filters.http.rbac`` whose *shadow* rules (action DENY, policy names
  prefixed ``istio-ext-authz-``, ``shadow_rules_stat_prefix: istio_ext_authz_``) only mark
  matching requests in dynamic metadata, then ``envoy.filters.http.ext_authz`` enabled by
  ``filter_enabled_metadata`` on that mark (``envoy.filters.http.rbac`` /
  ``istio_ext_authz_shadow_effective_policy_id`` prefix ``istio-ext-authz``); TCP chains get
  the network RBAC + network ext_authz for gRPC providers only;
- then one RBAC filter per action present, in Istio's order: AUDIT (action LOG), DENY,
  ALLOW. An ALLOW filter with no matching policy denies, so a policy without rules
  ("allow-nothing") denies everything; a DENY rule ``{}`` denies everything.

Policies annotated ``istio.io/dry-run: "true"`` go to ``shadow_rules`` (stat prefix
``istio_dry_run_allow_`` / ``istio_dry_run_deny_``). Policy names are
``ns[<ns>]-policy[<name>]-rule[<index>]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as http_ext_authz
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as tcp_ext_authz
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac
from envoy.type.matcher.v3 import metadata_pb2, string_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import duration_pb2

from pistio.api.mesh import ExtensionProvider
from pistio.config.resource import Resource
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.security.authz_model import ALLOW, DENY, LOG, RuleError, RuleModel
from pistio.pilot.security.policies import AUTHORIZATION_POLICY, policies_for_workload
from pistio.xds.any_codec import pack

log = logging.getLogger("pistio.authz")

HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
TCP_RBAC_FILTER = "envoy.filters.network.rbac"
HTTP_EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
TCP_EXT_AUTHZ_FILTER = "envoy.filters.network.ext_authz"
TCP_STAT_PREFIX = "tcp."
DRY_RUN_ANNOTATION = "istio.io/dry-run"
SHADOW_ALLOW_PREFIX = "istio_dry_run_allow_"
SHADOW_DENY_PREFIX = "istio_dry_run_deny_"
EXT_AUTHZ_SHADOW_PREFIX = "istio_ext_authz_"
SHADOW_EFFECTIVE_POLICY_ID = "shadow_effective_policy_id"
SHADOW_ENGINE_RESULT = "shadow_engine_result"
EXT_AUTHZ_MATCH_PREFIX = "istio-ext-authz"
BAD_CUSTOM_SUFFIX = "-deny-due-to-bad-CUSTOM-action"
DEFAULT_EXT_AUTHZ_TIMEOUT = 600  # seconds, Istio's placeholder: DestinationRule sets the real one

# rbacPolicyMatchNever: the policy of an AuthorizationPolicy without rules.
MATCH_NEVER = rbac_pb2.Policy(
    permissions=[rbac_pb2.Permission(not_rule=rbac_pb2.Permission(any=True))],
    principals=[rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True))],
)


def policy_name(namespace: str, name: str, index: int, custom: bool = False) -> str:
    prefix = EXT_AUTHZ_MATCH_PREFIX + "-" if custom else ""
    return f"{prefix}ns[{namespace}]-policy[{name}]-rule[{index}]"


def is_dry_run(res: Resource) -> bool:
    value = res.metadata.annotations.get(DRY_RUN_ANNOTATION, "")
    return value.strip().lower() in ("1", "t", "true")


@dataclass
class WorkloadPolicies:
    """Istio's AuthorizationPoliciesResult: the workload's policies by action."""

    custom: list[Resource] = field(default_factory=list)
    deny: list[Resource] = field(default_factory=list)
    allow: list[Resource] = field(default_factory=list)
    audit: list[Resource] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.custom or self.deny or self.allow or self.audit)


def workload_policies(
    push: PushContext, namespace: str, labels: dict[str, str]
) -> WorkloadPolicies:
    out = WorkloadPolicies()
    for res in policies_for_workload(push, AUTHORIZATION_POLICY, namespace, labels):
        getattr(out, res.spec.action.lower()).append(res)
    return out


@dataclass
class _Built:
    rules: rbac_pb2.RBAC | None
    shadow: rbac_pb2.RBAC | None
    providers: list[str]


def build_rbac(
    policies: list[Resource], action: int, for_tcp: bool, custom: bool = False
) -> _Built | None:
    """Istio's Builder.build: enforced and dry-run rule sets for one action."""
    if not policies:
        return None
    enforced = rbac_pb2.RBAC(action=action)
    shadow = rbac_pb2.RBAC(action=action)
    has_enforced = has_shadow = False
    providers: list[str] = []
    for res in policies:
        ns = res.namespace or "default"
        spec = res.spec
        if custom:
            providers.append(spec.provider.name if spec.provider else "")
        target = enforced
        if not custom and is_dry_run(res):
            target, has_shadow = shadow, True
        else:
            has_enforced = True
        for i, rule in enumerate(spec.rules):
            name = policy_name(ns, res.name, i, custom)
            try:
                generated = RuleModel.from_rule(rule, ns).generate(for_tcp, action)
            except RuleError as e:
                log.debug(
                    "skipped rule %s on %s filter chain: %s", name, "TCP" if for_tcp else "HTTP", e
                )
                continue
            target.policies[name].CopyFrom(generated)
        if not spec.rules:
            target.policies[policy_name(ns, res.name, 0, custom)].CopyFrom(MATCH_NEVER)
    return _Built(enforced if has_enforced else None, shadow if has_shadow else None, providers)


def _shadow_prefix(rules: rbac_pb2.RBAC | None) -> str:
    if rules is None:
        return ""
    return {ALLOW: SHADOW_ALLOW_PREFIX, DENY: SHADOW_DENY_PREFIX}.get(rules.action, "")


def _http_rbac(built: _Built) -> hcm_pb2.HttpFilter:
    cfg = http_rbac.RBAC(shadow_rules_stat_prefix=_shadow_prefix(built.shadow))
    if built.rules is not None:
        cfg.rules.CopyFrom(built.rules)
    if built.shadow is not None:
        cfg.shadow_rules.CopyFrom(built.shadow)
    return hcm_pb2.HttpFilter(name=HTTP_RBAC_FILTER, typed_config=pack(cfg))


def _tcp_rbac(built: _Built) -> lc.Filter:
    cfg = tcp_rbac.RBAC(
        stat_prefix=TCP_STAT_PREFIX, shadow_rules_stat_prefix=_shadow_prefix(built.shadow)
    )
    if built.rules is not None:
        cfg.rules.CopyFrom(built.rules)
    if built.shadow is not None:
        cfg.shadow_rules.CopyFrom(built.shadow)
    return lc.Filter(name=TCP_RBAC_FILTER, typed_config=pack(cfg))


_ACTIONS = (("audit", LOG), ("deny", DENY), ("allow", ALLOW))


def rbac_http_filters(policies: WorkloadPolicies) -> list[hcm_pb2.HttpFilter]:
    """AUDIT, DENY, ALLOW RBAC filters (the CUSTOM ones come from :func:`custom_http_filters`)."""
    out = []
    for attr, action in _ACTIONS:
        built = build_rbac(getattr(policies, attr), action, for_tcp=False)
        if built is not None:
            out.append(_http_rbac(built))
    return out


def rbac_tcp_filters(policies: WorkloadPolicies) -> list[lc.Filter]:
    out = []
    for attr, action in _ACTIONS:
        built = build_rbac(getattr(policies, attr), action, for_tcp=True)
        if built is not None:
            out.append(_tcp_rbac(built))
    return out


# --- CUSTOM: ext_authz ------------------------------------------------------------------------


class ProviderError(ValueError):
    pass


@dataclass(frozen=True)
class ExtAuthz:
    http: http_ext_authz.ExtAuthz
    tcp: tcp_ext_authz.ExtAuthz | None = None


def filter_enabled_metadata(filter_name: str) -> metadata_pb2.MetadataMatcher:
    out = metadata_pb2.MetadataMatcher(filter=filter_name)
    out.path.add(key=EXT_AUTHZ_SHADOW_PREFIX + SHADOW_EFFECTIVE_POLICY_ID)
    out.value.string_match.prefix = EXT_AUTHZ_MATCH_PREFIX
    return out


def _duration(d: object | None) -> duration_pb2.Duration:
    seconds = getattr(d, "seconds", None) if d is not None else None
    if seconds is None:
        return duration_pb2.Duration(seconds=DEFAULT_EXT_AUTHZ_TIMEOUT)
    return duration_pb2.Duration(seconds=int(seconds), nanos=round((seconds % 1) * 1e9))


def _lookup_cluster(push: PushContext, service: str, port: int) -> tuple[str, str]:
    """Istio's extensionproviders.LookupCluster: ``ns/name`` or a hostname → the outbound
    cluster of that service port."""
    if not 1 <= port <= 65535:
        raise ProviderError(f"port must be in the range [1, 65535], found: {port}")
    if not service:
        raise ProviderError("service must not be empty")
    if "/" in service:
        ns, _, name = service.partition("/")
        hostname = f"{name}.{ns}.svc.{push.domain_suffix}"
    else:
        hostname = service
    if push.service(hostname) is None:
        raise ProviderError(f"could not find service {service} in Istio service registry")
    return hostname, f"outbound|{port}||{hostname}"


def _status(status: str) -> http_status_pb2.HttpStatus | None:
    if not status:
        return None
    try:
        code = int(status)
    except ValueError:
        raise ProviderError(f'invalid statusOnError "{status}"') from None
    if code not in http_status_pb2.StatusCode.values():
        raise ProviderError(f"unsupported statusOnError {status}")
    return http_status_pb2.HttpStatus(code=code)


def _header_patterns(headers: list[str]) -> list[string_pb2.StringMatcher]:
    out = []
    for h in headers:
        if h.startswith("*"):
            out.append(string_pb2.StringMatcher(suffix=h[1:], ignore_case=True))
        elif h.endswith("*"):
            out.append(string_pb2.StringMatcher(prefix=h[:-1], ignore_case=True))
        else:
            out.append(string_pb2.StringMatcher(exact=h, ignore_case=True))
    return out


def _with_body(cfg: object | None) -> http_ext_authz.BufferSettings | None:
    if cfg is None:
        return None
    return http_ext_authz.BufferSettings(
        max_request_bytes=cfg.max_request_bytes,
        allow_partial_message=cfg.allow_partial_message,
        pack_as_bytes=cfg.pack_as_bytes,
    )


def build_ext_authz(push: PushContext, provider: ExtensionProvider) -> ExtAuthz:
    """The ext_authz filter configs of one meshConfig extension provider."""
    if provider.envoy_ext_authz_http is not None:
        p = provider.envoy_ext_authz_http
        hostname, cluster = _lookup_cluster(push, p.service, p.port)
        if p.path_prefix and not p.path_prefix.startswith("/"):
            raise ProviderError(f'pathPrefix must begin with `/`, found: "{p.path_prefix}"')
        service = http_ext_authz.HttpService(path_prefix=p.path_prefix)
        service.server_uri.CopyFrom(
            http_uri_pb2.HttpUri(
                uri=f"http://{hostname}", cluster=cluster, timeout=_duration(p.timeout)
            )
        )
        allowed = _header_patterns(p.include_request_headers_in_check or p.include_headers_in_check)
        if allowed or p.include_additional_headers_in_check:
            req = service.authorization_request
            req.SetInParent()
            if allowed:
                req.allowed_headers.patterns.extend(allowed)
            for k in sorted(p.include_additional_headers_in_check):
                req.headers_to_add.add(key=k, value=p.include_additional_headers_in_check[k])
        if (
            p.headers_to_upstream_on_allow
            or p.headers_to_downstream_on_deny
            or p.headers_to_downstream_on_allow
        ):
            resp = service.authorization_response
            resp.SetInParent()
            for target, headers in (
                (resp.allowed_upstream_headers, p.headers_to_upstream_on_allow),
                (resp.allowed_client_headers, p.headers_to_downstream_on_deny),
                (resp.allowed_client_headers_on_success, p.headers_to_downstream_on_allow),
            ):
                if headers:
                    target.patterns.extend(_header_patterns(headers))
        http = http_ext_authz.ExtAuthz(
            failure_mode_allow=p.fail_open,
            transport_api_version=config_source_pb2.V3,
            http_service=service,
            filter_enabled_metadata=filter_enabled_metadata(HTTP_RBAC_FILTER),
        )
        if (status := _status(p.status_on_error)) is not None:
            http.status_on_error.CopyFrom(status)
        if (body := _with_body(p.include_request_body_in_check)) is not None:
            http.with_request_body.CopyFrom(body)
        return ExtAuthz(http=http)
    if provider.envoy_ext_authz_grpc is not None:
        p = provider.envoy_ext_authz_grpc
        _, cluster = _lookup_cluster(push, p.service, p.port)
        grpc = grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                cluster_name=cluster, authority=cluster.replace("|", "_.")
            ),
            timeout=_duration(p.timeout),
        )
        http = http_ext_authz.ExtAuthz(
            failure_mode_allow=p.fail_open,
            grpc_service=grpc,
            filter_enabled_metadata=filter_enabled_metadata(HTTP_RBAC_FILTER),
            transport_api_version=config_source_pb2.V3,
        )
        if (status := _status(p.status_on_error)) is not None:
            http.status_on_error.CopyFrom(status)
        if (body := _with_body(p.include_request_body_in_check)) is not None:
            http.with_request_body.CopyFrom(body)
        tcp = tcp_ext_authz.ExtAuthz(
            stat_prefix=TCP_STAT_PREFIX,
            failure_mode_allow=p.fail_open,
            transport_api_version=config_source_pb2.V3,
            grpc_service=grpc,
            filter_enabled_metadata=filter_enabled_metadata(TCP_RBAC_FILTER),
        )
        return ExtAuthz(http=http, tcp=tcp)
    raise ProviderError(f"unsupported extension provider: {provider.name}")


def _resolve_provider(push: PushContext, names: list[str]) -> ExtAuthz:
    providers = push.mesh.extension_providers
    if not providers:
        raise ProviderError("at least 1 extension provider must be defined")
    if len(set(names)) > 1:
        raise ProviderError(
            "all extension providers must be the same for a specific workload, "
            f"found multiple different providers: {names}"
        )
    for p in providers:
        if p.name == names[0]:
            return build_ext_authz(push, p)
    raise ProviderError(
        f"extension provider {names[0]} not found, available providers are {[p.name for p in providers]}"
    )


def _bad_custom(rules: rbac_pb2.RBAC | None) -> rbac_pb2.RBAC:
    out = rbac_pb2.RBAC(action=DENY)
    if rules is not None:
        for key, policy in rules.policies.items():
            out.policies[key + BAD_CUSTOM_SUFFIX].CopyFrom(policy)
    return out


def custom_http_filters(push: PushContext, policies: WorkloadPolicies) -> list[hcm_pb2.HttpFilter]:
    built = build_rbac(policies.custom, DENY, for_tcp=False, custom=True)
    if built is None:
        return []
    try:
        ext = _resolve_provider(push, built.providers)
    except ProviderError as e:
        log.error("failed to process CUSTOM action, will generate deny configs: %s", e)
        cfg = http_rbac.RBAC(rules=_bad_custom(built.rules))
        return [hcm_pb2.HttpFilter(name=HTTP_RBAC_FILTER, typed_config=pack(cfg))]
    cfg = http_rbac.RBAC(shadow_rules_stat_prefix=EXT_AUTHZ_SHADOW_PREFIX)
    if built.rules is not None:
        cfg.shadow_rules.CopyFrom(built.rules)
    return [
        hcm_pb2.HttpFilter(name=HTTP_RBAC_FILTER, typed_config=pack(cfg)),
        hcm_pb2.HttpFilter(name=HTTP_EXT_AUTHZ_FILTER, typed_config=pack(ext.http)),
    ]


def custom_tcp_filters(push: PushContext, policies: WorkloadPolicies) -> list[lc.Filter]:
    built = build_rbac(policies.custom, DENY, for_tcp=True, custom=True)
    if built is None:
        return []
    try:
        ext = _resolve_provider(push, built.providers)
    except ProviderError as e:
        log.error("failed to process CUSTOM action, will generate deny configs: %s", e)
        cfg = tcp_rbac.RBAC(rules=_bad_custom(built.rules), stat_prefix=TCP_STAT_PREFIX)
        return [lc.Filter(name=TCP_RBAC_FILTER, typed_config=pack(cfg))]
    if ext.tcp is None:
        return []  # an HTTP provider does not apply to TCP chains
    cfg = tcp_rbac.RBAC(
        stat_prefix=TCP_STAT_PREFIX, shadow_rules_stat_prefix=EXT_AUTHZ_SHADOW_PREFIX
    )
    if built.rules is not None:
        cfg.shadow_rules.CopyFrom(built.rules)
    return [
        lc.Filter(name=TCP_RBAC_FILTER, typed_config=pack(cfg)),
        lc.Filter(name=TCP_EXT_AUTHZ_FILTER, typed_config=pack(ext.tcp)),
    ]


__all__ = [
    "HTTP_RBAC_FILTER",
    "TCP_RBAC_FILTER",
    "HTTP_EXT_AUTHZ_FILTER",
    "TCP_EXT_AUTHZ_FILTER",
    "WorkloadPolicies",
    "custom_http_filters",
    "custom_tcp_filters",
    "rbac_http_filters",
    "rbac_tcp_filters",
    "workload_policies",
]
