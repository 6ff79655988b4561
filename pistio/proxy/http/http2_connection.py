"""What both ends of an HTTP/2 connection share: credit returned as data is consumed, and
writing out whatever the h2 state machine has queued."""

from __future__ import annotations

import asyncio
import contextlib

import h2.config
import h2.connection
import h2.exceptions


def new_h2_connection(client_side: bool) -> h2.connection.H2Connection:
    """The h2 state machine both connection ends use: raw bytes headers, and no outbound
    validation or normalisation (the codecs write well-formed headers themselves)."""
    return h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    ))


class Http2ConnectionBase(asyncio.Protocol):
    """Subclasses set ``h2c``, ``transport`` and ``closed`` in their constructor."""

    h2c: h2.connection.H2Connection
    transport: asyncio.Transport | None
    closed: bool

    def acknowledge(self, size: int, stream_id: int) -> None:
        """Return flow-control credit for data the other side of the proxy has taken."""
        if size:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2c.acknowledge_received_data(size, stream_id)

    def flush(self) -> None:
        data = self.h2c.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)
