"""Injection analyzers: namespaces and pods vs. sidecar injection, proxy images, `image: auto`."""

from __future__ import annotations

import json
from typing import Any

import yaml

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource


def _injector_values(cm: Resource) -> dict[str, Any]:
    raw = u.mapping(cm.obj, "data").get("values", "")
    try:
        values = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


def _enable_namespaces_by_default(cm: Resource) -> bool:
    webhook = _injector_values(cm).get("sidecarInjectorWebhook")
    return isinstance(webhook, dict) and webhook.get("enableNamespacesByDefault") is True


class InjectionAnalyzer(Analyzer):
    name = "injection.Analyzer"
    description = "Checks conditions related to Istio sidecar injection"

    def analyze(self, ctx: Context) -> None:
        injected: set[str] = set()
        enable_by_default = False
        for ns in ctx.each(u.NAMESPACE):
            name = ns.name
            if name == ctx.istio_namespace:
                continue
            labels = u.labels_of(ns)
            inj = labels.get(u.INJECTION_LABEL)
            rev = labels.get(u.REVISION_LABEL)
            istio_labels = []
            if inj is not None:
                istio_labels.append(f"{u.INJECTION_LABEL}={inj}")
            for key in (u.REVISION_LABEL, u.DATAPLANE_MODE):
                if key in labels and (inj is None or inj == "enabled"):
                    istio_labels.append(f"{key}={labels[key]}")
            if len(istio_labels) > 1:
                ctx.report(ns, "NamespaceMultipleInjectionLabels", istio_labels)
            if labels.get(u.DATAPLANE_MODE) == "ambient":
                continue
            cm_name = u.injector_config_map_name(rev or "")
            for cm in ctx.each(u.CONFIG_MAP):
                if cm.name == cm_name:
                    enable_by_default = _enable_namespaces_by_default(cm)
                    break
            if not inj and rev is None:
                if enable_by_default:
                    ctx.report(ns, "NamespaceInjectionEnabledByDefault")
                else:
                    ctx.report(ns, "NamespaceNotInjected", name, name, path="metadata.name")
                continue
            if rev is None and inj != "enabled":
                continue
            injected.add(name)
        for pod in ctx.each(u.POD):
            if u.ns_of(pod) not in injected:
                continue
            inject = u.annotations_of(pod).get(u.SIDECAR_INJECT, "")
            inject = u.labels_of(pod).get(u.SIDECAR_INJECT, inject)
            if inject.lower() == "false" or u.get(pod.obj, "spec.host_network") is True:
                continue
            containers = u.items(pod.obj, "spec.containers") + u.items(
                pod.obj, "spec.init_containers"
            )
            image = next(
                (u.text(c, "image") for c in containers if u.text(c, "name") == u.ISTIO_PROXY), ""
            )
            if not image:
                ctx.report(pod, "PodMissingProxy", u.full_name(pod))


def _proxy_image(cm: Resource) -> str:
    values = _injector_values(cm)
    glob = values.get("global") if isinstance(values.get("global"), dict) else {}
    proxy = glob.get("proxy") if isinstance(glob.get("proxy"), dict) else {}
    image = str(proxy.get("image", "") or "")
    if "/" in image:
        return image
    return f"{glob.get('hub', '') or ''}/{image}:{glob.get('tag', '') or ''}"


def _image_type(ctx: Context, pod: Resource) -> str:
    """The effective proxy image variant (``distroless``, ``debug``) for a pod."""
    variant = u.text(ctx.mesh_config, "default_config.image.image_type")
    root_ns = u.text(ctx.mesh_config, "root_namespace") or ctx.istio_namespace
    namespaced = {}
    workload = []
    for pc in ctx.each(u.PROXY_CONFIG):
        if u.ns_of(pc) == root_ns:
            variant = u.text(pc.spec, "image.image_type") or variant
        elif u.get(pc.spec, "selector") is None:
            namespaced[u.ns_of(pc)] = pc
        else:
            workload.append(pc)
    pc = namespaced.get(u.ns_of(pod))
    if pc is not None:
        variant = u.text(pc.spec, "image.image_type") or variant
    labels = u.labels_of(pod)
    for pc in workload:
        if u.full_name(pc).startswith(u.ns_of(pod)) and u.selector_matches(
            u.mapping(pc.spec, "selector.match_labels"), labels
        ):
            variant = u.text(pc.spec, "image.image_type") or variant
    override = u.annotations_of(pod).get("proxy.istio.io/config")
    if override:
        try:
            doc = yaml.safe_load(override)
        except yaml.YAMLError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("image"), dict):
            variant = str(doc["image"].get("imageType") or variant)
    return "" if variant == "default" else variant


class ImageAnalyzer(Analyzer):
    name = "injection.ImageAnalyzer"
    description = "Checks the image of auto-injection configured with the running proxies on pods"

    def analyze(self, ctx: Context) -> None:
        images = {
            cm.name: _proxy_image(cm)
            for cm in ctx.each(u.CONFIG_MAP)
            if cm.name.startswith(u.INJECTOR_CONFIG_MAP)
        }
        if not images:
            return
        namespaces: dict[str, Resource] = {}
        injected: dict[str, str] = {}
        for ns in ctx.each(u.NAMESPACE):
            namespaces[ns.name] = ns
            labels = u.labels_of(ns)
            if u.REVISION_LABEL in labels:
                injected[ns.name] = labels[u.REVISION_LABEL]
            elif labels.get(u.INJECTION_LABEL) == "enabled":
                injected[ns.name] = "default"
        mismatched: dict[str, list[str]] = {}
        for pod in ctx.each(u.POD):
            rev = injected.get(u.ns_of(pod))
            if rev is None or u.annotations_of(pod).get("sidecar.istio.io/proxyImage"):
                continue
            expected = images.get(u.injector_config_map_name(rev))
            if expected is None:
                continue
            variant = _image_type(ctx, pod)
            containers = u.items(pod.obj, "spec.containers") + u.items(
                pod.obj, "spec.init_containers"
            )
            for c in containers:
                if u.text(c, "name") != u.ISTIO_PROXY:
                    continue
                image = u.text(c, "image")
                if image not in (expected, f"{expected}-{variant}"):
                    mismatched.setdefault(u.ns_of(pod), []).append(pod.name)
        for ns, pods in mismatched.items():
            if ns in namespaces:
                ctx.report(namespaces[ns], "PodsIstioProxyImageMismatchInNamespace", pods)


def _has_auto_image(pod_spec: Any) -> bool:
    return any(
        u.text(c, "name") == u.ISTIO_PROXY and u.text(c, "image") == "auto"
        for c in u.items(pod_spec, "containers")
    )


class ImageAutoAnalyzer(Analyzer):
    name = "injection.ImageAutoAnalyzer"
    description = "Makes sure that Pods and Deployments with `image: auto` are going to be injected"

    def analyze(self, ctx: Context) -> None:
        webhooks = [
            wh
            for cfg in ctx.each(u.MUTATING_WEBHOOK)
            for wh in u.items(cfg.obj, "webhooks")
            if u.text(wh, "name").endswith("istio.io")
        ]
        for pod in ctx.each(u.POD):
            # a pod with `image: auto` is broken whether a webhook matches or not: it is too late
            if _has_auto_image(u.get(pod.obj, "spec")):
                ctx.report(pod, "ImageAutoWithoutInjectionError", "Pod", pod.name)
        for d in ctx.each(u.DEPLOYMENT):
            if not _has_auto_image(u.get(d.obj, "spec.template.spec")):
                continue
            ns = ctx.find(u.NAMESPACE, "", u.ns_of(d) or "default")
            ns_labels = u.labels_of(ns) if ns is not None else {}
            pod_labels = u.mapping(d.obj, "spec.template.metadata.labels")
            if not any(
                u.label_selector_matches(u.get(wh, "namespace_selector"), ns_labels)
                and u.label_selector_matches(u.get(wh, "object_selector"), pod_labels)
                for wh in webhooks
            ):
                ctx.report(d, "ImageAutoWithoutInjectionWarning", "Deployment", d.name)
