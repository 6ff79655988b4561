"""Proxyless gRPC flavour of xDS: API listeners, per-service route configs and minimal EDS
clusters (Istio grpcgen)."""
