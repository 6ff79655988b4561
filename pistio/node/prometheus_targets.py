"""A Prometheus ``file_sd`` target list of the local mesh: what Kubernetes service discovery
plus Istio's ``kubernetes-pods`` scrape job would find.

Every running pod annotated ``prometheus.io/scrape: "true"`` becomes one target
``<pod IP>:<prometheus.io/port>`` with labels ``__metrics_path__`` (``prometheus.io/path``,
default ``/metrics``), ``namespace``, ``pod``, ``app`` and ``version``. Injected pods carry
Istio's rewritten annotations (port 15020, ``/stats/prometheus``: the agent's merged metrics).

A Prometheus on the host reads the file with::

    scrape_configs:
      - job_name: kubernetes-pods
        file_sd_configs: [{files: ["<state dir>/prometheus/targets.json"]}]

The file is rewritten atomically, and only when its content changes (Prometheus watches it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TARGETS_FILE = Path("prometheus") / "targets.json"


def pod_targets(pods: Iterable[tuple[Mapping[str, Any], str, bool]]) -> list[dict[str, Any]]:
    """``pods``: (manifest as run, pod IP, running). The file_sd groups, sorted."""
    groups = []
    for manifest, ip, running in pods:
        meta = manifest.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        if not running or not ip or str(annotations.get("prometheus.io/scrape", "")).lower() \
                != "true":
            continue
        port = str(annotations.get("prometheus.io/port", "")).strip()
        if not port.isdigit():
            continue
        labels = meta.get("labels") or {}
        groups.append({
            "targets": [f"{ip}:{port}"],
            "labels": {
                "__metrics_path__": str(annotations.get("prometheus.io/path") or "/metrics"),
                "namespace": str(meta.get("namespace") or "default"),
                "pod": str(meta.get("name") or ""),
                "app": str(labels.get("app", "")),
                "version": str(labels.get("version", "")),
            },
        })
    groups.sort(key=lambda g: (g["labels"]["namespace"], g["labels"]["pod"]))
    return groups


def write_targets(state_dir: Path, groups: list[dict[str, Any]]) -> Path:
    """Write ``<state dir>/prometheus/targets.json`` if it changed; returns its path."""
    path = state_dir / TARGETS_FILE
    text = json.dumps(groups, indent=2, sort_keys=True) + "\n"
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
