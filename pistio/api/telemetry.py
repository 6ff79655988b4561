"""API model: telemetry."""

from __future__ import annotations
