"""The proxy's admin API (127.0.0.1:15000), its Prometheus port (15090), and the small HTTP
server they share."""
