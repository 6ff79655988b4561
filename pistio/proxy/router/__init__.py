"""Envoy's router filter: route → cluster → host, with retries, timeouts and mirroring."""
