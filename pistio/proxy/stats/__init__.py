"""Envoy-compatible statistics: per-worker counters, gauges and histograms with Envoy's names,
merged across workers only when scraped, and rendered as ``/stats`` text, JSON or Prometheus."""
