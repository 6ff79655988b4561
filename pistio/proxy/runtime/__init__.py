"""Per-process proxy runtime: compiled config snapshots and the state that outlives them."""
