"""Istio telemetry in the proxy: peer metadata exchange and the standard metrics' config."""
