"""Validation of Kubernetes kinds: what the Kubernetes API server itself would reject.

Only rules the API server enforces are here (the mesh must not be stricter than Kubernetes),
in the API server's words (``Required value``, ``Unsupported value: ...``, ``Duplicate value``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlparse

from pistio.api import kube
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.common import (
    K8S_LABEL_MESSAGE,
    K8S_SUBDOMAIN_MESSAGE,
    is_k8s_label_name,
    is_k8s_subdomain,
)
from pistio.config.validation.registry import validates

DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character"
)
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
CONFIG_KEY_MESSAGE = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
PORT_RANGE = "must be between 1 and 65535, inclusive"
PROTOCOLS = ("SCTP", "TCP", "UDP")


def supported(value: str, allowed: Iterable[str]) -> str:
    """The API server's message for a value outside an enum."""
    options = ", ".join(f'"{a}"' for a in sorted(allowed))
    return f'Unsupported value: "{value}": supported values: {options}'


def is_dns1035_label(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS1035.match(name))


def iana_svc_name_error(name: str) -> str | None:
    """Kubernetes' IsValidPortName: an IANA service name (a named port)."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not re.fullmatch(r"[-a-z0-9]+", name):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if not re.search(r"[a-z]", name):
        return "must contain at least one letter (a-z)"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


def check_port_number(errs: FieldErrors, path: str, port: int) -> None:
    if not 1 <= port <= 65535:
        errs.error(path, f"Invalid value: {port}: {PORT_RANGE}")


def check_int_or_name(errs: FieldErrors, path: str, value: int | str) -> None:
    """A target port or probe port: a number 1..65535 or an IANA port name."""
    if isinstance(value, int):
        check_port_number(errs, path, value)
    elif err := iana_svc_name_error(value):
        errs.error(path, f'Invalid value: "{value}": {err}')


def check_protocol(errs: FieldErrors, path: str, protocol: str | None) -> None:
    if protocol and protocol not in PROTOCOLS:
        errs.error(path, supported(protocol, PROTOCOLS))


def _name_checks(errs: FieldErrors, res: Resource, valid: bool, message: str) -> None:
    # The framework already reports names that are not DNS subdomains; this adds the stricter
    # rule some kinds have, without reporting the same name twice.
    name = res.metadata.name
    if name and is_k8s_subdomain(name) and not valid:
        errs.error("metadata.name", f'invalid name "{name}": {message}')


# --- Namespace, ServiceAccount --------------------------------------------------------------


@validates("", "Namespace")
def validate_namespace(res: Resource, errs: FieldErrors) -> None:
    _name_checks(errs, res, is_k8s_label_name(res.metadata.name), K8S_LABEL_MESSAGE)


@validates("", "ServiceAccount")
def validate_service_account(res: Resource, errs: FieldErrors) -> None:
    sa: kube.ServiceAccount = res.obj  # type: ignore[assignment]
    for i, ref in enumerate(sa.image_pull_secrets):
        if not ref.name:
            errs.error(f"imagePullSecrets[{i}].name", "Required value")


# --- Service ----------------------------------------------------------------------------------

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


@validates("", "Service")
def validate_service(res: Resource, errs: FieldErrors) -> None:
    _name_checks(errs, res, is_dns1035_label(res.metadata.name), DNS1035_MESSAGE)
    spec: kube.ServiceSpec = res.spec
    svc_type = spec.type or "ClusterIP"
    if svc_type not in SERVICE_TYPES:
        errs.error("spec.type", supported(svc_type, SERVICE_TYPES))
    headless = spec.cluster_ip == "None"
    if svc_type == "ExternalName":
        if not spec.external_name:
            errs.error("spec.externalName", "Required value")
        elif not is_k8s_subdomain(spec.external_name.rstrip(".")):
            errs.error(
                "spec.externalName",
                f'Invalid value: "{spec.external_name}": {K8S_SUBDOMAIN_MESSAGE}',
            )
    elif not spec.ports and not headless:
        errs.error("spec.ports", "Required value")
    if spec.cluster_ip and spec.cluster_ip != "None":
        try:
            ipaddress.ip_address(spec.cluster_ip)
        except ValueError:
            errs.error(
                "spec.clusterIP",
                f'Invalid value: "{spec.cluster_ip}": must be a valid IP address, '
                "(e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
    if headless and svc_type in ("NodePort", "LoadBalancer"):
        errs.error(
            "spec.clusterIP",
            f"Invalid value: \"None\": may not be set to 'None' for {svc_type} services",
        )
    _check_service_ports(errs, spec.ports, svc_type)


def _check_service_ports(errs: FieldErrors, ports: list[kube.ServicePort], svc_type: str) -> None:
    names: set[str] = set()
    keys: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        path = f"spec.ports[{i}]"
        if not p.name:
            if len(ports) > 1:
                errs.error(f"{path}.name", "Required value")
        elif not is_k8s_label_name(p.name):
            errs.error(f"{path}.name", f'Invalid value: "{p.name}": {K8S_LABEL_MESSAGE}')
        elif p.name in names:
            errs.error(f"{path}.name", f'Duplicate value: "{p.name}"')
        names.add(p.name)
        check_port_number(errs, f"{path}.port", p.port)
        protocol = p.protocol or "TCP"
        check_protocol(errs, f"{path}.protocol", protocol)
        if (p.port, protocol) in keys:
            errs.error(path, f'Duplicate value: {{"port":{p.port},"protocol":"{protocol}"}}')
        keys.add((p.port, protocol))
        # An unset (or 0) target port defaults to the port itself.
        if p.target_port not in (None, 0) and svc_type != "ExternalName":
            check_int_or_name(errs, f"{path}.targetPort", p.target_port)
        if p.node_port:
            if svc_type in ("ClusterIP", "ExternalName"):
                errs.error(
                    f"{path}.nodePort", f"Forbidden: may not be used when `type` is '{svc_type}'"
                )
            else:
                check_port_number(errs, f"{path}.nodePort", p.node_port)


# --- Endpoints, EndpointSlice -----------------------------------------------------------------


def _check_ip(errs: FieldErrors, path: str, ip: str, family: int | None = None) -> None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        errs.error(path, f'Invalid value: "{ip}": must be a valid IP address')
        return
    if family is not None and addr.version != family:
        errs.error(path, f'Invalid value: "{ip}": must be a valid IPv{family} address')


@validates("", "Endpoints")
def validate_endpoints(res: Resource, errs: FieldErrors) -> None:
    ep: kube.Endpoints = res.obj  # type: ignore[assignment]
    for i, subset in enumerate(ep.subsets):
        path = f"subsets[{i}]"
        for field, addrs in (
            ("addresses", subset.addresses),
            ("notReadyAddresses", subset.not_ready_addresses),
        ):
            for j, a in enumerate(addrs):
                _check_ip(errs, f"{path}.{field}[{j}].ip", a.ip)
        for j, p in enumerate(subset.ports):
            ppath = f"{path}.ports[{j}]"
            if not p.name and len(subset.ports) > 1:
                errs.error(f"{ppath}.name", "Required value")
            check_port_number(errs, f"{ppath}.port", p.port or 0)
            check_protocol(errs, f"{ppath}.protocol", p.protocol)


ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")


@validates("discovery.k8s.io", "EndpointSlice")
def validate_endpoint_slice(res: Resource, errs: FieldErrors) -> None:
    es: kube.EndpointSlice = res.obj  # type: ignore[assignment]
    if not es.address_type:
        errs.error("addressType", "Required value")
    elif es.address_type not in ADDRESS_TYPES:
        errs.error("addressType", supported(es.address_type, ADDRESS_TYPES))
    family = {"IPv4": 4, "IPv6": 6}.get(es.address_type)
    if len(es.endpoints) > 1000:
        errs.error("endpoints", f"Too many: {len(es.endpoints)}: must have at most 1000 items")
    for i, ep in enumerate(es.endpoints):
        path = f"endpoints[{i}].addresses"
        if not ep.addresses:
            errs.error(path, "Required value: must contain at least 1 address")
        elif len(ep.addresses) > 100:
            errs.error(path, f"Too many: {len(ep.addresses)}: must have at most 100 items")
        for j, addr in enumerate(ep.addresses):
            if family is not None:
                _check_ip(errs, f"{path}[{j}]", addr, family)
            elif es.address_type == "FQDN" and not is_k8s_subdomain(addr):
                errs.error(f"{path}[{j}]", f'Invalid value: "{addr}": {K8S_SUBDOMAIN_MESSAGE}')
    names: set[str] = set()
    for i, p in enumerate(es.ports):
        path = f"ports[{i}]"
        name = p.name or ""
        if name and not is_k8s_label_name(name):
            errs.error(f"{path}.name", f'Invalid value: "{name}": {K8S_LABEL_MESSAGE}')
        if name in names:
            errs.error(f"{path}.name", f'Duplicate value: "{name}"')
        names.add(name)
        if p.port is not None and not 0 <= p.port <= 65535:
            errs.error(
                f"{path}.port", f"Invalid value: {p.port}: must be between 0 and 65535, inclusive"
            )
        check_protocol(errs, f"{path}.protocol", p.protocol)


# --- Pods and Deployments ---------------------------------------------------------------------

RESTART_POLICIES = ("Always", "Never", "OnFailure")


def _check_probe(errs: FieldErrors, path: str, probe: kube.Probe) -> None:
    handlers = [
        (name, h)
        for name, h in (
            ("exec", probe.exec),
            ("httpGet", probe.http_get),
            ("tcpSocket", probe.tcp_socket),
            ("grpc", probe.grpc),
        )
        if h is not None
    ]
    if not handlers:
        errs.error(path, "Required value: must specify a handler type")
    for name, _ in handlers[1:]:
        errs.error(f"{path}.{name}", "Forbidden: may not specify more than 1 handler type")
    if probe.http_get is not None:
        check_int_or_name(errs, f"{path}.httpGet.port", probe.http_get.port)
        scheme = probe.http_get.scheme
        if scheme and scheme not in ("HTTP", "HTTPS"):
            errs.error(f"{path}.httpGet.scheme", supported(scheme, ("HTTP", "HTTPS")))
    if probe.tcp_socket is not None:
        check_int_or_name(errs, f"{path}.tcpSocket.port", probe.tcp_socket.port)
    if probe.grpc is not None:
        check_port_number(errs, f"{path}.grpc.port", probe.grpc.port)
    if probe.exec is not None and not probe.exec.command:
        errs.error(f"{path}.exec.command", "Required value")
    for field, value in (
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ):
        if value < 0:
            errs.error(
                f"{path}.{field}", f"Invalid value: {value}: must be greater than or equal to 0"
            )


def _check_security_context(errs: FieldErrors, path: str, sc: kube.SecurityContext) -> None:
    for field, value in (("runAsUser", sc.run_as_user), ("runAsGroup", sc.run_as_group)):
        if value is not None and not 0 <= value <= 2147483647:
            errs.error(
                f"{path}.{field}",
                f"Invalid value: {value}: must be between 0 and 2147483647, inclusive",
            )


def _check_container(errs: FieldErrors, path: str, c: kube.Container) -> None:
    if not c.name:
        errs.error(f"{path}.name", "Required value")
    elif not is_k8s_label_name(c.name):
        errs.error(f"{path}.name", f'Invalid value: "{c.name}": {K8S_LABEL_MESSAGE}')
    if not c.image.strip():
        errs.error(f"{path}.image", "Required value")
    port_names: set[str] = set()
    for i, p in enumerate(c.ports):
        ppath = f"{path}.ports[{i}]"
        if p.name:
            if err := iana_svc_name_error(p.name):
                errs.error(f"{ppath}.name", f'Invalid value: "{p.name}": {err}')
            elif p.name in port_names:
                errs.error(f"{ppath}.name", f'Duplicate value: "{p.name}"')
            port_names.add(p.name)
        check_port_number(errs, f"{ppath}.containerPort", p.container_port)
        if p.host_port:
            check_port_number(errs, f"{ppath}.hostPort", p.host_port)
        check_protocol(errs, f"{ppath}.protocol", p.protocol)
    for i, env in enumerate(c.env):
        if not env.name:
            errs.error(f"{path}.env[{i}].name", "Required value")
    for field, probe in (
        ("readinessProbe", c.readiness_probe),
        ("livenessProbe", c.liveness_probe),
        ("startupProbe", c.startup_probe),
    ):
        if probe is not None:
            _check_probe(errs, f"{path}.{field}", probe)
    if c.security_context is not None:
        _check_security_context(errs, f"{path}.securityContext", c.security_context)
    for i, m in enumerate(c.volume_mounts):
        if not m.name:
            errs.error(f"{path}.volumeMounts[{i}].name", "Required value")
        if not m.mount_path:
            errs.error(f"{path}.volumeMounts[{i}].mountPath", "Required value")


def check_pod_spec(
    errs: FieldErrors, path: str, spec: kube.PodSpec, *, template: bool = False
) -> None:
    """A pod spec, standalone or as a workload's template (which must restart Always)."""
    if not spec.containers:
        errs.error(f"{path}.containers", "Required value")
    names: set[str] = set()
    for field, containers in (
        ("initContainers", spec.init_containers),
        ("containers", spec.containers),
    ):
        for i, c in enumerate(containers):
            cpath = f"{path}.{field}[{i}]"
            _check_container(errs, cpath, c)
            if c.name and c.name in names:
                errs.error(f"{cpath}.name", f'Duplicate value: "{c.name}"')
            names.add(c.name)
    volumes: set[str] = set()
    for i, v in enumerate(spec.volumes):
        vpath = f"{path}.volumes[{i}].name"
        if not v.name:
            errs.error(vpath, "Required value")
        elif not is_k8s_label_name(v.name):
            errs.error(vpath, f'Invalid value: "{v.name}": {K8S_LABEL_MESSAGE}')
        elif v.name in volumes:
            errs.error(vpath, f'Duplicate value: "{v.name}"')
        volumes.add(v.name)
    sa = spec.service_account_name
    if sa and not is_k8s_subdomain(sa):
        errs.error(f"{path}.serviceAccountName", f'Invalid value: "{sa}": {K8S_SUBDOMAIN_MESSAGE}')
    policy = spec.restart_policy
    if template and policy and policy != "Always":
        errs.error(f"{path}.restartPolicy", supported(policy, ("Always",)))
    elif policy and policy not in RESTART_POLICIES:
        errs.error(f"{path}.restartPolicy", supported(policy, RESTART_POLICIES))
    if spec.security_context is not None:
        _check_security_context(errs, f"{path}.securityContext", spec.security_context)


@validates("", "Pod")
def validate_pod(res: Resource, errs: FieldErrors) -> None:
    check_pod_spec(errs, "spec", res.spec)


def selector_matches(selector: kube.LabelSelector, labels: dict[str, str]) -> bool:
    """Whether a label selector selects these labels (Kubernetes semantics)."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for expr in selector.match_expressions:
        present = expr.key in labels
        value = labels.get(expr.key)
        ok = {
            "In": present and value in expr.values,
            "NotIn": not present or value not in expr.values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(expr.operator, False)
        if not ok:
            return False
    return True


SELECTOR_OPERATORS = ("DoesNotExist", "Exists", "In", "NotIn")


def check_label_selector(errs: FieldErrors, path: str, selector: kube.LabelSelector) -> None:
    for i, expr in enumerate(selector.match_expressions):
        epath = f"{path}.matchExpressions[{i}]"
        if expr.operator not in SELECTOR_OPERATORS:
            errs.error(
                f"{epath}.operator",
                f'Invalid value: "{expr.operator}": not a valid selector operator',
            )
        elif expr.operator in ("In", "NotIn") and not expr.values:
            errs.error(
                f"{epath}.values",
                "Required value: must be specified when `operator` is 'In' or 'NotIn'",
            )
        elif expr.operator in ("Exists", "DoesNotExist") and expr.values:
            errs.error(
                f"{epath}.values",
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )


@validates("apps", "Deployment")
def validate_deployment(res: Resource, errs: FieldErrors) -> None:
    spec: kube.DeploymentSpec = res.spec
    if spec.replicas is not None and spec.replicas < 0:
        errs.error(
            "spec.replicas", f"Invalid value: {spec.replicas}: must be greater than or equal to 0"
        )
    selector = spec.selector
    if selector is None:
        errs.error("spec.selector", "Required value")
    elif not selector.match_labels and not selector.match_expressions:
        errs.error("spec.selector", "Invalid value: {}: empty selector is invalid for deployment")
    else:
        before = len(errs.errors)
        check_label_selector(errs, "spec.selector", selector)
        valid = len(errs.errors) == before  # an invalid selector selects nothing to compare
        if valid and not selector_matches(selector, spec.template.metadata.labels):
            errs.error(
                "spec.template.metadata.labels",
                "Invalid value: `selector` does not match template `labels`",
            )
    check_pod_spec(errs, "spec.template.spec", spec.template.spec, template=True)


# --- Secret, ConfigMap ------------------------------------------------------------------------

# Secret types whose data must hold these keys.
_REQUIRED_SECRET_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/basic-auth": (),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
}


def _check_config_keys(errs: FieldErrors, field: str, keys: Iterable[str]) -> None:
    for key in keys:
        if not _CONFIG_KEY.match(key) or len(key) > 253:
            errs.error(f"{field}[{key}]", f'Invalid value: "{key}": {CONFIG_KEY_MESSAGE}')
        elif key in (".", ".."):
            errs.error(f"{field}[{key}]", f"Invalid value: \"{key}\": must not be '{key}'")


@validates("", "Secret")
def validate_secret(res: Resource, errs: FieldErrors) -> None:
    secret: kube.Secret = res.obj  # type: ignore[assignment]
    _check_config_keys(errs, "data", secret.data)
    _check_config_keys(errs, "stringData", secret.string_data)
    for key, value in secret.data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            errs.error(f"data[{key}]", f'Invalid value: "<secret contents redacted>": {exc}')
    keys = set(secret.data) | set(secret.string_data)
    for key in _REQUIRED_SECRET_KEYS.get(secret.type, ()):
        if key not in keys:
            errs.error(f"data[{key}]", "Required value")


@validates("", "ConfigMap")
def validate_config_map(res: Resource, errs: FieldErrors) -> None:
    cm: kube.ConfigMap = res.obj  # type: ignore[assignment]
    _check_config_keys(errs, "data", cm.data)
    _check_config_keys(errs, "binaryData", cm.binary_data)
    for key in cm.binary_data:
        if key in cm.data:
            errs.error(f"data[{key}]", f'Duplicate value: "{key}"')
    name = res.metadata.name
    if name == "istio" or name.startswith("istio-"):
        _check_mesh_config_map(cm, errs)


def _check_mesh_config_map(cm: kube.ConfigMap, errs: FieldErrors) -> None:
    """istiod's mesh ConfigMap: what istiod would refuse to load is a warning here, since the
    API server itself accepts any text."""
    from pistio.api.mesh import load_mesh_config, load_mesh_networks

    for key, load in (("mesh", load_mesh_config), ("meshNetworks", load_mesh_networks)):
        text = cm.data.get(key)
        if text is None:
            continue
        _, issues = load(text)
        for issue in issues:
            if issue.level == "error":
                errs.warn(f"data.{key}", issue.reason)


# --- Admission webhooks -----------------------------------------------------------------------

FAILURE_POLICIES = ("Fail", "Ignore")
SIDE_EFFECTS = ("None", "NoneOnDryRun")
REVIEW_VERSIONS = ("v1", "v1beta1")


def _check_client_config(errs: FieldErrors, path: str, cc: kube.WebhookClientConfig | None) -> None:
    if cc is None or (cc.url is None) == (cc.service is None):
        errs.error(path, "Required value: exactly one of url or service is required")
        return
    if cc.url is not None:
        url = urlparse(cc.url)
        if url.scheme != "https":
            errs.error(
                f"{path}.url",
                f"Invalid value: \"{cc.url}\": 'https' is the only allowed URL scheme",
            )
        elif not url.hostname:
            errs.error(f"{path}.url", f'Invalid value: "{cc.url}": host must be specified')
        elif url.fragment:
            errs.error(
                f"{path}.url", f'Invalid value: "{cc.url}": fragments are not permitted in the URL'
            )
        return
    svc = cc.service
    assert svc is not None
    if not svc.name:
        errs.error(f"{path}.service.name", "Required value: service name is required")
    if not svc.namespace:
        errs.error(f"{path}.service.namespace", "Required value: service namespace is required")
    if svc.path is not None and not svc.path.startswith("/"):
        errs.error(f"{path}.service.path", f"Invalid value: \"{svc.path}\": must start with a '/'")
    if svc.port is not None and not 1 <= svc.port <= 65535:
        errs.error(
            f"{path}.service.port", f"Invalid value: {svc.port}: port is not valid: {PORT_RANGE}"
        )


def _check_webhooks(errs: FieldErrors, webhooks: list[kube.Webhook], mutating: bool) -> None:
    names: set[str] = set()
    for i, hook in enumerate(webhooks):
        path = f"webhooks[{i}]"
        if not hook.name:
            errs.error(f"{path}.name", "Required value")
        elif hook.name in names:
            errs.error(f"{path}.name", f'Duplicate value: "{hook.name}"')
        elif hook.name.count(".") < 2 or not is_k8s_subdomain(hook.name):
            errs.error(
                f"{path}.name",
                f'Invalid value: "{hook.name}": should be a domain with at least three segments '
                "separated by dots",
            )
        names.add(hook.name)
        _check_client_config(errs, f"{path}.clientConfig", hook.client_config)
        if hook.side_effects is None:
            errs.error(
                f"{path}.sideEffects", 'Required value: must specify one of "None", "NoneOnDryRun"'
            )
        elif hook.side_effects not in SIDE_EFFECTS:
            errs.error(f"{path}.sideEffects", supported(hook.side_effects, SIDE_EFFECTS))
        if not hook.admission_review_versions:
            errs.error(
                f"{path}.admissionReviewVersions", "Required value: must specify one of v1, v1beta1"
            )
        elif not any(v in REVIEW_VERSIONS for v in hook.admission_review_versions):
            errs.error(
                f"{path}.admissionReviewVersions",
                f"Invalid value: {hook.admission_review_versions}: must include at least one of v1, v1beta1",
            )
        if hook.failure_policy is not None and hook.failure_policy not in FAILURE_POLICIES:
            errs.error(f"{path}.failurePolicy", supported(hook.failure_policy, FAILURE_POLICIES))
        if hook.match_policy is not None and hook.match_policy not in ("Equivalent", "Exact"):
            errs.error(f"{path}.matchPolicy", supported(hook.match_policy, ("Equivalent", "Exact")))
        if hook.timeout_seconds is not None and not 1 <= hook.timeout_seconds <= 30:
            errs.error(
                f"{path}.timeoutSeconds",
                f"Invalid value: {hook.timeout_seconds}: the timeout value must be between 1 and 30 seconds",
            )
        policy = hook.reinvocation_policy
        if mutating and policy is not None and policy not in ("IfNeeded", "Never"):
            errs.error(f"{path}.reinvocationPolicy", supported(policy, ("IfNeeded", "Never")))
        for field, sel in (
            ("namespaceSelector", hook.namespace_selector),
            ("objectSelector", hook.object_selector),
        ):
            if sel is not None:
                check_label_selector(errs, f"{path}.{field}", sel)


@validates("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
def validate_mutating_webhooks(res: Resource, errs: FieldErrors) -> None:
    _check_webhooks(errs, res.obj.webhooks, mutating=True)  # type: ignore[attr-defined]


@validates("admissionregistration.k8s.io", "ValidatingWebhookConfiguration")
def validate_validating_webhooks(res: Resource, errs: FieldErrors) -> None:
    _check_webhooks(errs, res.obj.webhooks, mutating=False)  # type: ignore[attr-defined]


# --- CustomResourceDefinition -----------------------------------------------------------------


@validates("apiextensions.k8s.io", "CustomResourceDefinition")
def validate_crd(res: Resource, errs: FieldErrors) -> None:
    spec: kube.CustomResourceDefinitionSpec = res.spec
    if not spec.group:
        errs.error("spec.group", "Required value")
    elif spec.group.count(".") < 1 or not is_k8s_subdomain(spec.group):
        errs.error(
            "spec.group", f'Invalid value: "{spec.group}": should be a domain with at least one dot'
        )
    if not spec.names.plural:
        errs.error("spec.names.plural", "Required value")
    if not spec.names.kind:
        errs.error("spec.names.kind", "Required value")
    if not spec.scope:
        errs.error("spec.scope", "Required value")
    elif spec.scope not in ("Cluster", "Namespaced"):
        errs.error("spec.scope", supported(spec.scope, ("Cluster", "Namespaced")))
    if spec.group and spec.names.plural:
        expected = f"{spec.names.plural}.{spec.group}"
        if res.metadata.name != expected:
            errs.error(
                "metadata.name",
                f'Invalid value: "{res.metadata.name}": must be spec.names.plural+"."+spec.group',
            )
    if not spec.versions:
        errs.error(
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        )
        return
    storage = [v for v in spec.versions if v.storage]
    if len(storage) != 1:
        errs.error(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        )
    seen: set[str] = set()
    for i, v in enumerate(spec.versions):
        if not v.name:
            errs.error(f"spec.versions[{i}].name", "Required value")
        elif v.name in seen:
            errs.error(f"spec.versions[{i}].name", f'Duplicate value: "{v.name}"')
        seen.add(v.name)


# --- Ingress ----------------------------------------------------------------------------------

PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")


def _check_ingress_backend(errs: FieldErrors, path: str, backend: kube.IngressBackend) -> None:
    if (backend.service is None) == (backend.resource is None):
        errs.error(path, "Invalid value: one backend (`service` or `resource`) must be specified")
        return
    svc = backend.service
    if svc is None:
        return
    if not svc.name:
        errs.error(f"{path}.service.name", "Required value")
    port = svc.port
    if port is None or (not port.name and not port.number):
        errs.error(f"{path}.service.port", "Invalid value: port name or number is required")
    elif port.name and port.number:
        errs.error(f"{path}.service.port", "Invalid value: cannot set both port name & port number")
    elif port.number:
        check_port_number(errs, f"{path}.service.port.number", port.number)


@validates("networking.k8s.io", "Ingress")
def validate_ingress(res: Resource, errs: FieldErrors) -> None:
    spec: kube.IngressSpec = res.spec
    if spec.default_backend is None and not spec.rules:
        errs.error("spec", "Invalid value: either `defaultBackend` or `rules` must be specified")
    if spec.default_backend is not None:
        _check_ingress_backend(errs, "spec.defaultBackend", spec.default_backend)
    for i, rule in enumerate(spec.rules):
        path = f"spec.rules[{i}]"
        host = rule.host
        if host and not is_k8s_subdomain(host.removeprefix("*.")):
            errs.error(f"{path}.host", f'Invalid value: "{host}": {K8S_SUBDOMAIN_MESSAGE}')
        if rule.http is None:
            continue
        if not rule.http.paths:
            errs.error(f"{path}.http.paths", "Required value")
        for j, p in enumerate(rule.http.paths):
            ppath = f"{path}.http.paths[{j}]"
            if not p.path_type:
                errs.error(f"{ppath}.pathType", "Required value: pathType must be specified")
            elif p.path_type not in PATH_TYPES:
                errs.error(f"{ppath}.pathType", supported(p.path_type, PATH_TYPES))
            elif p.path_type in ("Exact", "Prefix") and not p.path.startswith("/"):
                errs.error(f"{ppath}.path", f'Invalid value: "{p.path}": must be an absolute path')
            _check_ingress_backend(errs, f"{ppath}.backend", p.backend)
