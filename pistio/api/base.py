"""Base classes and scalar types shared by every API model.

Conventions (the same for every kind, so that code reading a model can rely on them):

- Python attribute names are the proto field names (snake_case); YAML/JSON use the proto
  JSON names (lowerCamelCase). Both spellings are accepted on input, as protojson does.
- Unknown fields are errors, as with ``kubectl --validate=strict``.
- Proto3 defaults: repeated fields default to ``[]``, maps to ``{}``, messages and wrapper
  types (BoolValue, UInt32Value, Duration, ...) to ``None``, strings to ``""``, numbers to 0,
  bools to False, enums to their zero value (a string such as ``"UNSET"``).
- Enums are ``Literal`` strings; numeric enum values are accepted and mapped to their name.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, GetCoreSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema


class IstioModel(BaseModel):
    """A proto message of an Istio (or Gateway API) spec."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=False,
        revalidate_instances="never",
        ser_json_timedelta="float",
    )

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (camelCase), leaving out unset fields."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class KubeModel(IstioModel):
    """A Kubernetes object part: the mesh types the fields it uses and keeps the rest.

    Kubernetes' own API server validates Kubernetes kinds; the mesh must not reject a valid
    Deployment because it carries a field the mesh never reads.
    """

    model_config = ConfigDict(extra="allow")


# --- Durations -----------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a duration string, in Go's ``time.ParseDuration`` syntax (``1h30m``, ``1.5s``).

    Raises ValueError on bad syntax. Istio's CRDs validate durations with that syntax.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


class Duration(str):
    """A duration kept as written (``"1.5s"``) with its value in ``seconds``."""

    seconds: float

    def __new__(cls, text: str) -> Duration:
        obj = super().__new__(cls, text)
        obj.seconds = parse_duration(text)
        return obj

    @property
    def millis(self) -> float:
        return self.seconds * 1000.0

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def check(value: Any) -> Duration:
            if isinstance(value, Duration):
                return value
            if not isinstance(value, str):
                raise PydanticCustomError(
                    "duration_type", "invalid duration: expected a string such as \"1s\""
                )
            try:
                return cls(value)
            except ValueError:
                raise PydanticCustomError(
                    "duration_syntax", 'invalid duration "{value}"', {"value": value}
                ) from None

        return core_schema.no_info_plain_validator_function(
            check, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )


# --- Lenient scalars where protojson is lenient -------------------------------------------


def _int_from_string(value: Any) -> Any:
    # protojson accepts 64-bit integers as JSON strings ("123"); YAML users write them both ways.
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return value


def _float_from_int(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    return value


Int64 = Annotated[int, BeforeValidator(_int_from_string)]
"""An int64/uint64 proto field: a number or a decimal string."""

Double = Annotated[float, BeforeValidator(_float_from_int)]
"""A double proto field: integers are accepted."""


def enum_values(*names: str) -> dict[int, str]:
    """Numeric value → name for an enum declared in proto order (values 0, 1, 2, ...)."""
    return dict(enumerate(names))


def numeric_enum(names: tuple[str, ...]) -> BeforeValidator:
    """Accept a proto enum's number in place of its name, as protojson does."""
    table = dict(enumerate(names))

    def convert(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value in table:
            return table[value]
        return value

    return BeforeValidator(convert)


def proto_enum(*names: str) -> Any:
    """The type of a proto enum field: its names, or its numbers in declaration order."""
    return Annotated[Literal[names], numeric_enum(names)]


Struct = dict[str, Any]
"""A google.protobuf.Struct: free-form JSON object."""
