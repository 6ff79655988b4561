"""Pilot: turns Istio config and the service registry into Envoy configuration."""
