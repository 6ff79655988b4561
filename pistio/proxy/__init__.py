"""pistio proxy: an Envoy-compatible data plane that applies the xDS config pistio emits."""
