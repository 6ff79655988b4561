"""Envoy's route matching, compiled once per config: path, header, query and gRPC matchers.

Semantics follow Envoy's ``RouteMatch``, ``HeaderMatcher``, ``QueryParameterMatcher`` and
``StringMatcher``:

* Path specifiers look at ``:path`` without its query string and fragment. ``prefix`` and
  ``path`` honour ``case_sensitive`` (default true, ASCII case folding); ``safe_regex`` must
  match the whole path (RE2 full match) and ignores ``case_sensitive``;
  ``path_separated_prefix`` matches whole path segments.
* A header matcher reads all values of the header joined with ``,``. A missing header never
  matches (whatever ``invert_match`` says) unless ``treat_missing_header_as_empty`` is set;
  ``present_match`` compares presence with the wanted value, then ``invert_match`` flips.
  A matcher with no specifier is a presence check. ``:method``, ``:path``, ``:authority``
  and ``:scheme`` are the request's pseudo-headers; ``host`` is not an alias of
  ``:authority`` (Envoy carries HTTP/1's Host only as ``:authority``).
* A query parameter matcher looks at the first value of the parameter (no percent-decoding);
  without ``string_match`` it only checks presence.
* ``runtime_fraction`` uses its default value: ``random % denominator < numerator``.
* ``grpc`` matches requests whose content-type is ``application/grpc`` or
  ``application/grpc+...`` / ``application/grpc;...``.

Regular expressions use RE2 syntax. Python's ``re`` is a different dialect, so patterns are
translated (``\\z``, POSIX classes, ``\\Q...\\E``, literal ``{``) and RE2-invalid or
unsupported constructs (back-references, look-around, possessive quantifiers, ``\\p``
classes) are rejected at compile time, which makes the resource NACK.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from pistio.proxy.config.errors import ConfigError

# --- the request as matchers see it -----------------------------------------------------------

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as Envoy's case-insensitive comparisons do."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


class RequestView:
    """The parts of a request that routing reads, built once per request.

    ``headers`` is the codec's header index: lower-cased names → the value, a repeated
    header joined with ``,`` (Envoy's form for matching), both as bytes; matchers decode only
    the values they test (latin-1, byte for byte). ``method``, ``path`` (raw, with query),
    ``authority`` and ``scheme`` are the pseudo-headers, as text. A ``host`` entry in
    ``headers`` is ignored by matchers: Envoy carries HTTP/1's Host only as ``:authority``.
    """

    __slots__ = ("method", "path", "authority", "scheme", "headers", "path_only", "_query", "_rnd")

    def __init__(
        self,
        method: str,
        path: str,
        authority: str,
        headers: Mapping[bytes, bytes],
        scheme: str = "http",
        random_value: int | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.authority = authority
        self.scheme = scheme
        self.headers = headers
        self.path_only = strip_query_and_fragment(path)
        self._query: dict[str, str] | None = None
        self._rnd = random_value

    @classmethod
    def of(
        cls,
        method: str = "GET",
        path: str = "/",
        authority: str = "",
        headers: Mapping[str, str | Sequence[str]] | None = None,
        scheme: str = "http",
        random_value: int | None = None,
    ) -> RequestView:
        """A view from text headers (tests, admin tools); lists are joined with ``,``."""
        index: dict[bytes, bytes] = {}
        for name, value in (headers or {}).items():
            text = value if isinstance(value, str) else ",".join(value)
            key = name.lower().encode("latin-1")
            old = index.get(key)
            index[key] = text.encode("latin-1") if old is None else old + b"," + text.encode(
                "latin-1")
        return cls(method, path, authority, index, scheme, random_value)

    @property
    def random_value(self) -> int:
        """One random 64-bit number per request (runtime fractions, weighted clusters)."""
        rnd = self._rnd
        if rnd is None:
            rnd = self._rnd = random.getrandbits(64)
        return rnd

    def query_first_values(self) -> dict[str, str]:
        """Query parameter → its first value, parsed on first use."""
        query = self._query
        if query is None:
            query = self._query = parse_query_first_values(self.path)
        return query


def strip_query_and_fragment(path: str) -> str:
    """``:path`` up to the first ``?`` or ``#`` (Envoy's ``removeQueryAndFragment``)."""
    q = path.find("?")
    f = path.find("#")
    if q < 0:
        return path if f < 0 else path[:f]
    if 0 <= f < q:
        return path[:f]
    return path[:q]


def parse_query_first_values(path: str) -> dict[str, str]:
    """Envoy's ``parseQueryString`` without decoding, keeping each name's first value."""
    start = path.find("?")
    if start < 0:
        return {}
    query = path[start + 1 :]
    hash_at = query.find("#")
    if hash_at >= 0:
        query = query[:hash_at]
    out: dict[str, str] = {}
    for param in query.split("&"):
        name, _, value = param.partition("=")
        if name not in out:
            out[name] = value
    return out


# --- RE2 -----------------------------------------------------------------------------------

# RE2's limit on counted repetition.
_RE2_MAX_REPEAT = 1000
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_REPEAT = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")
_FLAG_GROUP = re.compile(r"\(\?([a-zA-Z-]*)([:)])")


class Re2Error(ValueError):
    """A pattern that RE2 rejects, or that pistio cannot run with RE2's meaning."""


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern into an equivalent Python pattern (ASCII perl classes)."""
    translated = translate_re2(pattern)
    try:
        return re.compile(translated, re.ASCII)
    except re.error as e:
        raise Re2Error(f"invalid regex {pattern!r}: {e}") from None


def translate_re2(pattern: str) -> str:
    """RE2 syntax → Python ``re`` syntax with the same meaning, or ``Re2Error``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    multiline = False
    in_class = False
    class_start = 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            i, piece = _translate_escape(pattern, i, in_class)
            out.append(piece)
            continue
        if in_class:
            if c == "]" and i > class_start:
                in_class = False
                out.append(c)
            elif c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2 : end] if end > 0 else ""
                if name not in _POSIX_CLASSES:
                    raise Re2Error(f"invalid regex {pattern!r}: unsupported character class")
                out.append(_POSIX_CLASSES[name])
                i = end + 2
                continue
            elif c in "[&~|":
                out.append("\\" + c)  # literal in RE2; Python reserves them for set operations
            else:
                out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append("[")
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            class_start = i
            if i < n and pattern[i] == "]":
                out.append("\\]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            i, piece, sets_multiline = _translate_group_open(pattern, i)
            multiline = multiline or sets_multiline
            out.append(piece)
            continue
        if c in "*+?":
            out.append(c)
            i = _after_repetition(pattern, i + 1, out)
            continue
        if c == "{":
            m = _REPEAT.match(pattern, i)
            if m is None:
                out.append("\\{")  # RE2 reads a brace that is not a repetition literally
                i += 1
                continue
            low = int(m.group(1))
            high = int(m.group(3)) if m.group(3) else low
            if max(low, high) > _RE2_MAX_REPEAT or high < low:
                raise Re2Error(f"invalid regex {pattern!r}: bad repetition {m.group(0)}")
            out.append(m.group(0))
            i = _after_repetition(pattern, m.end(), out)
            continue
        if c == "$" and not multiline:
            out.append("\\Z")  # RE2's $ is end of text; Python's also matches before a final \n
            i += 1
            continue
        out.append(c)
        i += 1
    if in_class:
        raise Re2Error(f"invalid regex {pattern!r}: missing ]")
    return "".join(out)


def _after_repetition(pattern: str, i: int, out: list[str]) -> int:
    if i < len(pattern) and pattern[i] == "?":
        out.append("?")
        i += 1
    if (
        i < len(pattern)
        and pattern[i] in "*+?{"
        and (pattern[i] != "{" or _REPEAT.match(pattern, i))
    ):
        raise Re2Error(f"invalid regex {pattern!r}: bad repetition operator")
    return i


def _translate_group_open(pattern: str, i: int) -> tuple[int, str, bool]:
    rest = pattern[i:]
    if rest.startswith("(?:"):
        return i + 3, "(?:", False
    if rest.startswith("(?P<"):
        return i + 4, "(?P<", False
    if rest.startswith(("(?=", "(?!", "(?<=", "(?<!")):
        raise Re2Error(f"invalid regex {pattern!r}: look-around is not supported by RE2")
    if rest.startswith("(?<"):
        return i + 3, "(?P<", False
    m = _FLAG_GROUP.match(pattern, i)
    if m is None or not m.group(1) or set(m.group(1)) - set("imsU-"):
        raise Re2Error(f"invalid regex {pattern!r}: unsupported group syntax at offset {i}")
    flags, end = m.group(1), m.group(2)
    if "U" in flags:
        raise Re2Error(f"invalid regex {pattern!r}: the U flag is not supported by pistio")
    positive = flags.split("-", 1)[0]
    if end == ")":
        # Python takes flags for the whole pattern only at its start; RE2 also allows them
        # mid-group, which has no faithful Python spelling.
        if i != 0 or "-" in flags:
            raise Re2Error(
                f"invalid regex {pattern!r}: flags not at the start of the pattern "
                "are not supported by pistio"
            )
        return m.end(), f"(?{flags})", "m" in positive
    return m.end(), f"(?{flags}:", False


def _translate_escape(pattern: str, i: int, in_class: bool) -> tuple[int, str]:
    if i + 1 >= len(pattern):
        raise Re2Error(f"invalid regex {pattern!r}: trailing \\")
    d = pattern[i + 1]
    if d in "dDsSwWaftnrv":
        return i + 2, "\\" + d
    if d in "bB" and not in_class:
        return i + 2, "\\" + d
    if d == "A" and not in_class:
        return i + 2, "\\A"
    if d == "z" and not in_class:
        return i + 2, "\\Z"
    if d == "x":
        if pattern.startswith("{", i + 2):
            end = pattern.find("}", i + 3)
            digits = pattern[i + 3 : end] if end > 0 else ""
            if not digits or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
                raise Re2Error(f"invalid regex {pattern!r}: bad \\x escape")
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise Re2Error(f"invalid regex {pattern!r}: bad \\x escape")
            return end + 1, f"\\U{code:08x}"
        return i + 2, "\\x"
    if d == "0":
        j = i + 2
        while j < len(pattern) and j < i + 4 and pattern[j] in "01234567":
            j += 1
        return j, "\\" + pattern[i + 1 : j].rjust(3, "0")
    if d.isdigit():
        raise Re2Error(f"invalid regex {pattern!r}: back-references are not supported by RE2")
    if d == "Q":
        end = pattern.find("\\E", i + 2)
        end = len(pattern) if end < 0 else end
        return min(end + 2, len(pattern)), re.escape(pattern[i + 2 : end])
    if d in "pP":
        raise Re2Error(f"invalid regex {pattern!r}: Unicode classes are not supported by pistio")
    if d.isascii() and d.isalnum():
        raise Re2Error(f"invalid regex {pattern!r}: invalid escape sequence \\{d}")
    if d.isascii():
        return i + 2, "\\" + d
    return i + 2, d


def compile_regex_matcher(rm: regex_pb2.RegexMatcher, where: str) -> re.Pattern[str]:
    try:
        return compile_re2(rm.regex)
    except Re2Error as e:
        raise ConfigError([f"{where}: {e}"]) from None


# --- string and value matchers --------------------------------------------------------------

ValueCheck = Callable[[str], bool]


def compile_string_matcher(sm: string_pb2.StringMatcher, where: str) -> ValueCheck:
    """Envoy's ``StringMatcher``; ``ignore_case`` applies to all kinds but ``safe_regex``."""
    kind = sm.WhichOneof("match_pattern")
    ic = sm.ignore_case
    if kind == "exact":
        want = ascii_lower(sm.exact) if ic else sm.exact
        if ic:
            return lambda v: ascii_lower(v) == want
        return want.__eq__
    if kind in ("prefix", "suffix", "contains"):
        text = getattr(sm, kind)
        if not text:
            raise ConfigError([f"{where}.{kind}: must not be empty"])
        want = ascii_lower(text) if ic else text
        if kind == "prefix":
            if ic:
                return lambda v: ascii_lower(v).startswith(want)
            return lambda v: v.startswith(want)
        if kind == "suffix":
            if ic:
                return lambda v: ascii_lower(v).endswith(want)
            return lambda v: v.endswith(want)
        if ic:
            return lambda v: want in ascii_lower(v)
        return lambda v: want in v
    if kind == "safe_regex":
        fullmatch = compile_regex_matcher(sm.safe_regex, f"{where}.safe_regex").fullmatch
        return lambda v: fullmatch(v) is not None
    raise ConfigError([f"{where}: a string matcher needs one of exact, prefix, suffix, "
                       "contains, safe_regex"])


_INT64_TEXT = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+[ \t\n\v\f\r]*\Z")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _range_check(start: int, end: int) -> ValueCheck:
    def check(v: str) -> bool:
        # absl::SimpleAtoi: optional whitespace around an optionally signed decimal int64.
        if _INT64_TEXT.match(v) is None:
            return False
        number = int(v)
        return _INT64_MIN <= number <= _INT64_MAX and start <= number < end

    return check


# --- header matchers ------------------------------------------------------------------------

_PSEUDO_HEADER_GETTERS: dict[str, Callable[[RequestView], str | None]] = {
    ":method": lambda r: r.method,
    ":path": lambda r: r.path,
    ":authority": lambda r: r.authority,
    ":scheme": lambda r: r.scheme,
}


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """One compiled ``HeaderMatcher``.

    ``matches_value(value)`` takes the joined header value or None when the header is
    absent, so the same matcher serves request headers (routes, fault filter) and response
    headers (retriable_headers).
    """

    name: str
    matches_value: Callable[[str | None], bool]
    matches_request: Callable[[RequestView], bool]

    def matches_headers(self, headers: Mapping[bytes, bytes]) -> bool:
        """Match against a header index (lower-cased bytes names, joined values)."""
        raw = headers.get(self.name.encode("latin-1"))
        return self.matches_value(None if raw is None else raw.decode("latin-1"))


def compile_header_matcher(hm: rc.HeaderMatcher, where: str) -> HeaderMatcher:
    name = hm.name.lower()
    if not name:
        raise ConfigError([f"{where}.name: must not be empty"])
    invert = hm.invert_match
    kind = hm.WhichOneof("header_match_specifier")
    value_check: ValueCheck | None = None
    present = True
    if kind is None:
        pass  # no specifier: a presence check
    elif kind == "present_match":
        present = hm.present_match
    elif kind == "string_match":
        value_check = compile_string_matcher(hm.string_match, f"{where}.string_match")
    elif kind == "range_match":
        value_check = _range_check(hm.range_match.start, hm.range_match.end)
    elif kind == "safe_regex_match":
        regex = compile_regex_matcher(hm.safe_regex_match, f"{where}.safe_regex_match")
        fullmatch = regex.fullmatch
        value_check = lambda v: fullmatch(v) is not None  # noqa: E731
    else:
        # Deprecated direct fields mean the same as the StringMatcher of that kind.
        legacy = {"exact_match": "exact", "prefix_match": "prefix",
                  "suffix_match": "suffix", "contains_match": "contains"}[kind]
        value_check = compile_string_matcher(
            string_pb2.StringMatcher(**{legacy: getattr(hm, kind)}), f"{where}.{kind}"
        )

    if value_check is None:
        def matches_value(v: str | None) -> bool:
            return ((v is not None) == present) != invert
    elif hm.treat_missing_header_as_empty:
        check = value_check

        def matches_value(v: str | None) -> bool:
            return check("" if v is None else v) != invert
    else:
        check = value_check

        def matches_value(v: str | None) -> bool:
            return v is not None and check(v) != invert

    getter = _PSEUDO_HEADER_GETTERS.get(name)
    if getter is not None:
        get = getter

        def matches_request(r: RequestView) -> bool:
            return matches_value(get(r))
    elif name == "host":
        absent = matches_value(None)

        def matches_request(r: RequestView) -> bool:
            return absent
    else:
        key = name.encode("latin-1")

        def matches_request(r: RequestView) -> bool:
            raw = r.headers.get(key)
            return matches_value(None if raw is None else raw.decode("latin-1"))

    return HeaderMatcher(name, matches_value, matches_request)


def compile_header_matchers(
    matchers: Sequence[rc.HeaderMatcher], where: str
) -> tuple[HeaderMatcher, ...]:
    out: list[HeaderMatcher] = []
    problems: list[str] = []
    for i, hm in enumerate(matchers):
        try:
            out.append(compile_header_matcher(hm, f"{where}[{i}]"))
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return tuple(out)


# --- query parameters, runtime fraction, gRPC ------------------------------------------------

RequestCheck = Callable[[RequestView], bool]


def compile_query_parameter_matcher(qm: rc.QueryParameterMatcher, where: str) -> RequestCheck:
    name = qm.name
    if not name:
        raise ConfigError([f"{where}.name: must not be empty"])
    if qm.HasField("string_match"):
        check = compile_string_matcher(qm.string_match, f"{where}.string_match")

        def matches(r: RequestView) -> bool:
            value = r.query_first_values().get(name)
            return value is not None and check(value)

        return matches
    return lambda r: name in r.query_first_values()


_DENOMINATORS = {
    percent_pb2.FractionalPercent.HUNDRED: 100,
    percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
    percent_pb2.FractionalPercent.MILLION: 1_000_000,
}


@dataclass(frozen=True, slots=True)
class Fraction:
    """A ``FractionalPercent``: on for ``random % denominator < numerator``."""

    numerator: int
    denominator: int

    def enabled(self, random_value: int) -> bool:
        return random_value % self.denominator < self.numerator

    @property
    def percent(self) -> float:
        return 100.0 * min(self.numerator, self.denominator) / self.denominator


ALWAYS = Fraction(100, 100)
NEVER = Fraction(0, 100)


def compile_fraction(fp: percent_pb2.FractionalPercent) -> Fraction:
    return Fraction(fp.numerator, _DENOMINATORS.get(fp.denominator, 100))


def compile_runtime_fraction(rf: base_pb2.RuntimeFractionalPercent) -> Fraction:
    # pistio has no runtime layer: the runtime key never overrides the default.
    return compile_fraction(rf.default_value)


def is_grpc_content_type(content_type: str | None) -> bool:
    """Envoy's ``Grpc::Common::hasGrpcContentType``."""
    if content_type is None or not content_type.startswith("application/grpc"):
        return False
    return len(content_type) == 16 or content_type[16] in "+;"


def _grpc_check(r: RequestView) -> bool:
    raw = r.headers.get(b"content-type")
    return raw is not None and is_grpc_content_type(raw.decode("latin-1"))


# --- path specifiers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathMatch:
    """Which path specifier a route uses; ``value`` is the prefix, path or regex text.

    ``kind`` is ``prefix``, ``path``, ``safe_regex`` or ``path_separated_prefix``; the
    rewrite helpers need it to know what part of the path was matched.
    """

    kind: str
    value: str
    case_sensitive: bool


def _path_check(m: rc.RouteMatch, where: str) -> tuple[PathMatch, RequestCheck]:
    kind = m.WhichOneof("path_specifier")
    cs = m.case_sensitive.value if m.HasField("case_sensitive") else True
    if kind == "prefix":
        prefix = m.prefix
        if cs:
            if prefix == "/":
                return PathMatch(kind, prefix, cs), lambda r: r.path_only.startswith("/")
            return PathMatch(kind, prefix, cs), lambda r: r.path_only.startswith(prefix)
        low = ascii_lower(prefix)
        size = len(prefix)
        return PathMatch(kind, prefix, cs), lambda r: ascii_lower(r.path_only[:size]) == low
    if kind == "path":
        path = m.path
        if cs:
            return PathMatch(kind, path, cs), lambda r: r.path_only == path
        low = ascii_lower(path)
        return PathMatch(kind, path, cs), lambda r: ascii_lower(r.path_only) == low
    if kind == "safe_regex":
        fullmatch = compile_regex_matcher(m.safe_regex, f"{where}.safe_regex").fullmatch
        return PathMatch(kind, m.safe_regex.regex, True), lambda r: (
            fullmatch(r.path_only) is not None
        )
    if kind == "path_separated_prefix":
        prefix = m.path_separated_prefix
        if not prefix.startswith("/") or prefix.endswith("/") or "?" in prefix or "#" in prefix:
            raise ConfigError([f"{where}.path_separated_prefix: {prefix!r} must start with "
                               "'/', not end with '/' and hold no '?' or '#'"])
        size = len(prefix)
        want = prefix if cs else ascii_lower(prefix)

        def separated(r: RequestView) -> bool:
            p = r.path_only
            if len(p) < size or (len(p) > size and p[size] != "/"):
                return False
            head = p[:size]
            return (head if cs else ascii_lower(head)) == want

        return PathMatch(kind, prefix, cs), separated
    raise ConfigError([f"{where}: a route match needs one of prefix, path, safe_regex, "
                       "path_separated_prefix"])


def compile_route_match(m: rc.RouteMatch, where: str) -> tuple[PathMatch, RequestCheck]:
    """The route's path specifier and one predicate for the whole ``RouteMatch``.

    Checks run cheapest first: path, then headers, query parameters, gRPC, runtime fraction.
    Every check is a pure predicate, so the order cannot change the outcome.
    """
    problems: list[str] = []
    path_match: PathMatch | None = None
    path_check: RequestCheck | None = None
    try:
        path_match, path_check = _path_check(m, where)
    except ConfigError as e:
        problems.extend(e.problems)
    checks: list[RequestCheck] = []
    try:
        checks.extend(h.matches_request for h in compile_header_matchers(m.headers,
                                                                        f"{where}.headers"))
    except ConfigError as e:
        problems.extend(e.problems)
    for i, qm in enumerate(m.query_parameters):
        try:
            checks.append(compile_query_parameter_matcher(qm, f"{where}.query_parameters[{i}]"))
        except ConfigError as e:
            problems.extend(e.problems)
    if m.HasField("grpc"):
        checks.append(_grpc_check)
    if m.HasField("runtime_fraction"):
        fraction = compile_runtime_fraction(m.runtime_fraction)
        checks.append(lambda r: fraction.enabled(r.random_value))
    if problems:
        raise ConfigError(problems)
    assert path_match is not None and path_check is not None
    return path_match, _all_of(path_check, tuple(checks))


def _all_of(first: RequestCheck, rest: tuple[RequestCheck, ...]) -> RequestCheck:
    if not rest:
        return first
    if len(rest) == 1:
        second = rest[0]
        return lambda r: first(r) and second(r)

    def matches(r: RequestView) -> bool:
        if not first(r):
            return False
        for check in rest:  # noqa: SIM110 - a plain loop; all() would build a generator
            if not check(r):
                return False
        return True

    return matches
