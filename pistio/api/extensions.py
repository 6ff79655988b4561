"""API model: extensions."""

from __future__ import annotations
