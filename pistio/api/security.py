"""API model: security."""

from __future__ import annotations
