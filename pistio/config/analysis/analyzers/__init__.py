"""Istio's analyzers, one module per Istio analyzer package, listed in istioctl's order."""

from __future__ import annotations

from pistio.api.registry import all_kinds
from pistio.config.analysis import util as u
from pistio.config.analysis.analyzers import (
    applicationuid,
    auth,
    authn,
    conditions,
    deployment,
    deprecation,
    destinationrule,
    envoyfilter,
    externalcontrolplane,
    gateway,
    injection,
    k8sgateway,
    meshnetworks,
    multicluster,
    schema,
    service,
    serviceentry,
    sidecar,
    telemetry,
    virtualservice,
    webhook,
)
from pistio.config.analysis.analyzers.annotations import AlphaAnalyzer, K8sAnalyzer
from pistio.config.analysis.core import Analyzer

ANALYZERS: tuple[type[Analyzer], ...] = (
    K8sAnalyzer,
    AlphaAnalyzer,
    auth.AuthorizationPoliciesAnalyzer,
    authn.BlockedCIDRsAnalyzer,
    conditions.ConditionAnalyzer,
    deployment.MultiServiceAnalyzer,
    applicationuid.ApplicationUIDAnalyzer,
    destinationrule.CaCertificateAnalyzer,
    destinationrule.SubsetSelectPodAnalyzer,
    deprecation.DeprecationAnalyzer,
    envoyfilter.EnvoyPatchAnalyzer,
    externalcontrolplane.ExternalControlPlaneAnalyzer,
    gateway.IngressGatewayPortAnalyzer,
    gateway.CertificateAnalyzer,
    gateway.SecretAnalyzer,
    gateway.ConflictingGatewayAnalyzer,
    injection.InjectionAnalyzer,
    injection.ImageAnalyzer,
    injection.ImageAutoAnalyzer,
    k8sgateway.SelectorAnalyzer,
    k8sgateway.CRDVersionAnalyzer,
    meshnetworks.MeshNetworksAnalyzer,
    multicluster.ServiceAnalyzer,
    service.PortNameAnalyzer,
    sidecar.SelectorAnalyzer,
    virtualservice.ConflictingMeshGatewayHostsAnalyzer,
    virtualservice.DestinationHostAnalyzer,
    virtualservice.DestinationRuleAnalyzer,
    virtualservice.GatewayAnalyzer,
    virtualservice.JWTClaimRouteAnalyzer,
    serviceentry.ProtocolAddressesAnalyzer,
    serviceentry.ConflictingServiceEntryProtocolAnalyzer,
    webhook.WebhookAnalyzer,
    telemetry.ProviderAnalyzer,
    telemetry.SelectorAnalyzer,
    telemetry.DefaultSelectorAnalyzer,
)

_validation: list[type[Analyzer]] | None = None


def validation_analyzers() -> list[type[Analyzer]]:
    """``schema.ValidationAnalyzer.<Kind>`` for every kind: Istio's kinds first, then the rest."""
    global _validation
    if _validation is None:
        kinds = sorted(
            {(k.group, k.kind) for k in all_kinds()},
            key=lambda gk: (gk[0] not in u.ISTIO_GROUPS, gk[0], gk[1]),
        )
        seen: set[str] = set()
        out = []
        for group, kind in kinds:
            if kind in seen:  # one name per kind, as istioctl has (first group wins)
                continue
            seen.add(kind)
            out.append(schema.make_validation_analyzer(group, kind))
        _validation = out
    return _validation


def all_analyzers() -> list[type[Analyzer]]:
    return [*ANALYZERS, *validation_analyzers()]


def by_name() -> dict[str, type[Analyzer]]:
    return {a.name: a for a in all_analyzers()}
