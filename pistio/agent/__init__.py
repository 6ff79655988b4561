"""pilot-agent: node identity, the ADS subscription that feeds the proxy, config distribution
to the worker processes, config dumps."""
