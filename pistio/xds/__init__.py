"""The xDS transport: ADS streams (state of the world and delta), debounce, push queue.

Istio's pilot/pkg/xds without Istio semantics: generators registered by type
URL decide what a proxy gets; this package decides when and how it is sent.
See docs/xds.md.
"""

from pistio.xds.client import AdsClient, ResponseUpdate
from pistio.xds.connection import ConnectionInfo
from pistio.xds.debounce import DebounceOptions
from pistio.xds.generator import Generator, Resource
from pistio.xds.push_request import ConfigKey, PushRequest
from pistio.xds.server import DiscoveryServer

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
