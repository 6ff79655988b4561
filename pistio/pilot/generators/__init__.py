"""xDS generators: the transport-facing wrappers around the networking builders."""
