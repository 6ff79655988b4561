"""Validation rules for telemetry kinds: Telemetry, as Istio's webhook and CRD check it."""

from __future__ import annotations

from collections.abc import Sequence

from pistio.api.telemetry import (
    AccessLogging,
    CustomTag,
    Metrics,
    ProviderRef,
    Telemetry,
    Tracing,
)
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.registry import validates
from pistio.config.validation.security import check_dry_run_annotation, check_policy_scope

GROUP = "telemetry.istio.io"


@validates(GROUP, "Telemetry")
def validate_telemetry(res: Resource, errs: FieldErrors) -> None:
    spec: Telemetry = res.spec
    check_dry_run_annotation(res, errs)
    check_policy_scope(spec, errs)
    for i, metrics in enumerate(spec.metrics):
        _check_metrics(metrics, f"spec.metrics[{i}]", errs)
    if len(spec.tracing) > 1:
        errs.warn("spec.tracing", "multiple tracing is not currently supported")
    for i, tracing in enumerate(spec.tracing):
        _check_tracing(tracing, f"spec.tracing[{i}]", errs)
    for i, logging in enumerate(spec.access_logging):
        _check_access_logging(logging, f"spec.accessLogging[{i}]", errs)


def _check_providers(providers: Sequence[ProviderRef], path: str, errs: FieldErrors) -> None:
    # Istio stops at the first nameless provider.
    for j, provider in enumerate(providers):
        if not provider.name:
            errs.error(f"{path}.providers[{j}].name", "providers.name may not be empty")
            return


def _check_metrics(metrics: Metrics, path: str, errs: FieldErrors) -> None:
    _check_providers(metrics.providers, path, errs)
    for j, override in enumerate(metrics.overrides):
        where = f"{path}.overrides[{j}]"
        for name, tag in override.tag_overrides.items():
            tag_path = f"{where}.tagOverrides.{name}"
            if name == "":
                errs.warn(f"{where}.tagOverrides", "tagOverrides.name may not be empty")
            if tag.operation == "UPSERT" and not tag.value:
                errs.error(
                    f"{tag_path}.value", "tagOverrides.value must be set when operation is UPSERT"
                )
            elif tag.operation == "REMOVE" and tag.value:
                errs.error(
                    f"{tag_path}.value",
                    "tagOverrides.value may only be set when operation is UPSERT",
                )
        match = override.match
        if match is not None:
            if match.metric is not None and match.custom_metric is not None:
                # A proto oneof: protojson refuses the second member.
                errs.error(f"{where}.match", "only one of metric or customMetric can be set")
            elif match.custom_metric == "":
                errs.error(f"{where}.match.customMetric", "customMetric may not be empty")
    interval = metrics.reporting_interval
    if interval is not None and interval.seconds < 0.001:
        errs.error(f"{path}.reportingInterval", "must be a valid duration greater than 1ms")


def _check_tracing(tracing: Tracing, path: str, errs: FieldErrors) -> None:
    if len(tracing.providers) > 1:
        errs.warn(f"{path}.providers", "multiple providers is not currently supported")
    _check_providers(tracing.providers, path, errs)
    pct = tracing.random_sampling_percentage
    if pct is not None and not 0 <= pct <= 100:
        errs.error(
            f"{path}.randomSamplingPercentage",
            "randomSamplingPercentage must be in range [0.0, 100.0]",
        )
    for name, tag in tracing.custom_tags.items():
        if name == "":
            errs.error(f"{path}.customTags", "tag name may not be empty")
        _check_custom_tag(tag, f"{path}.customTags.{name}", errs)


def _check_custom_tag(tag: CustomTag, path: str, errs: FieldErrors) -> None:
    kinds = [
        k for k in ("literal", "environment", "header", "formatter") if getattr(tag, k) is not None
    ]
    if len(kinds) > 1:
        errs.error(path, "only one of literal, environment, header or formatter can be set")
        return
    if tag.literal is not None and not tag.literal.value:
        errs.error(f"{path}.literal.value", "literal tag value may not be empty")
    if tag.header is not None and not tag.header.name:
        errs.error(f"{path}.header.name", "header tag name may not be empty")
    if tag.environment is not None and not tag.environment.name:
        errs.error(f"{path}.environment.name", "environment tag name may not be empty")
    if tag.formatter is not None and not tag.formatter.value:
        # The CRD requires it (minLength 1); the webhook does not look.
        errs.error(f"{path}.formatter.value", "formatter tag value may not be empty")


def _check_access_logging(logging: AccessLogging, path: str, errs: FieldErrors) -> None:
    if logging.filter is not None and (err := check_cel_syntax(logging.filter.expression)):
        errs.error(f"{path}.filter.expression", f"must be a valid CEL expression, {err}")
    _check_providers(logging.providers, path, errs)


_CLOSING = {")": "(", "]": "[", "}": "{"}


def check_cel_syntax(expr: str) -> str | None:
    """Why a CEL expression is invalid, or None: the common slips in the parser's words, then
    the proxy's own CEL compiler (when installed), so what is accepted here compiles there."""
    shallow = _shallow_cel_check(expr)
    if shallow is not None:
        return shallow
    try:
        from pistio.proxy.cel import CelError, compile_expression
    except ImportError:  # no CEL library: the proxy NACKs what does not compile
        return None
    try:
        compile_expression(expr)
    except CelError as err:
        return str(err)
    return None


def _shallow_cel_check(expr: str) -> str | None:
    """A shallow syntax check: not empty, strings closed, brackets balanced."""
    if not expr.strip():
        return "ERROR: <input>:1:1: Syntax error: mismatched input '<EOF>'"
    stack: list[tuple[str, int]] = []
    quote = ""
    start = 0
    escaped = False
    for pos, ch in enumerate(expr, start=1):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
            start = pos
        elif ch in "([{":
            stack.append((ch, pos))
        elif ch in _CLOSING:
            if not stack or stack[-1][0] != _CLOSING[ch]:
                return f"ERROR: <input>:1:{pos}: Syntax error: extraneous input '{ch}'"
            stack.pop()
    if quote:
        return f"ERROR: <input>:1:{start}: Syntax error: token recognition error at: '{expr[start - 1 :]}'"
    if stack:
        opener, pos = stack[-1]
        return f"ERROR: <input>:1:{pos}: Syntax error: unbalanced '{opener}'"
    stripped = expr.rstrip()
    if stripped[-1] in "=<>!&|+-*/%?:.,":
        return f"ERROR: <input>:1:{len(stripped) + 1}: Syntax error: mismatched input '<EOF>'"
    return None
