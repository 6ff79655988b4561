"""Network filters that run before a filter chain's terminal filter (RBAC)."""
