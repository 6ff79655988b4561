"""Request path normalization, as Envoy's connection manager does it before routing.

Three ``HttpConnectionManager`` settings, applied in Envoy's order to the path part of the
request target (the query, from the first ``?``, is left as it is):

1. ``path_with_escaped_slashes_action``: ``%2F``/``%2f`` and ``%5C``/``%5c`` are unescaped to
   ``/`` and ``\\`` (UNESCAPE_AND_FORWARD, UNESCAPE_AND_REDIRECT) or the request is rejected
   when they occur (REJECT_REQUEST); KEEP_UNCHANGED, and the implementation-specific default,
   leave them.
2. ``normalize_path``: RFC 3986 normalization as Envoy's ``PathUtil::canonicalPath`` does it
   (Chromium's URL path canonicalizer): ``.`` and ``..`` segments are resolved (also written
   ``%2e``; ``..`` never climbs above the root), ``\\`` becomes ``/``, a path without a
   leading ``/`` gets one, percent-escaped unreserved characters (letters, digits, ``-._~``)
   are unescaped, bytes that may not appear in a path (controls, space, ``"#<>\\^`{|}``, DEL,
   non-ASCII) are percent-escaped, other escapes are kept exactly as written (hex case
   included). An escaped NUL (``%00``) or a raw one makes the path invalid: the request is
   rejected.
3. ``merge_slashes``: runs of ``/`` become one.

Istio turns on ``normalize_path`` for every sidecar and gateway (meshConfig
``pathNormalization: BASE``), so this runs on every request: the common path (nothing to
resolve, escape or unescape) is recognised with a C-speed ``translate`` and left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# HttpConnectionManager.PathWithEscapedSlashesAction.
IMPLEMENTATION_SPECIFIC_DEFAULT = 0
KEEP_UNCHANGED = 1
REJECT_REQUEST = 2
UNESCAPE_AND_REDIRECT = 3
UNESCAPE_AND_FORWARD = 4

_HEX = b"0123456789abcdefABCDEF"
# Bytes copied as they are (Chromium's PASS and UNESCAPE classes, '.' and '/' included: a dot
# matters only after a slash, which the fast path checks for separately).
_PLAIN = (b"!$&'()*+,-./0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_"
          b"abcdefghijklmnopqrstuvwxyz~")
# Escaped, these are unescaped (RFC 3986 unreserved characters).
_UNRESERVED = frozenset(b"-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_PLAIN_SET = frozenset(_PLAIN)
# A target made of these alone needs nothing whatever the settings (but merge_slashes, checked
# apart): plain bytes without the dot, and '?' (what follows it is the query, left alone).
_FAST = _PLAIN.replace(b".", b"") + b"?"


class PathAction(Enum):
    CONTINUE = 0
    REJECT = 1  # 400, details path_normalization_failed
    REDIRECT = 2  # 307 to the new path


def _is_dot(path: bytes, i: int, end: int) -> int:
    """Length of a dot at ``i`` (``.`` or ``%2e``), 0 when there is none."""
    c = path[i]
    if c == 0x2E:
        return 1
    if c == 0x25 and i + 2 < end and path[i + 1] == 0x32 and path[i + 2] in (0x45, 0x65):
        return 3
    return 0


def _hex_value(path: bytes, i: int) -> int:
    """The byte escaped by the two hex digits at ``i``, or -1."""
    a, b = path[i:i + 1], path[i + 1:i + 2]
    if not a or not b or a not in _HEX or b not in _HEX:
        return -1
    return int(path[i:i + 2], 16)


def canonical_path(path: bytes) -> bytes | None:
    """Envoy's RFC 3986 normalization of a path (no query); ``None`` when it is invalid."""
    if (path[:1] == b"/" and not path.translate(None, _PLAIN) and b"/." not in path):
        return path  # the common case: nothing to resolve, escape or unescape
    out = bytearray(b"/" if path[:1] not in (b"/", b"\\") else b"")
    valid = True
    last_bad_percent = -10  # where in ``out`` a '%' that began no escape was written
    end = len(path)
    i = 0
    while i < end:
        c = path[i]
        dot = _is_dot(path, i, end) if c in (0x2E, 0x25) else 0
        if dot:
            if out and out[-1] == 0x2F:
                after = i + dot
                if after == end:
                    i = after  # "/." at the end: the directory itself
                    continue
                if path[after] in (0x2F, 0x5C):
                    i = after + 1  # "/./": dropped
                    continue
                dot2 = _is_dot(path, after, end)
                if dot2:
                    after2 = after + dot2
                    if after2 == end or path[after2] in (0x2F, 0x5C):
                        _up_one(out)
                        i = after2 + (1 if after2 < end else 0)
                        continue
            out.append(0x2E)
            i += dot
        elif c in _PLAIN_SET:
            out.append(c)
            i += 1
        elif c == 0x5C:  # backslash
            out.append(0x2F)
            i += 1
        elif c == 0x25:  # '%' that is not a dot
            value = _hex_value(path, i + 1)
            if value < 0:
                last_bad_percent = len(out)
                out.append(0x25)  # not an escape: passed through
                i += 1
                continue
            if value in _UNRESERVED:
                out.append(value)
                if last_bad_percent >= len(out) - 3:
                    _guard_nested_escape(out, path, i + 3, last_bad_percent)
            else:
                out += path[i:i + 3]  # kept as written
                if value == 0:
                    valid = False
            i += 3
        else:
            out += b"%%%02X" % c
            if c == 0:
                valid = False
            i += 1
    return bytes(out) if valid else None


def _up_one(out: bytearray) -> None:
    """Drop the last segment; ``out`` ends with '/' before and after (never above the root)."""
    j = len(out) - 2
    while j > 0 and out[j] != 0x2F:
        j -= 1
    del out[max(j, 0) + 1:]


def _guard_nested_escape(out: bytearray, path: bytes, next_i: int, bad: int) -> None:
    """An unescaped byte just completed ``%XY`` after a '%' that began no escape ("%%30%30"
    would otherwise read as "%00" once canonicalized again): escape that '%' as ``%25``."""
    length = len(out)
    last = out[-1]
    append = bad == length - 2  # "%c": the next input byte could complete an escape
    if append:
        if next_i >= len(path) or path[next_i] >= 0x80:
            return
        out.append(path[next_i])
    if _hex_value(bytes(out[bad + 1:bad + 3]), 0) >= 0:
        if not append:
            out.append(out[bad + 1])
        out[bad + 1:bad + 3] = b"25"
        out.append(last)  # an appended input byte is overwritten: it is read again next
    elif append:
        del out[length:]


def merge_slashes(path: bytes) -> bytes:
    """Runs of '/' as one (the leading and trailing slash kept)."""
    if b"//" not in path:
        return path
    parts = [p for p in path.split(b"/") if p]
    lead = b"/" if path[:1] == b"/" else b""
    trail = b"/" if path[-1:] == b"/" else b""
    return lead + b"/".join(parts) + trail


def unescape_slashes(path: bytes) -> tuple[bytes, bool]:
    """``%2F`` → ``/`` and ``%5C`` → ``\\`` (either case); whether any was found."""
    if b"%" not in path:
        return path, False
    out = path.replace(b"%2F", b"/").replace(b"%2f", b"/")
    out = out.replace(b"%5C", b"\\").replace(b"%5c", b"\\")
    return out, out != path


@dataclass(frozen=True, slots=True)
class PathNormalization:
    """One connection manager's path settings; ``apply`` runs them on a request target."""

    normalize: bool = False
    merge: bool = False
    escaped_slashes: int = KEEP_UNCHANGED

    @classmethod
    def from_settings(cls, normalize: bool, merge: bool, escaped_slashes: int
                      ) -> PathNormalization | None:
        """``None`` when the settings leave every path as it is."""
        if escaped_slashes == IMPLEMENTATION_SPECIFIC_DEFAULT:
            escaped_slashes = KEEP_UNCHANGED  # Envoy's runtime default
        if not normalize and not merge and escaped_slashes == KEEP_UNCHANGED:
            return None
        return cls(normalize, merge, escaped_slashes)

    def unchanged(self, target: bytes) -> bool:
        """The common case, whatever the settings: an origin-form target with no byte to
        escape or unescape (so no '%' and no '\\'), no dot, no "//" to merge — one C-speed
        pass over it. False means ``apply`` must look."""
        return (target[:1] == b"/" and not target.translate(None, _FAST)
                and (not self.merge or b"//" not in target))

    def apply(self, target: bytes) -> tuple[PathAction, bytes] | None:
        """(what to do, the new target); ``None`` when the target stays as it is. The caller
        passes origin-form targets only (starting with '/')."""
        if self.unchanged(target):
            return None
        return self.apply_looked(target)

    def apply_looked(self, target: bytes) -> tuple[PathAction, bytes] | None:
        """``apply`` for a target ``unchanged`` has already said no to (the connection
        manager asks that first, on every request)."""
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        if not path.translate(None, _PLAIN) and b"/." not in path and (
                not self.merge or b"//" not in path):
            return None  # dots but no dot segment, or a query with anything in it
        query = b"" if q < 0 else target[q:]
        action = PathAction.CONTINUE
        if self.escaped_slashes != KEEP_UNCHANGED:
            path, found = unescape_slashes(path)
            if found:
                if self.escaped_slashes == REJECT_REQUEST:
                    return PathAction.REJECT, target
                if self.escaped_slashes == UNESCAPE_AND_REDIRECT:
                    action = PathAction.REDIRECT
        if self.normalize:
            canonical = canonical_path(path)
            if canonical is None:
                return PathAction.REJECT, target
            path = canonical
        if self.merge:
            path = merge_slashes(path)
        return action, path + query
