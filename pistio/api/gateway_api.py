"""API model: gateway_api."""

from __future__ import annotations
