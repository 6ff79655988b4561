"""schema.ValidationAnalyzer.<Kind>: validation findings as analysis messages.

Errors from validation become IST0106 (SchemaValidationError) and warnings IST0133
(SchemaWarning). For VirtualServices the rule-reachability analysis Istio's validation performs
is reported as IST0130 (VirtualServiceUnreachableRule) and IST0131 (VirtualServiceIneffectiveMatch).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pistio.config.analysis import util as u
from pistio.config.analysis.core import Analyzer, Context
from pistio.config.resource import Resource

# Validation warnings that this module reports with their own message codes instead.
_REACHABILITY_WARNING = re.compile(r"^virtualService rule .* (not used|is not used)", re.IGNORECASE)


def is_reachability_warning(message: str) -> bool:
    return bool(_REACHABILITY_WARNING.match(message))


class ValidationAnalyzer(Analyzer):
    """Base for the per-kind validation analyzers (one subclass per kind)."""

    group: str = ""
    kind: str = ""

    def analyze(self, ctx: Context) -> None:
        for finding in ctx.schema_findings:
            if finding.kind != self.kind:  # every group's kind of that name
                continue
            issue = finding.issue
            if issue.level == "error":
                ctx.report_doc(finding.doc, "SchemaValidationError", issue.reason, line=issue.line)
            elif not is_reachability_warning(issue.message):
                ctx.report_doc(finding.doc, "SchemaWarning", issue.reason, line=issue.line)
        if self.kind == u.VIRTUAL_SERVICE[1]:
            for r in ctx.each(u.VIRTUAL_SERVICE):
                analyze_reachability(ctx, r)


def make_validation_analyzer(group: str, kind: str) -> type[ValidationAnalyzer]:
    return type(
        f"ValidationAnalyzer{kind}",
        (ValidationAnalyzer,),
        {
            "name": f"schema.ValidationAnalyzer.{kind}",
            "description": f"Runs schema validation as an analyzer on '{kind}' resources",
            "group": group,
            "kind": kind,
        },
    )


# --- VirtualService rule reachability ---------------------------------------------------------


def _as_json(match: Any) -> str:
    """A match's routing content, for comparing matches (its name left out)."""
    if isinstance(match, BaseModel):
        data = match.model_dump(mode="json", exclude_defaults=True)
    elif isinstance(match, dict):
        data = dict(match)
    else:
        data = match
    if isinstance(data, dict):
        data.pop("name", None)
    return json.dumps(data, sort_keys=True, default=str)


def _route_name(route: Any, index: int, http: bool) -> str:
    name = u.text(route, "name") if http else ""
    return json.dumps(name) if name else f"#{index}"


def _match_name(match: Any, index: int, http: bool) -> str:
    name = u.text(match, "name") if http else ""
    return json.dumps(name) if name else f"#{index}"


def _exact_or_prefix(sm: Any) -> str:
    exact, prefix = u.text(sm, "exact"), u.text(sm, "prefix")
    if exact:
        return "exact:" + exact
    if prefix:
        return "prefix:" + prefix
    return ""


@dataclass
class _PrefixMatch:
    route: str
    match: str
    prefix: str
    port: int
    method: str
    authority: str
    headers: dict[str, str]
    query_params: dict[str, str]
    without_headers: dict[str, str]


def _prefix_match(route: str, match_name: str, match: Any) -> _PrefixMatch | None:
    prefix = u.text(match, "uri.prefix")
    if not prefix:
        return None

    def smap(field_name: str) -> dict[str, str]:
        return {k: _exact_or_prefix(v) for k, v in u.mapping(match, field_name).items()}

    return _PrefixMatch(
        route=route,
        match=match_name,
        prefix=prefix,
        port=u.to_int(u.get(match, "port")) or 0,
        method=_exact_or_prefix(u.get(match, "method")) or "exact:GET",
        authority=_exact_or_prefix(u.get(match, "authority")),
        headers=smap("headers"),
        query_params=smap("query_params"),
        without_headers=smap("without_headers"),
    )


def _covers(a: _PrefixMatch, b: _PrefixMatch) -> bool:
    """Whether the earlier match ``a`` takes every request the later match ``b`` would."""
    if not b.prefix.startswith(a.prefix) or a.port != b.port:
        return False
    if a.method != b.method and not a.method.startswith(b.method):
        return False
    if a.authority != b.authority and not a.authority.startswith(b.authority):
        return False
    for am, bm in (
        (a.headers, b.headers),
        (a.query_params, b.query_params),
        (a.without_headers, b.without_headers),
    ):
        if len(am) != len(bm):
            return False
        for k, v in am.items():
            if k not in bm or (v != bm[k] and not v.startswith(bm[k])):
                return False
    return True


def _analyze_rules(ctx: Context, r: Resource, routes: list[Any], http: bool) -> None:
    seen: dict[str, int] = {}
    empty_at = -1
    prefix_matches: list[_PrefixMatch] = []
    for n, route in enumerate(routes):
        matches = u.items(route, "match")
        rname = _route_name(route, n, http)
        if not matches:
            if empty_at >= 0:
                ctx.report(
                    r,
                    "VirtualServiceUnreachableRule",
                    rname,
                    "only the last rule can have no matches",
                )
            empty_at = n
            continue
        duplicates = 0
        for m, match in enumerate(matches):
            if empty_at >= 0:
                ctx.report(
                    r,
                    "VirtualServiceUnreachableRule",
                    rname,
                    "route without matches defined before",
                )
                continue
            key = _as_json(match)
            mname = _match_name(match, m, http)
            if key in seen:
                dup = seen[key]
                ctx.report(
                    r,
                    "VirtualServiceIneffectiveMatch",
                    rname,
                    mname,
                    _route_name(routes[dup], dup, http),
                )
                duplicates += 1
                continue
            seen[key] = n
            if http and (pm := _prefix_match(rname, mname, match)) is not None:
                prefix_matches.append(pm)
        if duplicates == len(matches):
            ctx.report(r, "VirtualServiceUnreachableRule", rname, "all matches used by prior rules")
    for i, a in enumerate(prefix_matches):
        for b in prefix_matches[i + 1 :]:
            if b.prefix == a.prefix:
                continue
            if _covers(a, b):
                ctx.report(
                    r,
                    "VirtualServiceIneffectiveMatch",
                    b.route,
                    f"{b.match} of prefix {b.prefix}",
                    f"{a.match} of prefix {a.prefix} on {a.route}",
                )


def analyze_reachability(ctx: Context, r: Resource) -> None:
    _analyze_rules(ctx, r, u.items(r.spec, "http"), http=True)
    _analyze_rules(ctx, r, u.items(r.spec, "tcp"), http=False)
    _analyze_rules(ctx, r, u.items(r.spec, "tls"), http=False)
