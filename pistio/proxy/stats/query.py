"""Which stats a ``/stats`` request asks for: ``filter=<regex>``, ``usedonly`` and ``type=``.

Envoy matches ``filter`` anywhere in the flat stat name (a search, not a full match) and
answers 400 for an invalid expression. ``usedonly`` keeps stats that were ever written; we
approximate "written" by "not zero" (a histogram: at least one sample), which differs from
Envoy only for a gauge explicitly set to 0. ``type`` is ``All`` (default), ``Counters``,
``Gauges``, ``Histograms`` or ``TextReadouts``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

TYPES = ("All", "Counters", "Gauges", "Histograms", "TextReadouts")


class StatsQueryError(ValueError):
    pass


@dataclass(frozen=True)
class StatsQuery:
    regex: re.Pattern[str] | None = None
    used_only: bool = False
    type: str = "All"

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> StatsQuery:
        regex = None
        pattern = params.get("filter")
        if pattern:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise StatsQueryError(f"Invalid re2 regex: {exc}") from exc
        kind = params.get("type", "All") or "All"
        if kind not in TYPES:
            raise StatsQueryError(f"invalid type={kind}; use one of {', '.join(TYPES)}")
        return cls(regex, "usedonly" in params, kind)

    def wants(self, kind: str) -> bool:
        return self.type == "All" or self.type == kind

    def shows(self, name: str, used: bool) -> bool:
        if self.used_only and not used:
            return False
        return self.regex is None or self.regex.search(name) is not None
