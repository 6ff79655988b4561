"""Metrics from a Prometheus that scrapes the mesh: the dashboard's PromQL over its HTTP API.

Each query goes to ``/api/v1/query`` (an instant vector at "now"); the answer's
``{"metric": {...}, "value": [ts, "v"]}`` entries become the same vectors the local evaluator
produces, so the graph builder does not know which source it reads.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pistio.dashboard.promql import QUERIES, Vector, labels_of
from pistio.dashboard.traffic import Traffic

QUERY_TIMEOUT = 10.0


class PrometheusError(Exception):
    """Prometheus could not be reached, or refused a query; the message says which."""


def parse_vector(answer: Any) -> Vector:
    """An ``/api/v1/query`` answer as a vector; raises PrometheusError on anything else."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        detail = answer.get("error") if isinstance(answer, dict) else None
        raise PrometheusError(f"query failed: {detail or 'unexpected answer'}")
    data = answer.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"expected a vector, got {data.get('resultType')!r}")
    out: Vector = {}
    for item in data.get("result") or []:
        try:
            value = float(item["value"][1])  # "NaN", "+Inf" parse as floats
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PrometheusError(f"malformed sample {item!r}") from exc
        out[labels_of(item.get("metric") or {})] = value
    return out


def http_query(base_url: str) -> Callable[[str], Any]:
    def query(promql: str) -> Any:
        url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:  # 400/422: Prometheus explains in JSON
            try:
                return json.loads(err.read())
            except ValueError:
                raise PrometheusError(f"Prometheus at {base_url} answered {err.code}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise PrometheusError(f"cannot reach Prometheus at {base_url}: "
                                  f"{getattr(reason, 'strerror', None) or reason}") from None
        except ValueError:
            raise PrometheusError(f"Prometheus at {base_url} returned invalid JSON") from None

    return query


class PrometheusSource:
    def __init__(self, base_url: str, window: str,
                 query: Callable[[str], Any] | None = None) -> None:
        self.description = f"Prometheus at {base_url}"
        self.base_url = base_url
        self.window = window
        self._query = query or http_query(base_url)
        self._pool = ThreadPoolExecutor(max_workers=len(QUERIES), thread_name_prefix="promql")

    def collect(self) -> Traffic:
        names = list(QUERIES)
        texts = [QUERIES[n].render(self.window) for n in names]
        results = list(self._pool.map(self._run, texts))
        traffic = Traffic()
        for name, (vector, problem) in zip(names, results, strict=True):
            if problem is not None:
                if problem.startswith("cannot reach"):
                    return Traffic(error=problem)
                traffic.warnings.append(f"{name}: {problem}")
            traffic.vectors[name] = vector
        return traffic

    def _run(self, promql: str) -> tuple[Vector, str | None]:
        try:
            vector = parse_vector(self._query(promql))
        except PrometheusError as exc:
            return {}, str(exc)
        return vector, None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
