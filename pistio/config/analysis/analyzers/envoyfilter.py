"""envoyfilter.EnvoyPatchAnalyzer: patch operations that are ignored or fragile."""

from __future__ import annotations

from typing import Any

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource

ROUTE_LEVEL = ("ROUTE_CONFIGURATION", "HTTP_ROUTE")
# Patches REPLACE can apply to (named filters, and whole virtual hosts).
REPLACEABLE = ("NETWORK_FILTER", "HTTP_FILTER", "VIRTUAL_HOST")


def _instance_name(patch: Any) -> str:
    """The filter a patch is about: the patch value's ``name``, else the matched filter."""
    value = u.get(patch, "patch.value")
    if not isinstance(value, dict) or not value:
        return ""
    if "name" in value:
        return _go_value_string(value["name"])
    return u.text(patch, "match.listener.filter_chain.filter.name")


def _go_value_string(v: Any) -> str:
    # structpb.Value.String(); only equality between patches matters here
    return repr(v)


class EnvoyPatchAnalyzer(Analyzer):
    name = "envoyfilter.EnvoyPatchAnalyzer"
    description = "Checks an envoyFilters "

    def analyze(self, ctx: Context) -> None:
        # names of filters patched with a proxyVersion match, across EnvoyFilters in order
        versioned: list[str] = []
        for r in ctx.each(u.ENVOY_FILTER):
            self._check(ctx, r, versioned)

    def _check(self, ctx: Context, r: Resource, versioned: list[str]) -> None:
        priority = u.to_int(u.get(r.spec, "priority")) or 0
        for patch in u.items(r.spec, "config_patches"):
            if u.get(patch, "patch") is None:
                break
            name = _instance_name(patch)
            op = u.enum_name(patch, "patch.operation", "INVALID")
            apply_to = u.enum_name(patch, "apply_to", "INVALID")
            # istioctl points these at the resource (the patch value is no scalar field)
            path = None
            if op == "ADD":
                if apply_to in ROUTE_LEVEL:
                    ctx.report(r, "EnvoyFilterUsesAddOperationIncorrectly", path=path)
            elif op == "REMOVE":
                if apply_to in ROUTE_LEVEL:
                    ctx.report(r, "EnvoyFilterUsesRemoveOperationIncorrectly", path=path)
                else:
                    self._relative(ctx, r, priority, name, versioned, path)
            elif op == "REPLACE":
                if apply_to not in REPLACEABLE:
                    ctx.report(r, "EnvoyFilterUsesReplaceOperationIncorrectly", path=path)
                else:
                    self._relative(ctx, r, priority, name, versioned, path)
            elif op in ("INSERT_BEFORE", "INSERT_AFTER"):
                self._relative(ctx, r, priority, name, versioned, path)
            if u.text(patch, "match.proxy.proxy_version"):
                versioned.append(name)

    @staticmethod
    def _relative(
        ctx: Context, r: Resource, priority: int, name: str, versioned: list[str], path: str | None
    ) -> None:
        if priority != 0:
            return
        if name in versioned:
            ctx.report(r, "EnvoyFilterUsesRelativeOperationWithProxyVersion", path=path)
        else:
            ctx.report(r, "EnvoyFilterUsesRelativeOperation", path=path)
