"""Envoy's listener filters: they look at an accepted socket before a filter chain is chosen."""
