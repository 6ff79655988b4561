"""``GoAwayExtractor``: GOAWAY frames taken out of a peer's byte stream however the reads
split it, everything else passed to h2 unchanged and in order."""

from __future__ import annotations

import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

from pistio.proxy.http.http2_connection import GoAwayExtractor


def _goaway(last: int, code: int = 0, debug: bytes = b"") -> bytes:
    f = GoAwayFrame(0)
    f.last_stream_id, f.error_code, f.additional_data = last, code, debug
    return f.serialize()


def _frames() -> tuple[bytes, bytes, list[tuple[int, int]]]:
    """(the whole stream, the stream without its GOAWAYs, the GOAWAYs)."""
    settings = SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize()
    headers = HeadersFrame(3, data=b"\x88", flags=["END_HEADERS"]).serialize()
    data = DataFrame(3, data=b"x" * 300, flags=["END_STREAM"]).serialize()
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    first, second = _goaway(2**31 - 1), _goaway(3, 0, b"shutting down")
    whole = settings + first + headers + second + data + ping
    return whole, settings + headers + data + ping, [(2**31 - 1, 0), (3, 0)]


@pytest.mark.parametrize("size", [1, 2, 5, 9, 10, 17, 64, 4096])
def test_every_split_of_the_stream(size: int) -> None:
    whole, expected, goaways = _frames()
    ex = GoAwayExtractor()
    out, found = b"", []
    for i in range(0, len(whole), size):
        part, g = ex.strip(whole[i:i + size])
        out += part
        found += g
    assert out == expected
    assert found == goaways


def test_two_reads_at_every_boundary() -> None:
    whole, expected, goaways = _frames()
    for cut in range(len(whole) + 1):
        ex = GoAwayExtractor()
        a, ga = ex.strip(whole[:cut])
        b, gb = ex.strip(whole[cut:])
        assert a + b == expected, cut
        assert ga + gb == goaways, cut


def test_a_stream_without_goaway_is_passed_as_it_is() -> None:
    data = DataFrame(1, data=b"y" * 1000).serialize()
    ex = GoAwayExtractor()
    assert ex.strip(data) == (data, [])


def test_a_malformed_goaway_is_left_to_h2() -> None:
    short = b"\x00\x00\x04\x07\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x01"  # 4-byte body
    assert GoAwayExtractor().strip(short) == (short, [])


def test_a_clients_connection_preface_is_not_read_as_a_frame() -> None:
    """Downstream, the client's first 24 bytes are the preface (not a frame header)."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    whole, expected, goaways = _frames()
    for cut in range(0, len(preface) + 12):
        ex = GoAwayExtractor(len(preface))
        a, ga = ex.strip((preface + whole)[:cut])
        b, gb = ex.strip((preface + whole)[cut:])
        assert a + b == preface + expected, cut
        assert ga + gb == goaways, cut
