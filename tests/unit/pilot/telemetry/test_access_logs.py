"""Access logs on connection managers and TCP proxies: the legacy mesh fields and the
Telemetry API (providers, modes, disabled, CEL filters)."""

from __future__ import annotations

from google.protobuf import json_format

from pistio.pilot.telemetry import resolver
from pistio.proxy.access_log.istio_formats import ISTIO_JSON_FORMAT, ISTIO_TEXT_FORMAT
from pistio.xds.any_codec import unpack
from tests.unit.pilot.telemetry.helpers import (
    inbound_hcm,
    outbound_hcm,
    push_with,
    tcp_chain_filters,
    telemetry,
)


def file_logs(entries) -> list[dict]:
    """Each entry as ``{path, text | json, filter}`` (the filter's CEL expression or None)."""
    out = []
    for entry in entries:
        assert entry.name == "envoy.access_loggers.file"
        config = unpack(entry.typed_config)
        fmt = config.log_format
        item: dict = {"path": config.path}
        if fmt.HasField("json_format"):
            item["json"] = json_format.MessageToDict(fmt.json_format)
        else:
            item["text"] = fmt.text_format_source.inline_string
        item["filter"] = None
        if entry.HasField("filter"):
            ext = entry.filter.extension_filter
            assert ext.name == "envoy.access_loggers.extension_filters.cel"
            item["filter"] = unpack(ext.typed_config).expression
        out.append(item)
    return out


def tcp_logs(push) -> list[dict]:
    *_, tcp = tcp_chain_filters(push)
    return file_logs(unpack(tcp.typed_config).access_log)


def test_no_access_log_by_default() -> None:
    push = push_with()
    assert not outbound_hcm(push).access_log and not inbound_hcm(push).access_log
    assert tcp_logs(push) == []


def test_mesh_access_log_file_text_default_format() -> None:
    push = push_with(mesh_yaml="accessLogFile: /dev/stdout\n")
    expected = [{"path": "/dev/stdout", "text": ISTIO_TEXT_FORMAT, "filter": None}]
    assert file_logs(outbound_hcm(push).access_log) == expected
    assert file_logs(inbound_hcm(push).access_log) == expected
    assert tcp_logs(push) == expected


def test_mesh_access_log_custom_text_gets_a_newline() -> None:
    push = push_with(mesh_yaml="accessLogFile: /tmp/a.log\n"
                               'accessLogFormat: "%RESPONSE_CODE% %REQ(:PATH)%"\n')
    assert file_logs(outbound_hcm(push).access_log) == [
        {"path": "/tmp/a.log", "text": "%RESPONSE_CODE% %REQ(:PATH)%\n", "filter": None}
    ]


def test_mesh_json_encoding() -> None:
    push = push_with(mesh_yaml="accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n")
    assert file_logs(outbound_hcm(push).access_log) == [
        {"path": "/dev/stdout", "json": ISTIO_JSON_FORMAT, "filter": None}
    ]
    custom = push_with(
        mesh_yaml="accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n"
        'accessLogFormat: \'{"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"}\'\n'
    )
    assert file_logs(outbound_hcm(custom).access_log) == [
        {"path": "/dev/stdout", "json": {"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"},
         "filter": None}
    ]


ERRORS_ONLY = """  accessLogging:
  - providers: [{name: envoy}]
    filter:
      expression: response.code >= 400
"""


def test_telemetry_provider_with_filter_expression() -> None:
    push = push_with(telemetry("logs", "istio-system", ERRORS_ONLY))
    expected = [{"path": "/dev/stdout", "text": ISTIO_TEXT_FORMAT,
                 "filter": "response.code >= 400"}]
    assert file_logs(outbound_hcm(push).access_log) == expected
    assert file_logs(inbound_hcm(push).access_log) == expected
    assert tcp_logs(push) == expected


def test_telemetry_replaces_the_legacy_mesh_fields() -> None:
    push = push_with(telemetry("logs", "default", ERRORS_ONLY),
                     mesh_yaml="accessLogFile: /tmp/legacy.log\n")
    assert [e["path"] for e in file_logs(outbound_hcm(push).access_log)] == ["/dev/stdout"]


def test_mode_and_disabled_per_level() -> None:
    push = push_with(
        telemetry("logs", "istio-system", ERRORS_ONLY)
        + telemetry("ns", "default", "  accessLogging:\n  - match: {mode: CLIENT}\n"
                    "    disabled: true\n")
    )
    assert outbound_hcm(push).access_log == []  # client side disabled by the namespace
    assert [e["filter"] for e in file_logs(inbound_hcm(push).access_log)] == [
        "response.code >= 400"
    ]


def test_default_provider_and_provider_formats() -> None:
    mesh = """defaultProviders: {accessLogging: [json-file]}
extensionProviders:
- name: json-file
  envoyFileAccessLog:
    path: /tmp/access.json
    logFormat:
      labels: {code: "%RESPONSE_CODE%", peer: "%DOWNSTREAM_PEER_URI_SAN%"}
- name: text-file
  envoyFileAccessLog:
    path: /tmp/access.txt
    logFormat: {text: "%RESPONSE_CODE%"}
"""
    push = push_with(mesh_yaml=mesh)
    assert file_logs(outbound_hcm(push).access_log) == [
        {"path": "/tmp/access.json",
         "json": {"code": "%RESPONSE_CODE%", "peer": "%DOWNSTREAM_PEER_URI_SAN%"},
         "filter": None}
    ]
    both = push_with(
        telemetry("two", "default", "  accessLogging:\n  - providers: [{name: text-file}, "
                  "{name: json-file}]\n"),
        mesh_yaml=mesh,
    )
    # Istio orders entries by provider name.
    assert file_logs(outbound_hcm(both).access_log) == [
        {"path": "/tmp/access.json",
         "json": {"code": "%RESPONSE_CODE%", "peer": "%DOWNSTREAM_PEER_URI_SAN%"},
         "filter": None},
        {"path": "/tmp/access.txt", "text": "%RESPONSE_CODE%\n", "filter": None},
    ]


def test_unsupported_or_unknown_providers_write_nothing(caplog) -> None:
    resolver._warned.clear()  # reported once per process
    mesh = """extensionProviders:
- name: als
  envoyHttpAls: {service: als.default.svc.cluster.local, port: 9000}
"""
    push = push_with(
        telemetry("logs", "default",
                  "  accessLogging:\n  - providers: [{name: als}, {name: missing}]\n"),
        mesh_yaml=mesh,
    )
    assert outbound_hcm(push).access_log == []
    messages = " ".join(r.message for r in caplog.records)
    assert "'als' (envoy_http_als) is not supported by pistio" in messages
    assert "'missing' is not defined" in messages


def test_an_invalid_filter_expression_is_rejected_with_the_parser_message() -> None:
    from pistio.config.loader import read_text
    from pistio.config.validation import check_document

    text = telemetry("bad", "default", "  accessLogging:\n  - providers: [{name: envoy}]\n"
                     "    filter: {expression: 'response.code >>= 400'}\n")
    (doc,), _ = read_text(text.rstrip("-\n") + "\n", "bad.yaml")
    checked = check_document(doc)
    assert checked.resource is None
    (issue,) = [i for i in checked.issues if i.level == "error"]
    assert issue.path == "spec.accessLogging[0].filter.expression"
    assert "must be a valid CEL expression" in issue.reason
    assert "syntax error at line 1, column 16" in issue.reason


def listener_filters_of(push, name: str) -> list[dict]:
    from tests.unit.pilot.telemetry.helpers import listeners

    return [json_format.MessageToDict(e.filter) for e in listeners(push)[name].access_log]


def test_listeners_log_connections_no_chain_took() -> None:
    assert listener_filters_of(push_with(), "virtualOutbound") == []
    push = push_with(mesh_yaml="accessLogFile: /dev/stdout\n")
    nr = {"responseFlagFilter": {"flags": ["NR"]}}
    for name in ("virtualOutbound", "virtualInbound", "0.0.0.0_9080", "10.96.0.20_3306"):
        assert listener_filters_of(push, name) == [nr], name
    cel = push_with(telemetry("logs", "istio-system", ERRORS_ONLY))
    assert listener_filters_of(cel, "virtualInbound") == [{"andFilter": {"filters": [
        nr,
        {"extensionFilter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typedConfig": {
                "@type": "type.googleapis.com/"
                         "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": "response.code >= 400",
            },
        }},
    ]}}]
    off = push_with(mesh_yaml="accessLogFile: /dev/stdout\ndisableEnvoyListenerLog: true\n")
    assert listener_filters_of(off, "virtualOutbound") == []
    assert outbound_hcm(off).access_log  # connection managers still log
