"""API model: kube."""

from __future__ import annotations
