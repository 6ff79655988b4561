"""The local mesh runtime: a whole mesh on one Linux host (``pistio up``). See docs/runtime.md."""
