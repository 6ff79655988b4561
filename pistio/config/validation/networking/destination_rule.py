"""Validation of DestinationRule, as Istio's validating webhook applies it.

Traffic policies (TLS origination, outlier detection, load balancing, tunnels) are checked
here; their connection pool settings, which Sidecar has too, are in ``shared``.
"""

from __future__ import annotations

import math
from typing import Any

from pistio.api import networking as n
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    validate_fqdn,
    validate_ip_address,
    validate_percent,
    validate_port,
    validate_wildcard_domain,
)
from pistio.config.validation.networking.shared import (
    GROUP,
    check_beta_selector,
    check_connection_pool,
    check_duration,
    check_export_to,
    check_labels,
    check_oneof,
    check_subset_name,
)
from pistio.config.validation.registry import validates


def _client_tls(t: n.ClientTLSSettings | None, p: str, errs: FieldErrors) -> None:
    """Istio's ValidateTLS for upstream TLS settings."""
    if t is None:
        return
    if t.insecure_skip_verify:
        if t.mode == "SIMPLE" and (t.ca_certificates or t.credential_name or t.subject_alt_names):
            errs.error(
                p,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
            )
        if t.mode == "MUTUAL" and (t.ca_certificates or t.subject_alt_names):
            errs.error(
                p,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
            )
    if t.mode in ("SIMPLE", "MUTUAL") and t.credential_name:
        # Credentials come from the named secret; files may not be given as well.
        if t.client_certificate or t.ca_certificates or t.private_key or t.ca_crl:
            errs.error(
                p,
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            )
        return
    if t.mode == "MUTUAL":
        if not t.client_certificate:
            errs.error(f"{p}.clientCertificate", "client certificate required for mutual tls")
        if not t.private_key:
            errs.error(f"{p}.privateKey", "private key required for mutual tls")


def _outlier(o: n.OutlierDetection | None, p: str, errs: FieldErrors) -> None:
    if o is None:
        return
    check_duration(o.base_ejection_time, f"{p}.baseEjectionTime", errs)
    if o.consecutive_errors:
        errs.warn(
            f"{p}.consecutiveErrors",
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        )
    if not o.split_external_local_origin_errors and (o.consecutive_local_origin_failures or 0) > 0:
        errs.error(
            f"{p}.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        )
    check_duration(o.interval, f"{p}.interval", errs)
    if err := validate_percent(o.max_ejection_percent):
        errs.error(f"{p}.maxEjectionPercent", err)
    if err := validate_percent(o.min_health_percent):
        errs.error(f"{p}.minHealthPercent", err)


def _is_prime(x: int) -> bool:
    """Envoy's primality check for Maglev table sizes."""
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    return all(x % f for f in range(3, math.isqrt(x) + 1, 2))


def _locality_path_parts(locality: str) -> list[str] | None:
    parts = locality.split("/", 2)
    return None if any(part == "" for part in parts) else parts


def _localities_error(localities: list[str]) -> str | None:
    """Istio's validateLocalities: wildcards only at the end, no overlapping localities."""
    tree: dict[str, Any] = {}
    for loc in localities:
        stars = loc.count("*")
        if stars and (stars > 1 or not loc.endswith("*")):
            return f"locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
        if "*" in tree:
            return f"locality {loc} overlap with previous specified ones"
        parts = _locality_path_parts(loc)
        if parts is None:
            return f"locality {loc} must not contain empty region/zone/subzone info"
        overlap = f"locality {loc} overlap with previous specified ones"
        region = parts[0]
        if len(parts) == 1:
            if region in tree:
                return overlap
            tree[region] = "*"
            continue
        zones = tree.setdefault(region, {})
        if zones == "*" or "*" in zones:
            return overlap
        zone = parts[1]
        if len(parts) == 2:
            if zone in zones:
                return overlap
            zones[zone] = "*"
            continue
        subzones = zones.setdefault(zone, set())
        if subzones == "*" or "*" in subzones or parts[2] in subzones:
            return overlap
        subzones.add(parts[2])
    return None


TOPOLOGY_LABELS = (
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
)


def _failover(failover: list[n.LocalityFailover], p: str, errs: FieldErrors) -> None:
    """Failover goes from one region to another (locality and zone-aware balancing alike)."""
    for i, fo in enumerate(failover):
        fp = f"{p}[{i}]"
        if fo.from_ == fo.to:
            errs.error(fp, "locality lb failover settings must specify different regions")
        if "/" in fo.from_ or "/" in fo.to:
            errs.error(fp, "locality lb failover only specify region")
        if "*" in fo.from_ or "*" in fo.to:
            errs.error(fp, "locality lb failover region should not contain '*' wildcard")


def _locality_lb(
    lb: n.LocalityLoadBalancerSetting | None, outlier: Any, p: str, errs: FieldErrors
) -> None:
    """Istio's ValidateLocalityLbSetting."""
    if lb is None:
        return
    if lb.distribute and lb.failover:
        errs.error(p, "can not simultaneously specify 'distribute' and 'failover'")
        return
    if lb.failover and lb.failover_priority:
        for i, label in enumerate(lb.failover_priority):
            if label in TOPOLOGY_LABELS:
                errs.error(
                    f"{p}.failoverPriority[{i}]",
                    f"can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'",
                )
                return
    for i, dist in enumerate(lb.distribute):
        dp = f"{p}.distribute[{i}]"
        if any(w <= 0 or w > 100 for w in dist.to.values()):
            errs.error(f"{dp}.to", "locality weight must be in range [1, 100]")
            return
        total = sum(dist.to.values())
        if total != 100:
            errs.error(f"{dp}.to", f"total locality weight {total} != 100")
            return
        if err := _localities_error(list(dist.to)):
            errs.error(f"{dp}.to", err)
    if err := _localities_error([d.from_ for d in lb.distribute]):
        errs.error(f"{p}.distribute", err)
    if (lb.failover or lb.failover_priority) and outlier is None:
        errs.warn(p, "outlier detection policy must be provided for failover")
    _failover(lb.failover, f"{p}.failover", errs)


def _zone_aware_lb(za: n.ZoneAwareLoadBalancerSetting | None, p: str, errs: FieldErrors) -> None:
    """Zone-aware balancing handles region/zone/subzone itself; failover names regions only."""
    if za is None:
        return
    for i, label in enumerate(za.failover_priority):
        if label in TOPOLOGY_LABELS:
            errs.error(
                f"{p}.failoverPriority[{i}]",
                f"failoverPriority must not include topology label '{label}' with zone aware load balancing",
            )
    _failover(za.failover, f"{p}.failover", errs)


def _load_balancer(
    lb: n.LoadBalancerSettings | None, outlier: Any, p: str, errs: FieldErrors
) -> None:
    if lb is None:
        return
    check_oneof(lb, p, errs, "simple", "consistent_hash")
    if (ch := lb.consistent_hash) is not None:
        cp = f"{p}.consistentHash"
        check_oneof(
            ch,
            cp,
            errs,
            "http_header_name",
            "http_cookie",
            "use_source_ip",
            "http_query_parameter_name",
        )
        check_oneof(ch, cp, errs, "ring_hash", "maglev")
        if ch.http_cookie is not None and not ch.http_cookie.name:
            errs.error(f"{cp}.httpCookie.name", "name required for HttpCookie")
        if ch.minimum_ring_size:
            errs.warn(
                f"{cp}.minimumRingSize",
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            )
            if ch.ring_hash is not None or ch.maglev is not None:
                errs.error(
                    f"{cp}.minimumRingSize",
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                )
        if (ml := ch.maglev) is not None:
            mp = f"{cp}.maglev.tableSize"
            if ml.table_size == 0:
                errs.error(mp, "tableSize must be set for maglev")
            if ml.table_size >= 5000011:
                errs.error(mp, "tableSize must be less than 5000011 for maglev")
            if not _is_prime(ml.table_size):
                errs.error(mp, "tableSize must be a prime number for maglev")
    _locality_lb(lb.locality_lb_setting, outlier, f"{p}.localityLbSetting", errs)
    _zone_aware_lb(lb.zone_aware_lb_setting, f"{p}.zoneAwareLbSetting", errs)
    check_duration(lb.warmup_duration_secs, f"{p}.warmupDurationSecs", errs)
    if (w := lb.warmup) is not None:
        wp = f"{p}.warmup"
        if w.duration is None:
            errs.error(f"{wp}.duration", "required field is missing")
        check_duration(w.duration, f"{wp}.duration", errs)
        if w.minimum_percent is not None and not 0 <= w.minimum_percent <= 100:
            errs.error(f"{wp}.minimumPercent", "minimumPercent must be in range [0.0, 100.0]")
        if w.aggression is not None and w.aggression < 1:
            errs.error(f"{wp}.aggression", "aggression must be greater than or equal to 1")


def _policy_settings(tp: n.TrafficPolicy | n.PortTrafficPolicy, p: str, errs: FieldErrors) -> None:
    """The settings a traffic policy and its port-level policies have in common."""
    _outlier(tp.outlier_detection, f"{p}.outlierDetection", errs)
    check_connection_pool(tp.connection_pool, f"{p}.connectionPool", errs)
    _load_balancer(tp.load_balancer, tp.outlier_detection, f"{p}.loadBalancer", errs)
    _client_tls(tp.tls, f"{p}.tls", errs)


def _port_policies(pls: list[n.PortTrafficPolicy], p: str, errs: FieldErrors) -> None:
    for i, t in enumerate(pls):
        tp = f"{p}[{i}]"
        if t.port is None:
            errs.error(f"{tp}.port", "portTrafficPolicy must have valid port")
        if (
            t.outlier_detection is None
            and t.connection_pool is None
            and t.load_balancer is None
            and t.tls is None
        ):
            errs.error(tp, "port traffic policy must have at least one field")
            continue
        _policy_settings(t, tp, errs)


def _tunnel(t: n.TunnelSettings | None, p: str, errs: FieldErrors) -> None:
    if t is None:
        return
    if t.protocol and t.protocol not in ("CONNECT", "POST"):
        errs.error(f"{p}.protocol", 'tunnel protocol must be "CONNECT" or "POST"')
    fqdn_err = validate_fqdn(t.target_host)
    ip_err = validate_ip_address(t.target_host)
    if fqdn_err and ip_err:
        errs.error(
            f"{p}.targetHost",
            f"tunnel target host must be valid FQDN or IP address: {fqdn_err}; {ip_err}",
        )
    if err := validate_port(t.target_port):
        errs.error(f"{p}.targetPort", f"tunnel target port is invalid: {err}")


def _traffic_policy(tp: n.TrafficPolicy | None, p: str, errs: FieldErrors) -> None:
    if tp is None:
        return
    if (
        tp.outlier_detection is None
        and tp.connection_pool is None
        and tp.load_balancer is None
        and tp.tls is None
        and not tp.port_level_settings
        and tp.tunnel is None
        and tp.proxy_protocol is None
        and tp.retry_budget is None
    ):
        errs.error(p, "traffic policy must have at least one field")
        return
    if tp.tunnel is not None and tp.proxy_protocol is not None:
        errs.error(p, "tunnel and proxyProtocol must not be set together")
        return
    _policy_settings(tp, p, errs)
    _port_policies(tp.port_level_settings, f"{p}.portLevelSettings", errs)
    _tunnel(tp.tunnel, f"{p}.tunnel", errs)
    if (
        (rb := tp.retry_budget) is not None
        and rb.percent is not None
        and not 0 <= rb.percent <= 100
    ):
        errs.error(f"{p}.retryBudget.percent", "percent must be in range [0.0, 100.0]")


@validates(GROUP, "DestinationRule")
def validate_destination_rule(res: Resource, errs: FieldErrors) -> None:
    dr: n.DestinationRule = res.spec
    if err := validate_wildcard_domain(dr.host):
        errs.error("spec.host", err)
    _traffic_policy(dr.traffic_policy, "spec.trafficPolicy", errs)
    names: set[str] = set()
    for i, s in enumerate(dr.subsets):
        sp = f"spec.subsets[{i}]"
        if s.name in names:
            errs.error(f"{sp}.name", f"duplicate subset names: {s.name}")
        names.add(s.name)
        if err := check_subset_name(s.name):
            errs.error(f"{sp}.name", err)
        check_labels(s.labels, f"{sp}.labels", errs)
        _traffic_policy(s.traffic_policy, f"{sp}.trafficPolicy", errs)
    check_export_to(
        res, dr.export_to, errs, is_destination_rule_with_selector=dr.workload_selector is not None
    )
    check_beta_selector(dr.workload_selector, "spec.workloadSelector", errs)
