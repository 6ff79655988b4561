"""API model: mesh."""

from __future__ import annotations
