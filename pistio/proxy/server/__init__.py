"""The worker's serving side: listener sockets, connection hand-off, housekeeping, stats."""
