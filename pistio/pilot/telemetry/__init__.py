"""Istio's telemetry configuration at the control plane (``pilot/pkg/model/telemetry*.go``,
``networking/core/tracing.go``, ``accesslog.go``).

:mod:`.resolver` finds the Telemetry resources that apply to a proxy; :mod:`.metrics`,
:mod:`.access_logs` and :mod:`.tracing` merge them with the mesh config's providers and
build what the listeners carry: the ``istio.metadata_exchange`` and ``istio.stats`` filters,
``access_log`` entries, and the connection manager's ``tracing``. Results are memoized per
push context (:func:`.resolver.memo`), keyed by what they depend on.
"""
