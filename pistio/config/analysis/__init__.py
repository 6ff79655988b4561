"""Configuration analysis as ``istioctl analyze`` does it: Istio's analyzers and message codes.

:func:`~pistio.config.analysis.runner.analyze_paths` loads files, validates them, runs the
analyzers and returns :class:`~pistio.config.analysis.messages.Message` objects that read as
istioctl's (``Error [IST0101] (VirtualService default/reviews file.yaml:12) ...``).
"""
