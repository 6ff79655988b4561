"""Metrics without a Prometheus: scrape every sidecar of the local node ourselves.

The pods and their IPs come from the node's API (as ``pistio get pods`` reads them); each
injected pod's proxy serves Istio's metrics on ``<pod IP>:15090/stats/prometheus``, which the
node's inbound capture leaves alone. Scrapes go into a :class:`SampleWindow`, and the
dashboard's PromQL is evaluated over the window's rates.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pistio.dashboard.exposition import parse_istio_series
from pistio.dashboard.promql import evaluate_all
from pistio.dashboard.sample_window import SampleWindow, Scrape
from pistio.dashboard.traffic import Traffic

PROXY_CONTAINER = "istio-proxy"
PROMETHEUS_PORT = 15090
SCRAPE_TIMEOUT = 3.0

# (namespace/pod, "ip:port") of every injected pod; raises NodeUnavailable.
TargetLister = Callable[[], list[tuple[str, str]]]
Fetch = Callable[[str], str]


def node_targets(socket_path: Path) -> TargetLister:
    """The sidecars of the node listening on ``socket_path``."""
    from pistio.node import api

    def listing() -> list[tuple[str, str]]:
        answer = api.call(socket_path, "get", timeout=10, kind="Pod", namespace=None)
        if not answer.get("ok"):
            raise api.NodeUnavailable(answer.get("error") or "the node refused to list pods")
        return sidecar_targets(answer.get("items") or [])

    return listing


def sidecar_targets(pods: list[dict[str, Any]]) -> list[tuple[str, str]]:
    targets = []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        ip = (pod.get("status") or {}).get("podIP")
        injected = any(c.get("name") == PROXY_CONTAINER for c in spec.get("containers") or [])
        if ip and injected:
            key = f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"
            targets.append((key, f"{ip}:{PROMETHEUS_PORT}"))
    return sorted(targets)


def http_fetch(address: str) -> str:
    url = f"http://{address}/stats/prometheus"
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as resp:  # noqa: S310 (http)
        return resp.read().decode("utf-8", errors="replace")


class ScrapeSource:
    def __init__(self, targets: TargetLister, window_seconds: float,
                 fetch: Fetch = http_fetch, clock: Callable[[], float] = time.monotonic) -> None:
        self.description = "sidecars' :15090/stats/prometheus, scraped by the dashboard"
        self._targets = targets
        self._fetch = fetch
        self._clock = clock
        self.window = SampleWindow(window_seconds)
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="scrape")

    def collect(self) -> Traffic:
        from pistio.node.api import NodeUnavailable

        try:
            targets = self._targets()
        except NodeUnavailable as exc:
            return Traffic(error=f"{exc}; start it with `pistio up`, or give --prometheus URL")
        warnings = []
        results = self._pool.map(self._scrape_one, targets)
        for (key, address), (at, series, problem) in zip(targets, results, strict=True):
            if problem is not None:
                warnings.append(f"scrape of {key} ({address}) failed: {problem}")
            else:
                self.window.add(key, Scrape(at, series))
        self.window.keep_only({key for key, _ in targets})
        if not targets:
            warnings.append("no pod with a sidecar on the node")
        return Traffic(vectors=evaluate_all(self.window.rate_source()), warnings=warnings)

    def _scrape_one(self, target: tuple[str, str]) -> tuple[float, dict[Any, float], str | None]:
        _, address = target
        try:
            text = self._fetch(address)
            at = self._clock()
            return at, parse_istio_series(text, address), None
        except urllib.error.URLError as exc:
            return 0.0, {}, str(getattr(exc, "reason", exc))
        except (OSError, ValueError) as exc:
            return 0.0, {}, f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
