"""Back-pressure between the two sides of a proxied stream.

A transport tells its protocol ``pause_writing`` when its write buffer passes the high-water
mark and ``resume_writing`` when it drains below the low-water mark. A proxy answers by
pausing *reading* on the peer transport, so bytes wait in the kernel's socket buffers (and
the sender's) instead of in our memory: this is Envoy's ``per_connection_buffer_limit_bytes``
watermark scheme, and uvicorn's small flow-control class, shaped for a relay.

Several independent reasons can hold reading paused at once (the peer is slow, a pipelined
request waits its turn, the upstream connection is still being set up), so the gate keeps a
set of reason bits and touches the transport only on the first pause and the last resume.
"""

from __future__ import annotations

import asyncio

# Reasons a downstream or upstream transport stops reading (bit flags).
PEER_WRITE_BLOCKED = 1
PIPELINED_REQUEST_WAITING = 2
UPSTREAM_CONNECTING = 4

# The write buffer sizes that raise pause_writing/resume_writing (uvloop's defaults are the
# same order; set explicitly so the bound on buffered bytes per direction is known).
WRITE_HIGH_WATER = 64 * 1024
WRITE_LOW_WATER = 16 * 1024


class ReadGate:
    """Pauses a transport's reading while any reason holds; resumes when none does."""

    __slots__ = ("_transport", "_reasons")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._reasons = 0

    @property
    def paused(self) -> bool:
        return self._reasons != 0

    def pause(self, reason: int) -> None:
        if self._reasons == 0:
            self._transport.pause_reading()
        self._reasons |= reason

    def resume(self, reason: int) -> None:
        if self._reasons & reason:
            self._reasons &= ~reason
            if self._reasons == 0 and not self._transport.is_closing():
                self._transport.resume_reading()
