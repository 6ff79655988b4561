"""HTTP filters run by the connection manager before the router: fault injection and CORS."""
