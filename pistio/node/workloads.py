"""From Deployments and Pods as applied to the pods the node should run (no I/O here).

A Deployment's pods are named ``<deployment>-<template hash>-<5 chars>`` and labelled
``pod-template-hash``, as the ReplicaSet controller names them; a changed template gets a new
hash, so its pods are replaced.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import string
from collections.abc import Mapping
from typing import Any

from pistio.node.store import StoredObject

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.String alphabet
TEMPLATE_HASH_LABEL = "pod-template-hash"
OWNER_ANNOTATION = "pistio.io/owner"  # "Deployment/<name>" for a deployment's pods


def template_hash(template: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    alphabet = _SUFFIX_ALPHABET
    value = int.from_bytes(digest[:8], "big")
    out = []
    for _ in range(10):
        value, rem = divmod(value, len(alphabet))
        out.append(alphabet[rem])
    return "".join(out)


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(n))


def replicas(deploy: StoredObject) -> int:
    value = (deploy.data.get("spec") or {}).get("replicas", 1)
    return value if isinstance(value, int) and value >= 0 else 1


def pod_from_template(deploy: StoredObject, pod_name: str, hash_: str) -> dict[str, Any]:
    template = copy.deepcopy((deploy.data.get("spec") or {}).get("template") or {})
    meta = template.setdefault("metadata", {})
    meta["name"] = pod_name
    meta["namespace"] = deploy.namespace
    labels = meta.setdefault("labels", {})
    labels[TEMPLATE_HASH_LABEL] = hash_
    meta.setdefault("annotations", {})[OWNER_ANNOTATION] = f"Deployment/{deploy.name}"
    meta.pop("generateName", None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": template.get("spec") or {}}


def bare_pod(pod: StoredObject) -> dict[str, Any]:
    data = copy.deepcopy(pod.data)
    data.pop("status", None)
    return data


def pod_spec_digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest.get("spec") or {}, sort_keys=True)
                          .encode()).hexdigest()[:16]


def valid_dns_label(name: str) -> bool:
    allowed = set(string.ascii_lowercase + string.digits + "-")
    return 0 < len(name) <= 63 and set(name) <= allowed and name[0] != "-" and name[-1] != "-"
