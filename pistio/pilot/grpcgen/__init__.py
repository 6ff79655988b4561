"""Proxyless gRPC flavour of xDS: API listeners and per-service route configs (Istio grpcgen)."""
