"""Analysis messages as istioctl prints them: code, level, origin, reference, text, doc URL."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pistio.config.analysis.catalogue import CATALOGUE

LEVELS = ("Info", "Warning", "Error")
DOC_URL = "https://istio.io/latest/docs/reference/config/analysis/{code}/"


def level_rank(level: str) -> int:
    """Info < Warning < Error; unknown names rank as Info."""
    for i, name in enumerate(LEVELS):
        if name.lower() == level.lower():
            return i
    return 0


@dataclass(frozen=True)
class MessageType:
    """One entry of Istio's message catalogue."""

    name: str
    code: str
    level: str
    template: str
    description: str
    args: tuple[str, ...]

    @property
    def doc_url(self) -> str:
        return DOC_URL.format(code=self.code.lower())


TYPES: dict[str, MessageType] = {
    name: MessageType(name, code, level, template, desc, args)
    for name, (code, level, template, desc, args) in CATALOGUE.items()
}
BY_CODE: dict[str, MessageType] = {t.code: t for t in TYPES.values()}


def _go_value(value: Any) -> str:
    """Go's ``%v`` of a value: lists print as ``[a b]``, booleans lowercase."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    return str(value)


def _go_quote(value: Any) -> str:
    """Go's ``%q`` of a string (or of each string in a list)."""
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_quote(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def go_format(template: str, args: tuple[Any, ...]) -> str:
    """Fill a Go printf template (``%v %s %q %d %%``) the way Go's fmt would."""
    out: list[str] = []
    it = iter(args)
    i = 0
    while i < len(template):
        c = template[i]
        if c != "%" or i + 1 >= len(template):
            out.append(c)
            i += 1
            continue
        verb = template[i + 1]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        try:
            value = next(it)
        except StopIteration:
            out.append(f"%!{verb}(MISSING)")
            continue
        if verb == "q":
            out.append(_go_quote(value))
        else:
            out.append(_go_value(value))
    return "".join(out)


@dataclass
class Message:
    """One finding about one resource (or none, for a finding about the input as a whole)."""

    type: MessageType
    args: tuple[Any, ...]
    origin: str = ""  # "VirtualService default/reviews"
    file: str | None = None
    line: int | None = None
    namespace: str = ""  # of the resource, for namespace filtering ("" when unset)
    suppressed_codes: frozenset[str] = field(default_factory=frozenset)
    analyzer: str = ""

    @property
    def code(self) -> str:
        return self.type.code

    @property
    def level(self) -> str:
        return self.type.level

    @property
    def text(self) -> str:
        return go_format(self.type.template, self.args)

    @property
    def reference(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        origin = ""
        if self.origin:
            ref = f" {self.reference}" if self.reference else ""
            origin = f" ({self.origin}{ref})"
        return f"{self.level} [{self.code}]{origin} {self.text}"

    def to_dict(self) -> dict[str, str]:
        """The JSON/YAML form istioctl prints (fields in istioctl's order)."""
        out = {"code": self.code, "level": self.level}
        if self.origin:
            out["origin"] = self.origin
        if self.reference:
            out["reference"] = self.reference
        out["message"] = self.text
        out["documentationUrl"] = self.type.doc_url
        return out
