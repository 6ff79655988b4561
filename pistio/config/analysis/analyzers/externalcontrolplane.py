"""externalcontrolplane.ExternalControlPlaneAnalyzer: webhooks that point at an external istiod.

istioctl also resolves each webhook host name through DNS. File analysis runs offline, where a
failed lookup says nothing about the name, so pistio checks the URL's form only.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource

DEFAULT_VALIDATOR = "istiod-default-validator"
VALIDATOR_PREFIX = "istio-validator"
INJECTOR_PREFIX = "istio-sidecar-injector"


def _host_of(url: str) -> str | None:
    """The host name of a webhook URL; None when the URL cannot be parsed."""
    try:
        parts = urlsplit(url)
        return parts.hostname or ""
    except ValueError:
        return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ExternalControlPlaneAnalyzer(Analyzer):
    name = "externalcontrolplane.ExternalControlPlaneAnalyzer"
    description = (
        "Checks that the remote IstioOperator resources reference an external controle plane"
    )

    def analyze(self, ctx: Context) -> None:
        for cfg in ctx.each(u.VALIDATING_WEBHOOK):
            if cfg.name == DEFAULT_VALIDATOR or cfg.name.startswith(VALIDATOR_PREFIX):
                self._check(ctx, cfg)
        for cfg in ctx.each(u.MUTATING_WEBHOOK):
            if cfg.name.startswith(INJECTOR_PREFIX):
                self._check(ctx, cfg)

    @staticmethod
    def _check(ctx: Context, cfg: Resource) -> None:
        for wh in u.items(cfg.obj, "webhooks"):
            name = u.text(wh, "name")
            conf: Any = u.get(wh, "client_config")
            url = u.get(conf, "url")
            if url is not None:
                host = _host_of(str(url))
                if host is None:
                    ctx.report(
                        cfg,
                        "InvalidExternalControlPlaneConfig",
                        url,
                        name,
                        "was provided in an invalid format",
                    )
                elif _is_ip(host):
                    ctx.report(cfg, "ExternalControlPlaneAddressIsNotAHostname", url, name)
            elif u.get(conf, "service") is None:
                ctx.report(cfg, "InvalidExternalControlPlaneConfig", "", name, "is blank")
