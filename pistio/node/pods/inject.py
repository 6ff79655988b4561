"""Istio's sidecar injection for the local runtime: the decision and the injected pod.

The decision is what a cluster gets from Istio's four mutating webhooks (default revision,
``enableNamespacesByDefault`` off) followed by the injector's own ``injectRequired``:

- never for ``hostNetwork`` pods, pods in ``kube-system``/``kube-public``, or pods already
  injected;
- webhook ``namespace``: namespace ``istio-injection=enabled`` and pod label
  ``sidecar.istio.io/inject`` not ``"false"``;
- ``object``: namespace without ``istio-injection``/``istio.io/rev``, pod label
  ``sidecar.istio.io/inject=true`` and no pod ``istio.io/rev``;
- ``rev.namespace``: namespace ``istio.io/rev=<rev>`` without ``istio-injection``, pod label
  not ``"false"``;
- ``rev.object``: namespace without either label, pod ``istio.io/rev=<rev>``, pod label not
  ``"false"``;
- then ``injectRequired`` (policy ``enabled``): the pod label, else the deprecated pod
  annotation ``sidecar.istio.io/inject``, must be unset or one of y/yes/true/on
  (case-insensitive). So the annotation can veto but not, alone, enable injection — as in
  Istio, where webhooks select on labels only.

The injected pod mirrors Istio's template where it matters here: an ``istio-proxy`` container
(uid/gid 1337, readiness ``:15021/healthz/ready``, Istio's env), app probes rewritten to the
agent's status port with the originals in ``ISTIO_KUBE_APP_PROBERS``, the
``sidecar.istio.io/status`` annotation, Istio's injected labels and Istio's metrics merge
(the pod's ``prometheus.io/*`` annotations point at the agent's 15020, the app's originals go
to ``ISTIO_PROMETHEUS_ANNOTATIONS``). There is no
``istio-init`` container: the node applies the capture itself, as Istio CNI would.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

__all__ = [
    "PROXY_CONTAINER", "STATUS_ANNOTATION", "app_probers", "inject", "injection_wanted",
    "rewrite_probes",
]

PROXY_CONTAINER = "istio-proxy"
PROXY_UID = 1337
PROXY_GID = 1337
STATUS_PORT = 15020
HEALTH_PORT = 15021
REVISION = "default"

INJECT_KEY = "sidecar.istio.io/inject"
REV_LABEL = "istio.io/rev"
NS_INJECTION_LABEL = "istio-injection"
STATUS_ANNOTATION = "sidecar.istio.io/status"
REWRITE_PROBES_ANNOTATION = "sidecar.istio.io/rewriteAppHTTPProbers"
STATUS_PORT_ANNOTATION = "status.sidecar.istio.io/port"
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
MERGE_METRICS_ANNOTATION = "prometheus.istio.io/merge-metrics"
PROM_SCRAPE, PROM_PORT, PROM_PATH = "prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"
PROMETHEUS_ANNOTATIONS_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public"})
_YES = frozenset({"y", "yes", "true", "on"})
_PROBES = (("readinessProbe", "readyz"), ("livenessProbe", "livez"),
           ("startupProbe", "startupz"))


def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def already_injected(pod: Mapping[str, Any]) -> bool:
    containers = (pod.get("spec") or {}).get("containers") or []
    return (STATUS_ANNOTATION in (_meta(pod).get("annotations") or {})
            or any(c.get("name") == PROXY_CONTAINER for c in containers))


def _webhook_selects(labels: Mapping[str, str], ns_labels: Mapping[str, str],
                     revision: str) -> bool:
    ns_inject = ns_labels.get(NS_INJECTION_LABEL)
    ns_rev = ns_labels.get(REV_LABEL)
    pod_inject = labels.get(INJECT_KEY)
    pod_rev = labels.get(REV_LABEL)
    not_false = pod_inject != "false"
    return (
        (ns_inject == "enabled" and not_false)  # namespace.sidecar-injector.istio.io
        or (ns_inject is None and ns_rev is None and pod_inject == "true"
            and pod_rev is None)  # object.sidecar-injector.istio.io
        or (ns_rev == revision and ns_inject is None and not_false)  # rev.namespace
        or (ns_rev is None and ns_inject is None and pod_rev == revision
            and not_false)  # rev.object
    )


def injection_wanted(pod: Mapping[str, Any], namespace_labels: Mapping[str, str], *,
                     revision: str = REVISION) -> bool:
    """Whether Istio would inject a sidecar into ``pod`` (see the module doc)."""
    meta = _meta(pod)
    if (pod.get("spec") or {}).get("hostNetwork"):
        return False
    if (meta.get("namespace") or "default") in IGNORED_NAMESPACES:
        return False
    if already_injected(pod):
        return False
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    if not _webhook_selects(labels, namespace_labels, revision):
        return False
    annotations = meta.get("annotations") or {}
    selector = str(labels.get(INJECT_KEY, annotations.get(INJECT_KEY, "")))
    return selector == "" or selector.lower() in _YES


def _parse_bool(value: str) -> bool | None:
    # Go's strconv.ParseBool
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def _port_number(value: Any, ports: Sequence[Mapping[str, Any]]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        for p in ports:
            if p.get("name") == value and p.get("containerPort") is not None:
                return int(p["containerPort"])
    return None


def _prober(probe: Mapping[str, Any], ports: Sequence[Mapping[str, Any]]) -> dict | None:
    """Istio's internal prober for one probe (named port resolved), or None when the probe
    is not one the agent takes over (exec, gRPC, unknown named port)."""
    out: dict[str, Any]
    if probe.get("httpGet") is not None:
        action = probe["httpGet"]
        port = _port_number(action.get("port"), ports)
        if port is None:
            return None
        get: dict[str, Any] = {}  # Go's HTTPGetAction field order
        if action.get("path"):
            get["path"] = action["path"]
        get["port"] = port
        for key in ("host", "scheme", "httpHeaders"):
            if action.get(key):
                get[key] = action[key]
        out = {"httpGet": get}
    elif probe.get("tcpSocket") is not None:
        action = probe["tcpSocket"]
        port = _port_number(action.get("port"), ports)
        if port is None:
            return None
        sock: dict[str, Any] = {"port": port}
        if action.get("host"):
            sock["host"] = action["host"]
        out = {"tcpSocket": sock}
    else:
        return None
    if probe.get("timeoutSeconds"):
        out["timeoutSeconds"] = probe["timeoutSeconds"]
    return out


def app_probers(pod: Mapping[str, Any]) -> dict[str, dict]:
    """URL path → original probe, for every app container's httpGet/tcpSocket probe."""
    out: dict[str, dict] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == PROXY_CONTAINER:
            continue
        for field, suffix in _PROBES:
            probe = c.get(field)
            if probe:
                prober = _prober(probe, c.get("ports") or [])
                if prober is not None:
                    out[f"/app-health/{c['name']}/{suffix}"] = prober
    return out


def rewrite_probes(pod: dict[str, Any], status_port: int = STATUS_PORT) -> str:
    """Rewrite ``pod``'s app probes in place to ``httpGet :<status_port>
    /app-health/<container>/<kind>`` and return ``ISTIO_KUBE_APP_PROBERS`` ("" when none)."""
    probers = app_probers(pod)
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == PROXY_CONTAINER:
            continue
        for field, suffix in _PROBES:
            url = f"/app-health/{c['name']}/{suffix}"
            if url not in probers:
                continue
            probe = c[field]
            action = dict(probe.get("httpGet") or {})
            probe.pop("tcpSocket", None)  # the agent checks TCP behind an HTTP probe
            action["port"] = status_port
            action["path"] = url
            if str(action.get("scheme", "")).upper() == "HTTPS":  # kubelet → HTTP → agent
                action["scheme"] = "HTTP"
            probe["httpGet"] = action
    if not probers:
        return ""
    return json.dumps(dict(sorted(probers.items())), separators=(",", ":"))


def _proxy_config(annotations: Mapping[str, str]) -> dict[str, Any]:
    """The pod's ``proxy.istio.io/config`` annotation (a ProxyConfig), parsed once."""
    raw = annotations.get(PROXY_CONFIG_ANNOTATION)
    if not raw:
        return {}
    try:
        config = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"annotation {PROXY_CONFIG_ANNOTATION}: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"annotation {PROXY_CONFIG_ANNOTATION}: expected a ProxyConfig map")
    return config


def _concurrency(config: Mapping[str, Any]) -> int:
    value = config.get("concurrency", 1)  # locally one worker per proxy; Istio's default is 2
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"annotation {PROXY_CONFIG_ANNOTATION}: concurrency must be a "
                         f"non-negative integer, not {value!r}")
    return value


def _proxy_metadata(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """``proxyMetadata`` entries become the proxy's environment, as Istio's injector does
    (SECRET_TTL, ISTIO_META_*...)."""
    metadata = config.get("proxyMetadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"annotation {PROXY_CONFIG_ANNOTATION}: proxyMetadata must be a map")
    return [{"name": str(k), "value": str(v)} for k, v in sorted(metadata.items())]


def _workload_name(meta: Mapping[str, Any]) -> str:
    """The Deployment's name when the pod came from one (generateName minus the template
    hash, or the local node's owner annotation), else the pod's name."""
    labels = meta.get("labels") or {}
    kind, _, owner = str((meta.get("annotations") or {}).get("pistio.io/owner", "")).partition("/")
    if kind == "Deployment" and owner:  # the node names pods itself, without generateName
        return owner
    generate = str(meta.get("generateName") or "").rstrip("-")
    if generate:
        template_hash = labels.get("pod-template-hash")
        if template_hash and generate.endswith("-" + str(template_hash)):
            return generate[: -len(str(template_hash)) - 1]
        return generate
    return str(meta.get("name", ""))


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _apply_prometheus_merge(annotations: dict[str, Any], env: list[dict[str, Any]],
                            status_port: int, mesh_default: bool) -> None:
    """Istio's metrics merge: unless the pod opted out (``prometheus.io/scrape: "false"``,
    or ``prometheus.istio.io/merge-metrics: "false"``, or meshConfig.enablePrometheusMerge
    false), the app's ``prometheus.io/{scrape,port,path}`` go to the agent in
    ``ISTIO_PROMETHEUS_ANNOTATIONS`` and the pod is scraped on the status port instead."""
    if str(annotations.get(PROM_SCRAPE, "")).lower() == "false":
        return
    merge = _parse_bool(str(annotations.get(MERGE_METRICS_ANNOTATION, "")))
    if not (mesh_default if merge is None else merge):
        return
    target = str(status_port)
    if str(annotations.get(PROM_PORT, "")) == target:
        return  # already pointing at the agent (re-injection, or the user's choice)
    original = {"scrape": str(annotations.get(PROM_SCRAPE, "")),
                "port": str(annotations.get(PROM_PORT, "")),
                "path": str(annotations.get(PROM_PATH, ""))}
    env.append({"name": PROMETHEUS_ANNOTATIONS_ENV,
                "value": json.dumps(original, separators=(",", ":"))})
    annotations[PROM_PORT] = target
    annotations[PROM_PATH] = "/stats/prometheus"
    annotations[PROM_SCRAPE] = "true"


def inject(pod: Mapping[str, Any], *, discovery_address: str,
           proxy_argv_prefix: Sequence[str], ca_address: str | None = None,
           ca_root_cert: str | None = None, token_file: str | None = None,
           enable_prometheus_merge: bool = True) -> dict[str, Any]:
    """A deep copy of ``pod`` with Istio's sidecar (see the module doc). An already injected
    pod comes back unchanged. :class:`ValueError` on a malformed proxy annotation.

    With ``ca_address`` the sidecar gets workload certificates: ``CA_ADDR`` (Istio's
    variable), the root to trust for the CA and the pod's token file (Kubernetes mounts the
    ``istio-token`` projected volume and ``istio-ca-root-cert`` instead)."""
    out: dict[str, Any] = copy.deepcopy(dict(pod))
    if already_injected(out):
        return out
    meta = out.setdefault("metadata", {})
    spec = out.setdefault("spec", {})
    containers = spec.setdefault("containers", [])
    labels = meta.setdefault("labels", {})
    annotations = meta.setdefault("annotations", {})
    proxy_config = _proxy_config(annotations)
    concurrency = _concurrency(proxy_config)
    workload = _workload_name(meta)

    # Istio's injected labels (the control plane reads tlsMode for auto mTLS).
    labels.setdefault("security.istio.io/tlsMode", "istio")
    labels.setdefault("service.istio.io/canonical-name",
                      labels.get("app.kubernetes.io/name") or labels.get("app") or workload)
    labels.setdefault("service.istio.io/canonical-revision",
                      labels.get("app.kubernetes.io/version") or labels.get("version")
                      or "latest")

    try:
        status_port = int(annotations.get(STATUS_PORT_ANNOTATION, STATUS_PORT))
    except ValueError:
        raise ValueError(f"annotation {STATUS_PORT_ANNOTATION}: not a port number") from None
    probers = ""
    if _parse_bool(str(annotations.get(REWRITE_PROBES_ANNOTATION, ""))) is not False:
        probers = rewrite_probes(out, status_port)

    app_names = [str(c.get("name", "")) for c in containers]
    pod_ports = [{k: p[k] for k in ("name", "containerPort", "protocol") if k in p}
                 for c in containers for p in c.get("ports") or []]
    env: list[dict[str, Any]] = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field_env("HOST_IP", "status.hostIP"),
        {"name": "ISTIO_META_POD_PORTS", "value": json.dumps(pod_ports, separators=(",", ":"))},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(app_names)},
        {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": "REDIRECT"},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": workload},
        {"name": "ISTIO_META_MESH_ID", "value": "cluster.local"},
    ]
    if probers:
        env.append({"name": "ISTIO_KUBE_APP_PROBERS", "value": probers})
    if ca_address:
        env.append({"name": "CA_ADDR", "value": ca_address})
    env += _proxy_metadata(proxy_config)

    command = [*proxy_argv_prefix, "proxy", "sidecar", "--discovery-address",
               discovery_address, "--concurrency", str(concurrency)]
    if status_port != STATUS_PORT:
        command += ["--status-port", str(status_port)]
    if ca_address:
        command += ["--ca-address", ca_address]
        if ca_root_cert:
            command += ["--ca-root-cert", ca_root_cert]
        if token_file:
            command += ["--token-file", token_file]
    for key, value in sorted(labels.items()):
        command += ["--label", f"{key}={value}"]
    containers.append({
        "name": PROXY_CONTAINER,
        "image": "pistio/proxy",  # recorded only: the node runs the command below
        "command": command,
        "env": env,
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT},
            "initialDelaySeconds": 1, "periodSeconds": 2, "timeoutSeconds": 3,
            "failureThreshold": 30,
        },
        "securityContext": {
            "runAsUser": PROXY_UID, "runAsGroup": PROXY_GID, "runAsNonRoot": True,
            "allowPrivilegeEscalation": False, "privileged": False,
            # Read access to the interpreter under a mode-700 home; nothing else.
            "capabilities": {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]},
        },
    })

    if app_names:
        annotations.setdefault("kubectl.kubernetes.io/default-container", app_names[0])
        annotations.setdefault("kubectl.kubernetes.io/default-logs-container", app_names[0])
    _apply_prometheus_merge(annotations, env, status_port, enable_prometheus_merge)
    # Go's encoding of Istio's SidecarInjectionStatus; no init container, no volumes here.
    annotations[STATUS_ANNOTATION] = json.dumps({
        "initContainers": None, "containers": [PROXY_CONTAINER], "volumes": None,
        "imagePullSecrets": None, "revision": REVISION,
    }, separators=(",", ":"))
    return out
