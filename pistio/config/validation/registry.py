"""Which function validates which kind.

Validation modules register with :func:`validates`; :func:`validator_for` imports them all
first. A validator reads the typed resource and reports into a FieldErrors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pistio.config.issues import FieldErrors
from pistio.config.resource import Resource

Validator = Callable[[Resource, FieldErrors], None]

_MODULES = (
    "pistio.config.validation.networking",
    "pistio.config.validation.security",
    "pistio.config.validation.telemetry",
    "pistio.config.validation.extensions",
    "pistio.config.validation.gateway_api",
    "pistio.config.validation.kube",
)
_VALIDATORS: dict[tuple[str, str], Validator] = {}
_loaded = False


def validates(group: str, kind: str) -> Callable[[Validator], Validator]:
    def register(fn: Validator) -> Validator:
        _VALIDATORS[(group, kind)] = fn
        return fn

    return register


def validator_for(group: str, kind: str) -> Validator | None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _MODULES:
            importlib.import_module(name)
    return _VALIDATORS.get((group, kind))
