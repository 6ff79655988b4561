"""Listener filters (original_dst, tls_inspector, http_inspector) and HTTP filters."""
