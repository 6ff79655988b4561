"""Which security policies apply to a workload (Istio's ``WorkloadPolicyMatcher`` and
``getConfigsForWorkload``).

A policy applies to a workload when it lives in the workload's namespace or in the root
namespace (mesh-wide), and

- the workload is an ordinary pod (no ``gateway.networking.k8s.io/gateway-name`` label):
  the policy has no ``targetRef(s)`` and its ``selector`` (if any) matches the pod's labels;
  a policy with ``targetRefs`` is ignored for such workloads, as Istio does;
- the workload is a Gateway API gateway: a ``targetRefs`` entry names that Gateway (in the
  policy's namespace unless the reference says otherwise), or, without targetRefs, the
  selector matches (Istio's ``ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY``, on by default).

Results keep the push context's order (oldest first), which is what Istio's "oldest wins"
rules need. They are memoized per push context, keyed by (kind, namespace, labels).
"""

from __future__ import annotations

from typing import Any

from pistio.config.resource import Resource
from pistio.pilot.model.push_context import PushContext, labels_match

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"

PEER_AUTHENTICATION = "PeerAuthentication"
REQUEST_AUTHENTICATION = "RequestAuthentication"
AUTHORIZATION_POLICY = "AuthorizationPolicy"

_MEMO_KEY = "security_policies"


def selector_labels(spec: Any) -> dict[str, str] | None:
    """The selector's matchLabels; None when the policy has no (or an empty) selector."""
    selector = getattr(spec, "selector", None)
    if selector is None or not selector.match_labels:
        return None
    return dict(selector.match_labels)


def target_refs(spec: Any) -> list[Any]:
    """``targetRefs``, or the legacy single ``targetRef``."""
    refs = list(getattr(spec, "target_refs", None) or [])
    legacy = getattr(spec, "target_ref", None)
    if not refs and legacy is not None:
        refs = [legacy]
    return refs


def should_attach(res: Resource, labels: dict[str, str]) -> bool:
    """Istio's ``WorkloadPolicyMatcher.ShouldAttachPolicy`` for sidecars and gateways."""
    spec = res.spec
    refs = target_refs(spec)
    selector = selector_labels(spec)
    gateway = labels.get(GATEWAY_NAME_LABEL)
    if gateway is None:
        return not refs and (selector is None or labels_match(selector, labels))
    if not refs:
        return selector is None or labels_match(selector, labels)
    policy_ns = res.namespace or "default"
    for ref in refs:
        is_gateway = ref.kind == "Gateway" and (ref.group or GATEWAY_API_GROUP) == GATEWAY_API_GROUP
        if is_gateway and ref.name == gateway and (ref.namespace or policy_ns) == policy_ns:
            return True
    return False


def policies_for_workload(
    push: PushContext, kind: str, namespace: str, labels: dict[str, str]
) -> list[Resource]:
    """Policies of ``kind`` in the workload's namespace or the root namespace that attach
    to a workload with these labels, oldest first."""
    memo: dict[tuple, list[Resource]] = push.memo.setdefault(_MEMO_KEY, {})
    key = (kind, namespace, tuple(sorted(labels.items())))
    found = memo.get(key)
    if found is not None:
        return found
    scopes = {namespace, push.root_namespace}
    found = [
        res
        for res in push.configs_of(kind)
        if (res.namespace or "default") in scopes and should_attach(res, labels)
    ]
    memo[key] = found
    return found
