"""``/config_dump`` query parameters applied to the dump a provider produces.

The provider returns Envoy's ``envoy.admin.v3.ConfigDump`` as JSON text (``{"configs": [...]}``,
each config tagged with its ``@type``). Envoy's admin endpoint then narrows it:

- without ``include_eds``, ``EndpointsConfigDump`` is left out (endpoints are large);
- ``resource=<field>`` returns only the entries of that repeated field, gathered from every
  config that has it (``resource=dynamic_active_clusters``), each entry tagged with its own
  ``@type``;
- ``mask=<paths>`` keeps only the listed field paths (a FieldMask, comma separated, dotted) in
  each config, or in each resource entry when ``resource`` is given;
- ``name_regex=<re>`` keeps only resource entries whose name matches.

An unknown ``resource`` is a 404, as in Envoy.
"""

from __future__ import annotations

import json
import re
from typing import Any

ENDPOINTS_TYPE = "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
_TYPE_PREFIX = "type.googleapis.com/"


class ConfigDumpError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _element_type(config_type: str, field_name: str) -> str | None:
    """The full type of a repeated message field's elements, from the admin protos."""
    # Importing registers the admin descriptors in the default pool.
    import envoy.admin.v3.config_dump_pb2  # noqa: F401
    from google.protobuf import descriptor_pool

    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(
            config_type.removeprefix(_TYPE_PREFIX)
        )
    except KeyError:
        return None
    fd = descriptor.fields_by_name.get(field_name)
    if fd is None or fd.message_type is None:
        return None
    return _TYPE_PREFIX + fd.message_type.full_name


def _apply_mask(value: dict[str, Any], paths: list[list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "@type" in value:
        out["@type"] = value["@type"]
    for path in paths:
        src: Any = value
        for key in path:
            if not isinstance(src, dict) or key not in src:
                src = None
                break
            src = src[key]
        if src is None:
            continue
        dst = out
        for key in path[:-1]:
            dst = dst.setdefault(key, {})
        dst[path[-1]] = src
    return out


def _resource_name(entry: dict[str, Any]) -> str | None:
    # Dynamic entries wrap the resource (cluster, listener, route_config...); static ones too.
    for value in entry.values():
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return value["name"]
    name = entry.get("name")
    return name if isinstance(name, str) else None


def filter_config_dump(text: str, params: dict[str, str]) -> str:
    doc = json.loads(text)
    configs: list[dict[str, Any]] = doc.get("configs", [])
    if "include_eds" not in params:
        configs = [c for c in configs if c.get("@type") != ENDPOINTS_TYPE]
    mask = params.get("mask")
    paths = [p.split(".") for p in mask.split(",") if p] if mask else None
    name_regex = params.get("name_regex")
    try:
        name_re = re.compile(name_regex) if name_regex else None
    except re.error as exc:
        raise ConfigDumpError(400, f"Invalid name_regex: {exc}") from exc
    resource = params.get("resource")
    if resource:
        entries: list[dict[str, Any]] = []
        found = False
        for config in configs:
            items = config.get(resource)
            if items is None:
                if _element_type(config.get("@type", ""), resource) is not None:
                    found = True  # the field exists but is empty in this dump
                continue
            if not isinstance(items, list):
                raise ConfigDumpError(400, f"{resource} is not a repeated field")
            found = True
            element_type = _element_type(config.get("@type", ""), resource)
            for item in items:
                if name_re is not None and not name_re.search(_resource_name(item) or ""):
                    continue
                entry = {"@type": element_type, **item} if element_type else dict(item)
                entries.append(_apply_mask(entry, paths) if paths else entry)
        if not found:
            raise ConfigDumpError(404, f"{resource} not found in config dump")
        return json.dumps({"configs": entries}, indent=1)
    if paths:
        configs = [_apply_mask(c, paths) for c in configs]
    return json.dumps({"configs": configs}, indent=1)
