"""Validation rules for extensions kinds: WasmPlugin, as Istio's webhook checks it."""

from __future__ import annotations

import re

from pistio.api.extensions import TrafficSelector, VmConfig, WasmPlugin
from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource
from pistio.config.validation.registry import validates
from pistio.config.validation.security import check_dry_run_annotation, check_policy_scope

GROUP = "extensions.istio.io"

WASM_URL_SCHEMES = ("", "file", "http", "https", "oci")
_SHA256_CHARS = re.compile(r"^[a-f0-9]*$")


@validates(GROUP, "WasmPlugin")
def validate_wasm_plugin(res: Resource, errs: FieldErrors) -> None:
    spec: WasmPlugin = res.spec
    check_dry_run_annotation(res, errs)
    check_policy_scope(spec, errs)
    if err := check_wasm_url(spec.url):
        errs.error("spec.url", err)
    if spec.sha256:
        if len(spec.sha256) != 64:
            errs.error("spec.sha256", "sha256 field must be 64 characters long")
        elif not _SHA256_CHARS.match(spec.sha256):
            errs.error("spec.sha256", "sha256 field must match [a-f0-9]{64} pattern")
    if len(spec.image_pull_secret) > 253:
        errs.error(
            "spec.imagePullSecret", "imagePullSecret field must be less than 253 characters long"
        )
    if len(spec.plugin_name) > 256:
        errs.error("spec.pluginName", "pluginName field must be less than 255 characters long")
    if spec.vm_config is not None:
        _check_vm_config(spec.vm_config, errs)
    _check_match(spec.match, errs)


def _check_vm_config(vm: VmConfig, errs: FieldErrors) -> None:
    # Istio reports the first problem only.
    seen: set[str] = set()
    for k, env in enumerate(vm.env):
        path = f"spec.vmConfig.env[{k}]"
        if not env.name:
            errs.error(f"{path}.name", "spec.vmConfig.env invalid")
            return
        if len(env.name) > 256:
            errs.error(f"{path}.name", "env.name field must be less than 255 characters long")
            return
        if env.name in seen:
            errs.error(f"{path}.name", "duplicate env")
            return
        seen.add(env.name)
        if env.value_from != "INLINE" and env.value:
            errs.error(f"{path}.value", "value may only be set when valueFrom is INLINE")
            return


def _check_match(selectors: list[TrafficSelector], errs: FieldErrors) -> None:
    for i, selector in enumerate(selectors):
        for k, port in enumerate(selector.ports):
            if not 0 < port.number <= 65535:
                errs.error(
                    f"spec.match[{i}].ports[{k}].number",
                    f"spec.Match[{i}].Ports[{k}] is out of range: {port.number}",
                )
                return


# --- URLs as Go's net/url reads them -------------------------------------------------------------


def check_wasm_url(url: str) -> str | None:
    """A module URL: oci://, file://, http(s)://, a path, or a bare OCI reference (``ghcr.io/x:1``).

    Istio parses it with Go's ParseRequestURI, retrying with ``http://`` prepended, and then
    checks the scheme.
    """
    if not url:
        return "url field needs to be set"
    scheme, err = go_request_uri_scheme(url)
    if err is not None:
        scheme, retry_err = go_request_uri_scheme("http://" + url)
        if retry_err is not None:
            return f'failed to parse url: parse "{url}": {err}'
    if scheme not in WASM_URL_SCHEMES:
        return f"url contains unsupported scheme: {scheme}"
    return None


def _go_scheme(raw: str) -> tuple[str, str, str | None]:
    """Go's getScheme: (scheme, rest, error)."""
    for i, c in enumerate(raw):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and (c.isdigit() or c in "+-."):
            if i == 0:
                return "", raw, None
            continue
        if c == ":":
            if i == 0:
                return "", "", "missing protocol scheme"
            return raw[:i].lower(), raw[i + 1 :], None
        return "", raw, None
    return "", raw, None


# Characters Go's net/url accepts in a host name besides letters and digits.
_HOST_CHARS = set("-._~%!$&'()*+,;=:[]<>\"")


def go_request_uri_scheme(raw: str) -> tuple[str, str | None]:
    """The scheme Go's url.ParseRequestURI finds in ``raw``, or the reason it fails."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        return "", "net/url: invalid control character in URL"
    scheme, rest, err = _go_scheme(raw)
    if err is not None:
        return "", err
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        if scheme:
            return scheme, None  # an opaque URL such as "mailto:x"
        return "", "invalid URI for request"
    if scheme and rest.startswith("//"):
        authority = rest[2:].split("/", 1)[0]
        host = authority.rpartition("@")[2]
        if host.startswith("["):
            close = host.find("]")
            if close < 0:
                return "", "missing ']' in host"
            port = host[close + 1 :]
        else:
            port = host[host.rfind(":") :] if ":" in host else ""
            name = host[: len(host) - len(port)]
            # Bytes beyond ASCII pass (IDNs); ASCII punctuation outside the allowed set does not.
            bad = next(
                (c for c in name if c.isascii() and not c.isalnum() and c not in _HOST_CHARS), None
            )
            if bad is not None:
                return "", f'invalid character "{bad}" in host name'
        if port and not (port.startswith(":") and port[1:].isdigit() or port == ":"):
            return "", f'invalid port "{port}" after host'
    return scheme, None
