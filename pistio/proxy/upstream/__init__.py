"""Upstream runtime state per worker: connection pools, load balancers, health."""
