"""A container's environment and command line, built the way the kubelet builds them.

Order (kubelet's ``makeEnvironmentVariables``): ``envFrom`` sources in order (a later source
overrides an earlier one, keys that are not valid variable names are skipped), then ``env``
entries in order (overriding ``envFrom``). Only ``env[].value`` is ``$(VAR)``-expanded, against
the variables defined before it; values from ConfigMaps, Secrets and the downward API are taken
literally. ``command``/``args`` are expanded against the final environment.

The node adds ``PATH`` (there is no image, so the host's) and ``HOSTNAME`` (the pod's
hostname) first, so a manifest can still override them.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["EnvError", "container_argv", "container_env", "expand"]

_VALID_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\['(.*)'\]$")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EnvError(ValueError):
    """The environment cannot be built (the kubelet's CreateContainerConfigError)."""


def expand(text: str, values: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` is a literal ``$``, an undefined ``$(VAR)``
    and an unterminated ``$(`` stay as written, any other ``$x`` is copied unchanged."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":  # escaped operator
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:  # incomplete reference: keep "$(" and go on scanning after it
                out.append("$(")
                i += 2
                continue
            name = text[i + 2:close]
            out.append(values.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def _pod_field(pod: Mapping[str, Any], path: str, *, pod_ip: str, host_ip: str,
               node_name: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    m = _SUBSCRIPT.match(path)
    if m:
        which = "labels" if m.group(1).endswith("labels") else "annotations"
        return str((meta.get(which) or {}).get(m.group(2), ""))
    match path:
        case "metadata.name":
            return str(meta.get("name", ""))
        case "metadata.namespace":
            return str(meta.get("namespace") or "default")
        case "metadata.uid":
            return str(meta.get("uid", ""))
        case "spec.serviceAccountName":
            # The ServiceAccount admission plugin fills in "default".
            return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        case "spec.nodeName":
            return str(spec.get("nodeName") or node_name or socket.gethostname())
        case "status.podIP" | "status.podIPs":
            return pod_ip
        case "status.hostIP" | "status.hostIPs":
            return host_ip or str((pod.get("status") or {}).get("hostIP", ""))
    raise EnvError(f"unsupported fieldRef fieldPath {path!r}")


def _quantity(value: Any) -> float:
    """A Kubernetes resource quantity (``500m``, ``2``, ``128Mi``, ``1G``) as a number."""
    text = str(value).strip()
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10,
                "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * suffixes[suffix]
    return float(text)


def _resource_field(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    # The kubelet falls back to the node's allocatable when no limit is set.
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    given = (resources.get(kind) or {}).get(name) if kind in ("limits", "requests") else None
    if name == "cpu":
        amount = _quantity(given) if given is not None else float(os.cpu_count() or 1)
    elif name == "memory":
        amount = (_quantity(given) if given is not None
                  else float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")))
    else:
        raise EnvError(f"unsupported resourceFieldRef resource {resource!r}")
    divisor = _quantity(ref.get("divisor") or 1) or 1.0
    return str(int(-(-amount // divisor)))  # rounded up, as the kubelet does


def _lookup(store: Mapping[tuple[str, str], Mapping[str, str]], namespace: str,
            ref: Mapping[str, Any], what: str) -> str | None:
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional", False))
    data = store.get((namespace, name))
    if data is None:
        if optional:
            return None
        raise EnvError(f'{what} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise EnvError(f"couldn't find key {key} in {what} {namespace}/{name}")
    return str(data[key])


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    pod_ip: str,
    config_maps: Mapping[tuple[str, str], Mapping[str, str]] = {},  # noqa: B006 (read-only)
    secrets: Mapping[tuple[str, str], Mapping[str, str]] = {},  # noqa: B006 (read-only)
    host_ip: str = "",
    node_name: str = "",
) -> dict[str, str]:
    """The environment of ``container`` in ``pod``. ``config_maps`` and ``secrets`` map
    ``(namespace, name)`` to the object's data, Secret values already base64-decoded.
    Raises :class:`EnvError` for a missing non-optional source or an unsupported field."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = str(meta.get("namespace") or "default")
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "HOSTNAME": str(spec.get("hostname") or meta.get("name", "")),
    }
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        if "configMapRef" in source:
            ref, store, what = source["configMapRef"] or {}, config_maps, "configmap"
        elif "secretRef" in source:
            ref, store, what = source["secretRef"] or {}, secrets, "secret"
        else:
            raise EnvError("envFrom entry needs configMapRef or secretRef")
        data = store.get((namespace, str(ref.get("name", ""))))
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{what} "{ref.get("name", "")}" not found')
        for key, value in data.items():
            name = prefix + str(key)
            if _VALID_NAME.match(name):  # the kubelet skips invalid names (with an event)
                env[name] = str(value)
    for entry in container.get("env") or []:
        name = str(entry.get("name", ""))
        if not name:
            raise EnvError("env entry without a name")
        value_from = entry.get("valueFrom")
        if not value_from:
            env[name] = expand(str(entry.get("value") or ""), env)
            continue
        value: str | None
        if "fieldRef" in value_from:
            path = str((value_from["fieldRef"] or {}).get("fieldPath", ""))
            value = _pod_field(pod, path, pod_ip=pod_ip, host_ip=host_ip, node_name=node_name)
        elif "configMapKeyRef" in value_from:
            value = _lookup(config_maps, namespace, value_from["configMapKeyRef"] or {},
                            "configmap")
        elif "secretKeyRef" in value_from:
            value = _lookup(secrets, namespace, value_from["secretKeyRef"] or {},
                            "secret")
        elif "resourceFieldRef" in value_from:
            value = _resource_field(container, value_from["resourceFieldRef"] or {})
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(value_from)}")
        if value is not None:  # an optional, missing key leaves the variable unset
            env[name] = value
    return env


def container_argv(container: Mapping[str, Any],
                   env: Mapping[str, str] | None = None) -> list[str]:
    """``command`` + ``args`` expanded against ``env``. Without ``command`` the ``args`` run
    alone (there is no image entrypoint to prepend); with neither, :class:`ValueError`."""
    command = [str(x) for x in container.get("command") or []]
    args = [str(x) for x in container.get("args") or []]
    argv = command + args
    if not argv:
        raise ValueError(f"container {container.get('name', '')!r} has neither command nor args "
                         "(there is no image entrypoint to run)")
    values = env or {}
    return [expand(a, values) for a in argv]
