"""Validation rules for telemetry kinds."""

from __future__ import annotations
