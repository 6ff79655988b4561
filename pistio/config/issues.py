"""Configuration problems as users read them: resource, field path, reason, and place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class ConfigIssue:
    """A problem with the input: ``ref`` names the resource (empty for a file-level problem)."""

    message: str
    ref: str = ""
    path: str = ""
    file: str | None = None
    line: int | None = None
    level: Level = "error"

    @property
    def place(self) -> str:
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def reason(self) -> str:
        """The resource-relative part: ``spec.http[0].route[1].weight: weight -1 < 0``."""
        return f"{self.path}: {self.message}" if self.path else self.message

    def __str__(self) -> str:
        parts = [p for p in (self.place, self.ref, self.reason) if p]
        return ": ".join(parts)


class FieldErrors:
    """Collects field-level errors and warnings while one resource is checked."""

    __slots__ = ("errors", "warnings")

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.errors)
