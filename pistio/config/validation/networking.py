"""Validation rules for networking kinds."""

from __future__ import annotations
