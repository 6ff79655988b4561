"""Envoy's access logging: response flags, the per-request stream info record and the
command-operator formatter (text and JSON)."""
