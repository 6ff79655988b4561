"""Find fields of an xDS message that pistio does not implement.

Envoy ignores nothing it is told; neither may we. Each compiler declares, per
proto message type, the fields it honours. Any other field that is *set* (as
reported by ``ListFields()``, so defaults and unset oneofs do not count) is a
reason to NACK, named by its path in the resource so the operator can find it.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

NOT_SUPPORTED = "field not supported by pistio"


def unsupported_fields(
    msg: Message, allowed: Mapping[str, frozenset[str]], path: str
) -> list[str]:
    """Return ``"<path>.<field>: field not supported by pistio"`` for every set field of
    ``msg`` (recursively) that is not in ``allowed[msg.DESCRIPTOR.full_name]``.

    ``path`` names ``msg`` itself. It may end with ``": "`` to make a resource label,
    e.g. ``"RouteConfiguration 9080: "`` gives
    ``RouteConfiguration 9080: virtual_hosts[2].routes[0].route.rate_limits: ...``;
    an empty ``path`` starts at the field names.

    Nested messages (singular, repeated or map values) are walked only when their
    own full name is a key of ``allowed``; otherwise their content is taken as a whole
    (the compiler handles it, e.g. ``google.protobuf.Duration``). A message type
    absent from ``allowed`` at the top level is not checked at all.
    """
    problems: list[str] = []
    _walk(msg, allowed, path, problems)
    return problems


def _walk(
    msg: Message, allowed: Mapping[str, frozenset[str]], path: str, problems: list[str]
) -> None:
    fields = allowed.get(msg.DESCRIPTOR.full_name)
    if fields is None:
        return
    for fd, value in msg.ListFields():
        name = fd.name
        if name not in fields:
            problems.append(f"{field_path(path, name)}: {NOT_SUPPORTED}")
            continue
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        sub_type = fd.message_type
        if _is_map(fd):
            value_fd = sub_type.fields_by_name["value"]
            if (
                value_fd.type == FieldDescriptor.TYPE_MESSAGE
                and value_fd.message_type.full_name in allowed
            ):
                for key, item in value.items():
                    _walk(item, allowed, f"{field_path(path, name)}[{key!r}]", problems)
            continue
        if sub_type.full_name not in allowed:
            continue
        if _is_repeated(fd):
            for i, item in enumerate(value):
                _walk(item, allowed, f"{field_path(path, name)}[{i}]", problems)
        else:
            _walk(value, allowed, field_path(path, name), problems)


def field_path(path: str, name: str) -> str:
    """``path.name``, or ``path + name`` when ``path`` is empty or ends with ``": "``."""
    if not path or path.endswith(": "):
        return path + name
    return f"{path}.{name}"


def _is_repeated(fd: FieldDescriptor) -> bool:
    # protobuf >= 5 exposes is_repeated; older releases only the label.
    is_repeated = getattr(fd, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return fd.label == FieldDescriptor.LABEL_REPEATED


def _is_map(fd: FieldDescriptor) -> bool:
    return (
        fd.type == FieldDescriptor.TYPE_MESSAGE
        and fd.message_type.GetOptions().map_entry
        and _is_repeated(fd)
    )
