"""``/logging``: Envoy's named loggers and their levels, backed by Python loggers.

Envoy has one logger per component (``admin``, ``config``, ``connection``, ``http``,
``router``, ``upstream``...) and levels ``trace debug info warning error critical off``.
``POST /logging`` lists them; ``?level=<l>`` sets every logger; ``?<name>=<l>`` sets one;
``?paths=<name>:<l>,<name>:<l>`` sets several. Each Envoy logger name maps to the Python logger
``pistio.proxy.<name>``, so ``istioctl proxy-config log <pod> --level http:debug`` changes what
the proxy's ``http`` modules log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
TRACE = 5
_TO_PYTHON = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}

# The Envoy components this proxy has (a subset of Envoy's logger list, same names).
ENVOY_LOGGERS = (
    "admin",
    "client",
    "config",
    "connection",
    "conn_handler",
    "dns",
    "filter",
    "grpc",
    "hc",
    "health_checker",
    "http",
    "http2",
    "init",
    "io",
    "main",
    "misc",
    "pool",
    "rbac",
    "router",
    "runtime",
    "secret",
    "stats",
    "tracing",
    "upstream",
    "wasm",
)

USAGE = (
    "usage: /logging?<name>=<level> (change single level)\n"
    "usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n"
    "usage: /logging?level=<level> (change all levels)\n"
    "levels: " + " ".join(LEVELS) + "\n"
)


def _envoy_level(python_level: int) -> str:
    for name in LEVELS:
        if _TO_PYTHON[name] >= python_level:
            return name
    return "off"


class LogLevels:
    """The named loggers ``/logging`` lists and changes."""

    def __init__(
        self,
        names: Iterable[str] = ENVOY_LOGGERS,
        root: str = "pistio.proxy",
        default_level: str = "warning",
    ) -> None:
        self._loggers = {name: logging.getLogger(f"{root}.{name}") for name in sorted(names)}
        for logger in self._loggers.values():
            if logger.level == logging.NOTSET:
                logger.setLevel(_TO_PYTHON[default_level])

    def levels(self) -> dict[str, str]:
        return {name: _envoy_level(lg.level) for name, lg in self._loggers.items()}

    def listing(self) -> str:
        lines = ["active loggers:\n"]
        lines += [f"  {name}: {level}\n" for name, level in self.levels().items()]
        return "".join(lines)

    def apply(self, params: dict[str, str]) -> bool:
        """Apply a ``/logging`` query; False (nothing changed) if any part is invalid."""
        changes: list[tuple[str | None, str]] = []
        for key, value in params.items():
            if key == "level":
                changes.append((None, value))
            elif key == "paths":
                for item in filter(None, value.split(",")):
                    name, _, level = item.partition(":")
                    changes.append((name, level))
            else:
                changes.append((key, value))
        for name, level in changes:
            if level not in _TO_PYTHON or (name is not None and name not in self._loggers):
                return False
        for name, level in changes:
            targets = self._loggers.values() if name is None else (self._loggers[name],)
            for logger in targets:
                logger.setLevel(_TO_PYTHON[level])
        return True
