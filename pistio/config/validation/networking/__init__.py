"""Validation rules for networking.istio.io kinds, as Istio's validating webhook applies them.

Each check reports at the field it is about; reasons are Istio's. Istio's warnings are warnings.
One module a kind (``workload`` holds WorkloadEntry and WorkloadGroup); ``shared`` holds the
checks several kinds use. Importing this package registers every kind's validator.
"""

from pistio.config.validation.networking import (
    destination_rule,
    envoy_filter,
    gateway,
    proxy_config,
    service_entry,
    sidecar,
    virtual_service,
    workload,
)

__all__ = [
    "destination_rule",
    "envoy_filter",
    "gateway",
    "proxy_config",
    "service_entry",
    "sidecar",
    "virtual_service",
    "workload",
]
