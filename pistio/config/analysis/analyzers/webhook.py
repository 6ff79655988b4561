"""webhook.Analyzer: Istio injection webhooks that overlap or point at missing services."""

from __future__ import annotations

from typing import Any

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource


def _revisions(cfg: Resource) -> set[str]:
    revs = set()
    if u.REVISION_LABEL in u.labels_of(cfg):
        revs.add(u.labels_of(cfg)[u.REVISION_LABEL])
    for wh in u.items(cfg.obj, "webhooks"):
        for sel_name in ("namespace_selector", "object_selector"):
            sel = u.get(wh, sel_name)
            if sel is None:
                continue
            labels = u.mapping(sel, "match_labels")
            if u.REVISION_LABEL in labels:
                revs.add(str(labels[u.REVISION_LABEL]))
            for expr in u.items(sel, "match_expressions"):
                if u.text(expr, "key") == u.REVISION_LABEL:
                    revs.update(str(v) for v in u.items(expr, "values"))
    return revs


def _label_sets(base: list[dict[str, str]], revisions: set[str]) -> list[dict[str, str]]:
    out = [dict(b) for b in base]
    for rev in sorted(revisions):
        out += [{**b, u.REVISION_LABEL: rev} for b in base]
    return out


class WebhookAnalyzer(Analyzer):
    name = "webhook.Analyzer"
    description = "Checks the validity of Istio webhooks"

    def analyze(self, ctx: Context) -> None:
        hooks: list[tuple[str, Any, Resource]] = []  # (config/webhook name, webhook, config)
        revisions: set[str] = set()
        for cfg in ctx.each(u.MUTATING_WEBHOOK):
            revs = _revisions(cfg)
            webhooks = u.items(cfg.obj, "webhooks")
            if not revs and not any(u.text(w, "name").endswith("istio.io") for w in webhooks):
                continue
            revisions |= revs
            for wh in webhooks:
                hooks.append((f"{u.full_name(cfg)}/{u.text(wh, 'name')}", wh, cfg))
        ns_sets = _label_sets(
            [{}, {u.INJECTION_LABEL: "enabled"}, {u.INJECTION_LABEL: "disabled"}], revisions
        )
        obj_sets = _label_sets(
            [{}, {u.SIDECAR_INJECT: "true"}, {u.SIDECAR_INJECT: "false"}], revisions
        )
        by_name = {name: cfg for name, _, cfg in hooks}
        for nl in ns_sets:
            for ol in obj_sets:
                matches = sorted(
                    {
                        name
                        for name, wh, _ in hooks
                        if u.label_selector_matches(u.get(wh, "namespace_selector"), nl)
                        and u.label_selector_matches(u.get(wh, "object_selector"), ol)
                    }
                )
                if len(matches) <= 1:
                    continue
                for match in matches:
                    others = [m for m in matches if m != match]
                    ctx.report(
                        by_name[match],
                        "InvalidWebhook",
                        f"Webhook overlaps with others: [{' '.join(others)}]. "
                        "This may cause injection to occur twice.",
                    )
        for _, wh, cfg in hooks:
            svc = u.get(wh, "client_config.service")
            if svc is None:
                continue
            ns, svc_name = u.text(svc, "namespace"), u.text(svc, "name")
            if not ctx.exists(u.SERVICE, ns, svc_name):
                full = f"{ns}/{svc_name}" if ns else svc_name
                ctx.report(
                    cfg,
                    "InvalidWebhook",
                    f"Injector refers to a control plane service that does not exist: {full}.",
                )
