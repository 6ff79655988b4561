"""Validation rules for gateway_api kinds."""

from __future__ import annotations
