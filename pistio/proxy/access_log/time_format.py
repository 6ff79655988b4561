"""``%START_TIME(...)%`` formats: strftime plus Envoy's sub-second and epoch specifiers.

Envoy formats start times with a strftime-style string and adds a few specifiers of its own
(Envoy docs, access log "Command operators", START_TIME):

- ``%f`` and ``%1f``..``%9f``: the fractional second with that many digits (``%f`` = 9, i.e.
  nanoseconds); ``%3f`` is milliseconds;
- ``%s``: whole seconds since the epoch;
- ``%E3S`` (``%E1S``..``%E9S``) and ``%E*S``: seconds with that many fractional digits (``*``:
  as many as needed), as Abseil's time formatting spells them.

Without a format ``START_TIME`` prints ``2016-04-15T20:17:00.310Z`` (UTC, milliseconds). A format
that would produce a newline (``%n``) is refused, as Envoy refuses it.

Rendering is cached per whole second: the strftime part only changes once a second, so a busy
proxy formats it once and appends the sub-second digits per line.
"""

from __future__ import annotations

import re
import time

DEFAULT_FORMAT = "%Y-%m-%dT%H:%M:%E3SZ"

_SPECIAL = re.compile(r"%%|%([1-9]?)f|%s|%E([1-9*])S")
_NEWLINE = re.compile(r"%[-_0^#]*[1-9]*[EO]?n")

# A piece is either strftime text or (kind, digits) computed per line.
_FRACTION, _EPOCH, _SECONDS_WITH_FRACTION = 0, 1, 2


class TimeFormatError(ValueError):
    pass


class TimeFormat:
    """A compiled START_TIME format; :meth:`render` takes nanoseconds since the epoch."""

    __slots__ = ("_pieces", "_local", "_dynamic", "_cached_sec", "_cached", "_tm_sec", "text")

    def __init__(self, fmt: str = "", local: bool = False) -> None:
        if _NEWLINE.search(fmt):
            raise TimeFormatError("Invalid header configuration. Format string contains newline.")
        self.text = fmt or DEFAULT_FORMAT
        self._local = local
        pieces: list[str | tuple[int, int]] = []
        chunk: list[str] = []
        pos = 0
        for m in _SPECIAL.finditer(self.text):
            chunk.append(self.text[pos : m.start()])
            pos = m.end()
            token = m.group(0)
            if token == "%%":
                chunk.append("%%")  # strftime turns it into one '%'
                continue
            if chunk:
                pieces.append("".join(chunk))
                chunk = []
            if token == "%s":
                pieces.append((_EPOCH, 0))
            elif token.endswith("f"):
                pieces.append((_FRACTION, int(m.group(1) or 9)))
            else:
                digits = m.group(2)
                pieces.append((_SECONDS_WITH_FRACTION, -1 if digits == "*" else int(digits)))
        chunk.append(self.text[pos:])
        tail = "".join(chunk)
        if tail:
            pieces.append(tail)
        self._pieces = tuple(pieces)
        self._dynamic = any(not isinstance(p, str) for p in pieces)
        self._cached_sec = -1
        self._cached: list[str | tuple[int, int]] | str = ""
        self._tm_sec = 0

    def render(self, ns: int) -> str:
        sec, frac = divmod(ns, 1_000_000_000)
        if sec != self._cached_sec:
            tm = time.localtime(sec) if self._local else time.gmtime(sec)
            rendered = [time.strftime(p, tm) if isinstance(p, str) else p for p in self._pieces]
            self._cached = rendered if self._dynamic else "".join(rendered)  # type: ignore[arg-type]
            self._cached_sec = sec
            self._tm_sec = tm.tm_sec
        cached = self._cached
        if not self._dynamic:
            return cached  # type: ignore[return-value]
        out = []
        for p in cached:
            if isinstance(p, str):
                out.append(p)
                continue
            kind, digits = p
            if kind == _FRACTION:
                out.append(f"{frac:09d}"[:digits])
            elif kind == _EPOCH:
                out.append(str(sec))
            else:
                tm_sec = self._tm_sec
                if digits < 0:
                    fraction = f"{frac:09d}".rstrip("0")
                    out.append(f"{tm_sec:02d}.{fraction}" if fraction else f"{tm_sec:02d}")
                else:
                    out.append(f"{tm_sec:02d}.{frac:09d}"[: 3 + digits])
        return "".join(out)
