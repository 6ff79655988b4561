"""Validation rules for kube kinds."""

from __future__ import annotations
