"""protoc-gen-validate rules of Envoy's protos, checked on generated messages.

Envoy rejects config that violates the ``validate.rules`` annotations of its protos
(required oneofs and messages, ``min_items``, string lengths, number ranges, enums);
``xds-protos`` carries those annotations as descriptor options. :func:`validate_message`
walks a message, following ``google.protobuf.Any`` into the types it packs, and returns
every violation as ``path: rule`` (empty when valid). Used by the tests on everything the
security builders emit.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

from google.protobuf import any_pb2, descriptor, message, symbol_database
from validate import validate_pb2

_db = symbol_database.Default()


def _rules(fd: descriptor.FieldDescriptor) -> validate_pb2.FieldRules | None:
    opts = fd.GetOptions()
    if opts.HasExtension(validate_pb2.rules):
        return opts.Extensions[validate_pb2.rules]
    return None


def _unpack(msg: any_pb2.Any) -> message.Message | None:
    name = msg.type_url.rsplit("/", 1)[-1]
    try:
        cls = _db.GetSymbol(name)
    except KeyError:
        _import_package_of(name)
        try:
            cls = _db.GetSymbol(name)
        except KeyError:
            return None
    inner = cls()
    msg.Unpack(inner)
    return inner


def _import_package_of(full_name: str) -> None:
    """Import every ``*_pb2`` module of the message's proto package (xds-protos lays
    packages out as Python packages), registering its types."""
    package = full_name.rsplit(".", 1)[0]
    try:
        mod = importlib.import_module(package)
    except ImportError:
        return
    for info in pkgutil.iter_modules(getattr(mod, "__path__", [])):
        if info.name.endswith("_pb2"):
            with contextlib.suppress(ImportError):
                importlib.import_module(f"{package}.{info.name}")


def _check_scalar(
    path: str, value: object, rules: validate_pb2.FieldRules, errors: list[str]
) -> None:
    kind = rules.WhichOneof("type")
    if kind is None:
        return
    r = getattr(rules, kind)
    if kind == "string":
        s = str(value)
        if r.HasField("min_len") and len(s) < r.min_len:
            errors.append(f"{path}: length must be at least {r.min_len}")
        if r.HasField("max_len") and len(s) > r.max_len:
            errors.append(f"{path}: length must be at most {r.max_len}")
        if r.HasField("min_bytes") and len(s.encode()) < r.min_bytes:
            errors.append(f"{path}: must be at least {r.min_bytes} bytes")
        if r.HasField("prefix") and not s.startswith(r.prefix):
            errors.append(f"{path}: must start with {r.prefix!r}")
        if (
            r.HasField("well_known_regex")
            and r.well_known_regex
            and ("\0" in s or "\r" in s or "\n" in s)
        ):
            errors.append(f"{path}: invalid header characters")
    elif kind in ("uint32", "uint64", "int32", "int64", "double", "float"):
        n = value
        for bound, op, text in (
            ("gt", lambda a, b: a > b, ">"),
            ("gte", lambda a, b: a >= b, ">="),
            ("lt", lambda a, b: a < b, "<"),
            ("lte", lambda a, b: a <= b, "<="),
        ):
            if r.HasField(bound) and not op(n, getattr(r, bound)):
                errors.append(f"{path}: must be {text} {getattr(r, bound)}")


def validate_message(msg: message.Message, path: str = "") -> list[str]:
    """Every PGV violation in ``msg`` (recursively), as ``field.path: message``."""
    errors: list[str] = []
    _validate(msg, path or msg.DESCRIPTOR.name, errors)
    return errors


def _validate(msg: message.Message, path: str, errors: list[str]) -> None:
    if isinstance(msg, any_pb2.Any):
        inner = _unpack(msg)
        if inner is None:
            errors.append(f"{path}: unknown type {msg.type_url}")
        else:
            _validate(inner, f"{path}<{inner.DESCRIPTOR.name}>", errors)
        return
    desc = msg.DESCRIPTOR
    for oneof in desc.oneofs:
        opts = oneof.GetOptions()
        required = (
            opts.HasExtension(validate_pb2.required) and opts.Extensions[validate_pb2.required]
        )
        if required and msg.WhichOneof(oneof.name) is None:
            errors.append(f"{path}: one of {oneof.name} is required")
    for fd in desc.fields:
        rules = _rules(fd)
        fpath = f"{path}.{fd.name}"
        repeated = fd.is_repeated
        if repeated:
            values = getattr(msg, fd.name)
            is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
            if rules is not None:
                kind = rules.WhichOneof("type")
                if (
                    kind == "repeated"
                    and rules.repeated.min_items
                    and len(values) < rules.repeated.min_items
                ):
                    errors.append(f"{fpath}: must have at least {rules.repeated.min_items} item(s)")
                if kind == "map" and rules.map.min_pairs and len(values) < rules.map.min_pairs:
                    errors.append(f"{fpath}: must have at least {rules.map.min_pairs} pair(s)")
            if is_map:
                value_fd = fd.message_type.fields_by_name["value"]
                if value_fd.message_type is not None:
                    for k, v in values.items():
                        _validate(v, f"{fpath}[{k}]", errors)
                continue
            item_rules = (
                rules.repeated.items if rules is not None and rules.HasField("repeated") else None
            )
            for i, v in enumerate(values):
                if fd.message_type is not None:
                    _validate(v, f"{fpath}[{i}]", errors)
                elif item_rules is not None:
                    _check_scalar(f"{fpath}[{i}]", v, item_rules, errors)
            continue
        in_other_oneof = (
            fd.containing_oneof is not None and msg.WhichOneof(fd.containing_oneof.name) != fd.name
        )
        if fd.message_type is not None:
            present = msg.HasField(fd.name)
            if in_other_oneof:
                continue
            if (
                rules is not None
                and rules.HasField("message")
                and rules.message.required
                and not present
            ):
                errors.append(f"{fpath}: is required")
            if present:
                value = getattr(msg, fd.name)
                _validate(value, fpath, errors)
                _check_wrapped(fpath, value, rules, errors)
            continue
        if in_other_oneof:
            continue
        value = getattr(msg, fd.name)
        if fd.enum_type is not None:
            defined_only = rules is not None and rules.HasField("enum") and rules.enum.defined_only
            if defined_only and value not in fd.enum_type.values_by_number:
                errors.append(f"{fpath}: undefined enum value {value}")
            continue
        if rules is not None:
            _check_scalar(fpath, value, rules, errors)


def _check_wrapped(
    path: str, value: message.Message, rules: validate_pb2.FieldRules | None, errors: list[str]
) -> None:
    """Rules on wrapper types (UInt32Value with ``uint32: {lte: ...}``) and durations."""
    if rules is None:
        return
    kind = rules.WhichOneof("type")
    if kind in ("uint32", "uint64", "int32", "int64", "double", "float") and hasattr(
        value, "value"
    ):
        _check_scalar(path, value.value, rules, errors)
    elif kind == "duration":
        r = rules.duration
        total = value.seconds + value.nanos / 1e9
        if r.HasField("gt") and not total > r.gt.seconds + r.gt.nanos / 1e9:
            errors.append(f"{path}: must be greater than {r.gt.seconds}s")
        if r.HasField("gte") and not total >= r.gte.seconds + r.gte.nanos / 1e9:
            errors.append(f"{path}: must be at least {r.gte.seconds}s")
