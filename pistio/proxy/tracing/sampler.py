"""The HTTP connection manager's tracing decision (Envoy's ``Tracing::Decision``).

Envoy's percentages are fractions of 10000 (``random_sampling: 1.0`` = 100 of 10000). In order:

- ``x-client-trace-id`` present and the request falls under ``client_sampling``: traced;
- ``x-envoy-force-trace`` present: traced;
- otherwise the request falls under ``random_sampling``;
- and whatever the reason, it must also fall under ``overall_sampling``.

"Falls under" uses one number per request in [0, 10000): with the UUID request-id extension's
``use_request_id_for_trace_sampling`` (Envoy's default, kept on by Istio) it is the first 8 hex
digits of ``x-request-id`` modulo 10000, so every proxy that sees the same request id takes the
same decision; otherwise (or when the id is not hex) a random number.

The caller's own decision (B3 ``x-b3-sampled``/``x-b3-flags``, the ``b3`` state, the W3C
sampled flag) wins over this one, except that ``x-envoy-force-trace`` always samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pistio.proxy.http.headers import X_CLIENT_TRACE_ID, X_REQUEST_ID

X_ENVOY_FORCE_TRACE = b"x-envoy-force-trace"
DENOMINATOR = 10000

_getrandbits = random.getrandbits


def percent_to_numerator(percent: float) -> int:
    """``envoy.type.v3.Percent`` → a numerator over 10000 (Envoy's conversion, capped)."""
    return max(0, min(DENOMINATOR, round(percent * 100)))


def _stable_value(request_id: bytes | None) -> int:
    if request_id is not None and len(request_id) >= 8:
        try:
            return int(request_id[:8], 16) % DENOMINATOR
        except ValueError:
            pass
    return _getrandbits(32) % DENOMINATOR


@dataclass(frozen=True, slots=True)
class Sampler:
    random_sampling: int = DENOMINATOR  # numerators over 10000; Envoy's defaults are 100 %
    client_sampling: int = DENOMINATOR
    overall_sampling: int = DENOMINATOR
    use_request_id: bool = True

    def traced(self, index: dict[bytes, bytes]) -> bool:
        """The connection manager's decision for a request without a caller's decision."""
        rnd = -1  # computed once, only when a percentage below 100 % needs it
        if X_CLIENT_TRACE_ID in index and self.client_sampling > 0:
            if self.client_sampling < DENOMINATOR:
                rnd = self._value(index)
                traced = rnd < self.client_sampling
            else:
                traced = True
        else:
            traced = False
        if not traced:
            if X_ENVOY_FORCE_TRACE in index or self.random_sampling >= DENOMINATOR:
                traced = True
            elif self.random_sampling > 0:
                rnd = self._value(index)
                traced = rnd < self.random_sampling
        if traced and self.overall_sampling < DENOMINATOR:
            if rnd < 0:
                rnd = self._value(index)
            traced = rnd < self.overall_sampling
        return traced

    def _value(self, index: dict[bytes, bytes]) -> int:
        if self.use_request_id:
            return _stable_value(index.get(X_REQUEST_ID))
        return _getrandbits(32) % DENOMINATOR

    def sampled(self, index: dict[bytes, bytes], incoming: bool | None) -> bool:
        """This hop's sampling flag: forced, else the caller's, else ours."""
        if X_ENVOY_FORCE_TRACE in index:
            return True
        if incoming is not None:
            return incoming
        return self.traced(index)
