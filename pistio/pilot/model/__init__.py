"""The control plane's view of the mesh: services, endpoints, proxies, the push context."""
