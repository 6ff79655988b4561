"""Tests of the control plane: push context and xDS builders."""
