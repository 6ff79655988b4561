"""API model: networking."""

from __future__ import annotations
