"""Validation rules for extensions kinds."""

from __future__ import annotations
