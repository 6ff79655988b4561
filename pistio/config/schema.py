"""Typing a document against its kind's model, with errors in kubectl's and Istio's words."""

from __future__ import annotations

from typing import Any

import pydantic

from pistio.api.registry import KindInfo, lookup
from pistio.config.issues import FieldErrors
from pistio.config.resource import Document, Resource

_TYPE_NAMES = {
    "string_type": "string",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "float_parsing": "number",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "dict_type": "object",
    "list_type": "array",
    "model_type": "object",
    "model_attributes_type": "object",
    "none_required": "null",
    "duration_type": "duration string",
}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _path_of(loc: tuple[Any, ...], data: Any) -> tuple[str, Any]:
    """Turn a pydantic location into a field path, skipping union and key markers.

    Returns the path and the input value found there.
    """
    path = ""
    cur = data
    for part in loc:
        if isinstance(part, int) and isinstance(cur, list) and 0 <= part < len(cur):
            path += f"[{part}]"
            cur = cur[part]
        elif isinstance(part, str) and isinstance(cur, dict) and part in cur:
            path = f"{path}.{part}" if path else part
            cur = cur[part]
        # anything else names a union member or a dict-key check: not a place in the input
    return path, cur


def _message(err: dict[str, Any], value: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"invalid value {value!r}: must be one of {expected}"
    if kind in _TYPE_NAMES:
        return f"invalid type: expected {_TYPE_NAMES[kind]}, got {json_type(value)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return err["msg"].replace("Input should be", "must be")
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")


def schema_errors(exc: pydantic.ValidationError, data: Any) -> list[tuple[str, str]]:
    """Field errors from a pydantic failure, one per field path (union branches merged)."""
    by_path: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            # The unknown key is the last location element; it exists in the input.
            parent, _ = _path_of(loc[:-1], data)
            key = loc[-1]
            path = f"{parent}.{key}" if parent else str(key)
            by_path.setdefault(path, []).append(f'unknown field "{key}"')
            continue
        path, value = _path_of(loc, data)
        if err["type"] == "missing":
            path = f"{path}.{loc[-1]}" if path else str(loc[-1])
        by_path.setdefault(path, []).append(_message(err, value))
    out: list[tuple[str, str]] = []
    for path, messages in by_path.items():
        types = [m.removeprefix("invalid type: expected ").split(", got ")[0] for m in messages
                 if m.startswith("invalid type: expected ")]
        if len(types) > 1 and len(types) == len(messages):
            got = messages[0].split(", got ")[1]
            out.append((path, f"invalid type: expected {' or '.join(dict.fromkeys(types))}, got {got}"))
        else:
            for m in dict.fromkeys(messages):
                out.append((path, m))
    return out


def kind_of(doc: Document) -> KindInfo:
    """The registered kind of a document; ValueError with the reason when there is none."""
    if not doc.api_version:
        raise ValueError("apiVersion is required")
    if not doc.kind:
        raise ValueError("kind is required")
    return lookup(doc.api_version, doc.kind)


def type_document(doc: Document, info: KindInfo, errs: FieldErrors) -> Resource | None:
    """Build the typed resource, or record why it cannot be typed and return None."""
    try:
        obj = info.model.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        for path, message in schema_errors(exc, doc.data):
            errs.error(path, message)
        return None
    return Resource(doc=doc, info=info, obj=obj)
