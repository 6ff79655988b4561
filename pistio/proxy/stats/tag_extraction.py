"""Tag extraction: how a flat Envoy stat name becomes a Prometheus metric with labels.

Envoy names stats as dotted paths that embed variable parts
(``cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200``). For
Prometheus it applies tag extractors, each a regular expression whose first capture group is
cut out of the name and whose second capture group (or the first, if there is only one) becomes
a label value. All extractors match against the original name; the cuts are applied together;
the remainder, with every character outside ``[a-zA-Z0-9_]`` replaced by ``_`` and prefixed
with ``envoy_``, is the metric name. The example becomes
``envoy_cluster_upstream_rq{response_code="200",cluster_name="outbound|9080||reviews..."}``.

The extractors are the ones Istio's bootstrap configures (``stats_config.stats_tags`` with
``use_all_default_tags: false``), so names and labels match what an Istio sidecar exports.
Envoy applies extractors whose regex has no literal first token before those keyed by one
(``^cluster\\.``...), which decides the label order. Results are cached per name: extraction
runs once per stat, not once per scrape.
"""

from __future__ import annotations

import re
from functools import lru_cache

# (tag name, regex) in Istio's bootstrap order. POSIX [:digit:] is spelled \d for Python.
_HTTP_PREFIX = r"(((?:[_.\d]*|[_\[\]aAbBcCdDeEfF\d]*))\.)"
ISTIO_STATS_TAGS: tuple[tuple[str, str], ...] = (
    ("cluster_name", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"),
    ("tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
    ("response_code", r"_rq(_(\d{3}))$"),
    ("response_code_class", r"_rq(_(\dxx))$"),
    ("http_conn_manager_listener_prefix", r"^listener(?=\.).*?\.http\." + _HTTP_PREFIX),
    ("http_conn_manager_prefix", r"^http\." + _HTTP_PREFIX),
    ("listener_address", r"^listener\." + _HTTP_PREFIX),
    ("mongo_prefix", r"^mongo\.(.+?)\.(collection|cmd|cx_|op_|delays_|decoding_)(.*?)$"),
    ("cache", r"(cache\.(.+?)\.)"),
    ("component", r"(component\.(.+?)\.)"),
    ("tag", r"(tag\.(.+?);\.)"),
    ("wasm_filter", r"(wasm_filter\.(.+?)\.)"),
    ("authz_enforce_result", r"rbac(\.(allowed|denied))"),
    ("authz_dry_run_action", r"(\.istio_dry_run_(allow|deny)_)"),
    ("authz_dry_run_result", r"(\.shadow_(allowed|denied))"),
)

_PREFIX_TOKEN = re.compile(r"^\^(\w+)(?:\\\.|\(\?=\\\.\))")
_PROMETHEUS_INVALID = re.compile(r"[^a-zA-Z0-9_]")


class TagExtractor:
    __slots__ = ("name", "regex", "prefix")

    def __init__(self, name: str, regex: str) -> None:
        self.name = name
        self.regex = re.compile(regex)
        m = _PREFIX_TOKEN.match(regex)
        # The literal first token (``cluster`` in ``^cluster\.``): only names starting with it
        # can match, and Envoy applies such extractors after the unprefixed ones.
        self.prefix = m.group(1) if m else None


_UNPREFIXED = tuple(
    TagExtractor(n, r) for n, r in ISTIO_STATS_TAGS if TagExtractor(n, r).prefix is None
)
_PREFIXED: dict[str, tuple[TagExtractor, ...]] = {}
for _name, _regex in ISTIO_STATS_TAGS:
    _ex = TagExtractor(_name, _regex)
    if _ex.prefix is not None:
        _PREFIXED[_ex.prefix] = (*_PREFIXED.get(_ex.prefix, ()), _ex)


@lru_cache(maxsize=1 << 16)
def extract_tags(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``(tag-extracted name, ((tag, value), ...))`` for a flat stat name."""
    first_token = name.partition(".")[0]
    cuts: list[tuple[int, int]] = []
    tags: list[tuple[str, str]] = []
    for extractor in (*_UNPREFIXED, *_PREFIXED.get(first_token, ())):
        m = extractor.regex.search(name)
        if m is None or m.lastindex is None:
            continue
        start, end = m.span(1)
        if start < 0:
            continue
        value_group = 2 if m.re.groups >= 2 and m.start(2) >= 0 else 1
        tags.append((extractor.name, m.group(value_group)))
        cuts.append((start, end))
    if not cuts:
        return name, ()
    keep = []
    pos = 0
    for start, end in sorted(cuts):
        if start > pos:
            keep.append(name[pos:start])
        pos = max(pos, end)
    keep.append(name[pos:])
    return "".join(keep), tuple(tags)


def prometheus_name(tag_extracted_name: str) -> str:
    """Envoy's metric name for a tag-extracted stat name."""
    return "envoy_" + _PROMETHEUS_INVALID.sub("_", tag_extracted_name)


def prometheus_label(tag_name: str) -> str:
    return _PROMETHEUS_INVALID.sub("_", tag_name)
