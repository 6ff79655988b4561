"""Validation rules for security kinds."""

from __future__ import annotations
