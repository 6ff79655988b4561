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


_GOAWAY = 0x7


class GoAwayExtractor:
    """Takes GOAWAY frames out of the bytes a peer sends before h2 sees them.

    h2 closes its state machine on a received GOAWAY, and then refuses every later frame —
    also the responses of the streams the GOAWAY lets finish (``last_stream_id``, RFC 9113
    §6.8), which a server shutting down gracefully (gRPC's max connection age, an Envoy
    draining) sends next; and a client's GOAWAY would leave the responses of its open
    streams unsendable. The connection handles the GOAWAYs itself instead. Frame
    boundaries are followed across reads; a frame header split between reads is held back
    until its type is known.
    """

    __slots__ = ("_skip", "_held")

    def __init__(self, skip: int = 0) -> None:
        # Bytes of the current frame still to come (at first: a client's connection preface,
        # which is not a frame).
        self._skip = skip
        self._held = b""  # an incomplete frame header (or GOAWAY frame) held back

    def strip(self, data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
        """(the bytes for h2, the GOAWAYs found as (last_stream_id, error_code))."""
        if self._held:
            data, self._held = self._held + data, b""
        n = len(data)
        pos = self._skip
        if pos >= n:
            self._skip = pos - n
            return data, []
        goaways: list[tuple[int, int]] = []
        kept: list[bytes] | None = None
        start = 0
        end_feed = n
        while True:
            if pos + 9 > n:  # the next frame header is not complete: hold it back
                self._held, self._skip, end_feed = data[pos:], 0, pos
                break
            length = int.from_bytes(data[pos:pos + 3], "big")
            end = pos + 9 + length
            if data[pos + 3] == _GOAWAY and length >= 8:
                if end > n:  # wait for the whole GOAWAY
                    self._held, self._skip, end_feed = data[pos:], 0, pos
                    break
                body = data[pos + 9:pos + 17]
                goaways.append((int.from_bytes(body[:4], "big") & 0x7FFFFFFF,
                                int.from_bytes(body[4:], "big")))
                if kept is None:
                    kept = []
                kept.append(data[start:pos])
                start = end
            if end >= n:
                self._skip = end - n
                break
            pos = end
        if kept is None:
            return (data if end_feed == n else data[:end_feed]), goaways
        kept.append(data[start:end_feed])
        return b"".join(kept), goaways
