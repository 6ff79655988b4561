"""Validation of ProxyConfig, as Istio's validating webhook applies it."""

from __future__ import annotations

from pistio.api import networking as n
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.networking.shared import GROUP, check_beta_selector
from pistio.config.validation.registry import validates


@validates(GROUP, "ProxyConfig")
def validate_proxy_config(res: Resource, errs: FieldErrors) -> None:
    pc: n.ProxyConfig = res.spec
    check_beta_selector(pc.selector, "spec.selector", errs)
    if pc.concurrency is not None and pc.concurrency < 0:
        errs.error("spec.concurrency", "concurrency must be greater than or equal to 0")
