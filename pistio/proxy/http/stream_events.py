"""Why a stream ended early: Envoy's stream reset reasons and the response flags they map to.

Envoy names every abnormal end of a stream twice: a *reset reason* (the words that appear in
the local reply body, "upstream connect error or disconnect/reset before headers. reset reason:
connection failure") and a *response flag* (the short code in access logs, ``%RESPONSE_FLAGS%``:
UF, UC, URX...). The codecs report reasons; the router and the access log use the flags.
"""

from __future__ import annotations

import enum


class ResponseFlag(enum.Enum):
    """Envoy's response flags (access-log ``%RESPONSE_FLAGS%``), short name as value."""

    NO_HEALTHY_UPSTREAM = "UH"
    UPSTREAM_CONNECTION_FAILURE = "UF"
    UPSTREAM_OVERFLOW = "UO"
    NO_ROUTE_FOUND = "NR"
    UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
    NO_CLUSTER_FOUND = "NC"
    DURATION_TIMEOUT = "DT"
    DOWNSTREAM_CONNECTION_TERMINATION = "DC"
    LOCAL_RESET = "LR"
    UPSTREAM_REMOTE_RESET = "UR"
    UPSTREAM_CONNECTION_TERMINATION = "UC"
    UPSTREAM_REQUEST_TIMEOUT = "UT"
    STREAM_IDLE_TIMEOUT = "SI"
    DOWNSTREAM_PROTOCOL_ERROR = "DPE"
    UPSTREAM_PROTOCOL_ERROR = "UPE"
    UPSTREAM_MAX_STREAM_DURATION_REACHED = "UMSDR"
    RATE_LIMITED = "RL"
    DELAY_INJECTED = "DI"
    FAULT_INJECTED = "FI"


class UpstreamFailure(enum.Enum):
    """How an upstream request failed; value is ``(Envoy reset reason text, response flag)``.

    Only failures before the response headers reach the downstream become a local reply
    (503 with Envoy's body); later ones reset the downstream connection.
    """

    CONNECTION_FAILURE = ("connection failure", ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
    CONNECTION_TIMEOUT = ("connection timeout", ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
    CONNECTION_TERMINATION = (
        "connection termination",
        ResponseFlag.UPSTREAM_CONNECTION_TERMINATION,
    )
    REMOTE_RESET = ("remote reset", ResponseFlag.UPSTREAM_REMOTE_RESET)
    OVERFLOW = ("overflow", ResponseFlag.UPSTREAM_OVERFLOW)
    PROTOCOL_ERROR = ("protocol error", ResponseFlag.UPSTREAM_PROTOCOL_ERROR)
    LOCAL_RESET = ("local reset", ResponseFlag.LOCAL_RESET)

    @property
    def reset_reason(self) -> str:
        return self.value[0]

    @property
    def response_flag(self) -> ResponseFlag:
        return self.value[1]

    def local_reply_body(self) -> bytes:
        """The body Envoy's router sends when no response headers were received."""
        return (
            "upstream connect error or disconnect/reset before headers. reset reason: "
            + self.reset_reason
        ).encode()
