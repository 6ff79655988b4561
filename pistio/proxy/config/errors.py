"""The error a config compiler raises when a resource cannot be honoured.

The agent turns a ``ConfigError`` into an xDS NACK: its text becomes the
``error_detail`` of the DiscoveryRequest and the previous config stays in force.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(Exception):
    """One or more reasons why a resource is rejected; ``problems`` lists each one."""

    def __init__(self, problems: Iterable[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        super().__init__("; ".join(self.problems))
