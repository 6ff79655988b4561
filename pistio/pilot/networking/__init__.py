"""Pure builders from (push context, proxy) to Envoy listeners, routes, clusters and endpoints."""
