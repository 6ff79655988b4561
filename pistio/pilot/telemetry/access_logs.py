"""Access logs of connection managers and TCP proxies (Istio's ``AccessLogBuilder``,
``mergeLogs`` and ``telemetry_logging.go``).

With no Telemetry ``accessLogging`` in scope and no ``defaultProviders.accessLogging``, the
legacy mesh fields decide: ``accessLogFile`` (none when empty), ``accessLogEncoding`` (TEXT or
JSON) and ``accessLogFormat`` (Istio's default format when empty). Otherwise each provider in
scope that is not disabled for this side (CLIENT = outbound, SERVER = inbound) gives an entry:
``envoyFileAccessLog`` writes to its ``path`` (``/dev/stdout`` by default) in its text or JSON
``labels`` format, and a Telemetry ``filter.expression`` becomes Envoy's CEL extension filter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from google.protobuf import struct_pb2

from pistio.api.mesh import EnvoyFileAccessLogProvider, MeshConfig
from pistio.api.telemetry import AccessLogging
from pistio.pilot.model.proxy import Proxy
from pistio.pilot.model.push_context import PushContext
from pistio.pilot.telemetry.providers import default_providers, fetch_provider
from pistio.pilot.telemetry.resolver import applicable_telemetry, memo, warn_once
from pistio.proxy.access_log.istio_formats import ISTIO_JSON_FORMAT, ISTIO_TEXT_FORMAT
from pistio.xds.any_codec import pack

FILE_ACCESS_LOG = "envoy.access_loggers.file"
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
DEFAULT_PATH = "/dev/stdout"


@dataclass(frozen=True, slots=True)
class LoggingSpec:
    disabled: bool = False
    expression: str = ""  # a CEL filter; "" logs everything


def _mode_matches(logging: AccessLogging, inbound: bool) -> bool:
    mode = logging.match.mode if logging.match is not None else "CLIENT_AND_SERVER"
    return mode == "CLIENT_AND_SERVER" or mode == ("SERVER" if inbound else "CLIENT")


def merge_logs(
    groups: Sequence[Sequence[AccessLogging]], mesh: MeshConfig, inbound: bool
) -> dict[str, LoggingSpec]:
    """Provider name → how it logs this side (Istio's ``mergeLogs``): the lowest level naming
    providers decides which are in scope; ``disabled`` and ``filter`` apply level by level."""
    defaults = default_providers(mesh, "access_logging")
    if not groups:
        return {name: LoggingSpec() for name in defaults}
    in_scope = list(defaults)
    filters: dict[str, str] = {}
    for group in groups:
        names: list[str] = []
        for logging in group:
            if not _mode_matches(logging, inbound):
                continue
            for ref in logging.providers:
                names.append(ref.name)
                filters[ref.name] = logging.filter.expression if logging.filter else ""
        if names:
            in_scope = names
    scope = set(in_scope)
    out: dict[str, LoggingSpec] = {}
    parent = list(defaults)
    for group in groups:
        for logging in group:
            names = [p.name for p in logging.providers] or parent
            parent = names
            for name in names:
                if name not in scope or not _mode_matches(logging, inbound):
                    continue
                if logging.disabled:
                    out[name] = LoggingSpec(disabled=True)
                else:
                    out[name] = LoggingSpec(expression=filters.get(name, ""))
    return out


def _with_newline(text: str) -> str:
    """Istio ends every text format with a newline."""
    return text if text.endswith("\n") else text + "\n"


def _text_format(text: str, omit_empty: bool = False) -> sfs_pb2.SubstitutionFormatString:
    out = sfs_pb2.SubstitutionFormatString(omit_empty_values=omit_empty)
    out.text_format_source.inline_string = _with_newline(text) if text else ISTIO_TEXT_FORMAT
    return out


def _json_format(labels: dict[str, Any], omit_empty: bool = False) -> sfs_pb2.SubstitutionFormatString:
    body = struct_pb2.Struct()
    body.update(labels or ISTIO_JSON_FORMAT)
    return sfs_pb2.SubstitutionFormatString(json_format=body, omit_empty_values=omit_empty)


def _file_access_log(
    path: str, log_format: sfs_pb2.SubstitutionFormatString
) -> accesslog_pb2.AccessLog:
    config = file_pb2.FileAccessLog(path=path, log_format=log_format)
    return accesslog_pb2.AccessLog(name=FILE_ACCESS_LOG, typed_config=pack(config))


def mesh_file_access_log(mesh: MeshConfig) -> accesslog_pb2.AccessLog:
    """Istio's ``FileAccessLogFromMeshConfig``: ``accessLogFile`` in ``accessLogEncoding``."""
    if mesh.access_log_encoding == "JSON":
        labels: dict[str, Any] = {}
        if mesh.access_log_format:
            try:
                parsed = json.loads(mesh.access_log_format)
            except ValueError as exc:
                parsed = None
                reason = str(exc)
            else:
                reason = "not a JSON object"
            if isinstance(parsed, dict):
                labels = parsed
            else:
                warn_once(f"mesh config: accessLogFormat is not a valid JSON log format "
                          f"({reason}); Istio's default JSON format is used")
        return _file_access_log(mesh.access_log_file, _json_format(labels))
    return _file_access_log(mesh.access_log_file, _text_format(mesh.access_log_format))


def provider_file_access_log(provider: EnvoyFileAccessLogProvider) -> accesslog_pb2.AccessLog:
    """Istio's ``fileAccessLogFromTelemetry``: text, or JSON ``labels``, default text."""
    path = provider.path or DEFAULT_PATH
    fmt = provider.log_format
    if fmt is None:
        return _file_access_log(path, _text_format(""))
    if fmt.labels is not None:  # empty labels: Istio's default JSON format
        return _file_access_log(path, _json_format(dict(fmt.labels), fmt.omit_empty_values))
    return _file_access_log(path, _text_format(fmt.text or "", fmt.omit_empty_values))


def cel_filter(expression: str) -> accesslog_pb2.AccessLogFilter:
    """Envoy's CEL extension filter: log only when ``expression`` is true."""
    config = cel_pb2.ExpressionFilter(expression=expression)
    return accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(name=CEL_FILTER, typed_config=pack(config))
    )


def access_logs(ctx: PushContext, proxy: Proxy, inbound: bool) -> tuple[accesslog_pb2.AccessLog, ...]:
    """The ``access_log`` entries of a connection manager or TCP proxy on one side."""
    applied = applicable_telemetry(ctx, proxy)
    return memo(ctx, ("access_logs", applied.key, inbound),
                lambda: _build(ctx.mesh, applied.logging, inbound))


def _build(
    mesh: MeshConfig, groups: Sequence[Sequence[AccessLogging]], inbound: bool
) -> tuple[accesslog_pb2.AccessLog, ...]:
    if not groups and not default_providers(mesh, "access_logging"):
        # No Telemetry API configuration: the legacy mesh fields.
        if mesh.enable_envoy_access_log_service:
            warn_once("mesh config: enableEnvoyAccessLogService is not supported by pistio; "
                      "no gRPC access log service is configured")
        return (mesh_file_access_log(mesh),) if mesh.access_log_file else ()
    out: list[tuple[str, accesslog_pb2.AccessLog]] = []
    for name, spec in merge_logs(groups, mesh, inbound).items():
        if spec.disabled:
            continue
        provider = fetch_provider(mesh, name)
        if provider is None:
            warn_once(f"Telemetry: access log provider {name!r} is not defined in the mesh "
                      "config's extensionProviders; it is ignored")
            continue
        if provider.envoy_file_access_log is None:
            kinds = ", ".join(provider.provider_fields) or "no provider settings"
            warn_once(f"Telemetry: access log provider {name!r} ({kinds}) is not supported by "
                      "pistio; only envoyFileAccessLog providers write access logs")
            continue
        entry = provider_file_access_log(provider.envoy_file_access_log)
        if spec.expression:
            entry.filter.CopyFrom(cel_filter(spec.expression))
        out.append((provider.name, entry))
    out.sort(key=lambda item: item[0])  # Istio orders access logs by provider name
    return tuple(entry for _, entry in out)


def _no_route_filter() -> accesslog_pb2.AccessLogFilter:
    """Listener logs record only connections no filter chain took (``NR``), as Istio's."""
    out = accesslog_pb2.AccessLogFilter()
    out.response_flag_filter.flags.append("NR")
    return out


def listener_access_logs(
    ctx: PushContext, proxy: Proxy, inbound: bool
) -> tuple[accesslog_pb2.AccessLog, ...]:
    """A listener's own ``access_log`` (Istio's ``setListenerAccessLog``): the same loggers
    as its connection managers, for connections no filter chain matched; none with
    ``disableEnvoyListenerLog``."""
    if ctx.mesh.disable_envoy_listener_log:
        return ()
    applied = applicable_telemetry(ctx, proxy)

    def build() -> tuple[accesslog_pb2.AccessLog, ...]:
        out = []
        for entry in access_logs(ctx, proxy, inbound):
            listener_entry = accesslog_pb2.AccessLog()
            listener_entry.CopyFrom(entry)
            if entry.HasField("filter"):
                both = listener_entry.filter.and_filter.filters
                both.add().CopyFrom(_no_route_filter())
                both.add().CopyFrom(entry.filter)
            else:
                listener_entry.filter.CopyFrom(_no_route_filter())
            out.append(listener_entry)
        return tuple(out)

    return memo(ctx, ("listener_access_logs", applied.key, inbound), build)
