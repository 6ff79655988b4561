"""Deferred writes: held flushes run once the event loop's turn is over, in order, once."""

from __future__ import annotations

import asyncio

import uvloop

from pistio.proxy.http.deferred_writes import DeferredWrites, deferred_writes


class FakeConnection:
    """A codec's output side: ``out`` is queued, ``flush`` writes it (into ``log``)."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        self.name = name
        self.out: list[bytes] = []
        self.log = log

    def flush(self) -> None:
        out, self.out = self.out, []
        if out:
            self.log.append((self.name, b"".join(out)))


def test_held_flushes_wait_for_the_turn_and_keep_their_order() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        writes = DeferredWrites(loop)
        log: list[tuple[str, bytes]] = []
        a, b = FakeConnection("a", log), FakeConnection("b", log)
        a.out.append(b"response 1")
        writes.add(a)
        b.out.append(b"request 1")
        writes.add(b)
        a.out.append(b"+more")  # queued after the add: still part of the held write
        assert log == []  # nothing written inside the turn
        await asyncio.sleep(0)
        assert log == [("a", b"response 1+more"), ("b", b"request 1")]
        assert not writes.armed and writes.pending == []

    uvloop.run(scenario())


def test_a_connection_flushed_earlier_is_not_written_twice() -> None:
    async def scenario() -> None:
        writes = DeferredWrites(asyncio.get_running_loop())
        log: list[tuple[str, bytes]] = []
        conn = FakeConnection("c", log)
        conn.out.append(b"head")
        writes.add(conn)
        conn.flush()  # e.g. the connection closes: everything queued goes out now
        await asyncio.sleep(0)
        assert log == [("c", b"head")]

    uvloop.run(scenario())


def test_one_callback_per_turn_and_flush_pending_writes_at_once() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        writes = DeferredWrites(loop)
        log: list[tuple[str, bytes]] = []
        conns = [FakeConnection(str(i), log) for i in range(5)]
        for i, conn in enumerate(conns):
            conn.out.append(b"%d" % i)
            writes.add(conn)
        assert writes.armed
        writes.flush_pending()  # the synchronous driver's "end of turn"
        assert [name for name, _ in log] == ["0", "1", "2", "3", "4"]
        await asyncio.sleep(0)  # the scheduled turn end finds nothing left
        assert len(log) == 5
        conns[0].out.append(b"again")
        writes.add(conns[0])  # a new turn schedules again
        await asyncio.sleep(0)
        assert log[-1] == ("0", b"again")

    uvloop.run(scenario())


class BrokenConnection(FakeConnection):
    def flush(self) -> None:
        raise OSError("transport gone")


def test_a_failing_flush_does_not_hold_back_the_others() -> None:
    async def scenario() -> None:
        writes = DeferredWrites(asyncio.get_running_loop())
        log: list[tuple[str, bytes]] = []
        broken, fine = BrokenConnection("x", log), FakeConnection("ok", log)
        fine.out.append(b"reply")
        writes.add(broken)
        writes.add(fine)
        await asyncio.sleep(0)
        assert log == [("ok", b"reply")]

    uvloop.run(scenario())


def test_each_loop_has_its_own_writes() -> None:
    async def first() -> DeferredWrites:
        loop = asyncio.get_running_loop()
        assert deferred_writes(loop) is deferred_writes(loop)
        return deferred_writes(loop)

    one = uvloop.run(first())
    two = uvloop.run(first())
    assert one is not two
