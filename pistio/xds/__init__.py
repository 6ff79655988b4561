"""The xDS transport: ADS streams (state of the world and delta), debounce, push queue.

Istio's pilot/pkg/xds without Istio semantics: generators registered by type
URL decide what a proxy gets; this package decides when and how it is sent.
See docs/xds.md.

The names below are imported on first use: the proxy's workers import ``pistio.xds.types``
alone, and must not pay for gRPC (the client and server modules) to do so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pistio.xds.client import AdsClient, ResponseUpdate
    from pistio.xds.connection import ConnectionInfo
    from pistio.xds.debounce import DebounceOptions
    from pistio.xds.generator import Generator, Resource
    from pistio.xds.push_request import ConfigKey, PushRequest
    from pistio.xds.server import DiscoveryServer

_EXPORTS = {
    "AdsClient": "pistio.xds.client",
    "ResponseUpdate": "pistio.xds.client",
    "ConnectionInfo": "pistio.xds.connection",
    "DebounceOptions": "pistio.xds.debounce",
    "Generator": "pistio.xds.generator",
    "Resource": "pistio.xds.generator",
    "ConfigKey": "pistio.xds.push_request",
    "PushRequest": "pistio.xds.push_request",
    "DiscoveryServer": "pistio.xds.server",
}

__all__ = [
    "AdsClient",
    "ConfigKey",
    "ConnectionInfo",
    "DebounceOptions",
    "DiscoveryServer",
    "Generator",
    "PushRequest",
    "Resource",
    "ResponseUpdate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pistio.xds' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
