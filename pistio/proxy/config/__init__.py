"""Pure compilation of xDS resources into immutable lookup structures (no I/O)."""
