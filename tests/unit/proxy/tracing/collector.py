"""A tiny trace collector for tests: an HTTP/1.1 server on 127.0.0.1 that keeps every POST
(path, headers, body) and answers ``status`` (keep-alive)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Collector:
    status: int = 202
    port: int = 0
    reports: list[Report] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Collector:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError,
                                 asyncio.CancelledError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.reports.append(Report(path, headers, body))
                self.arrived.set()
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % self.status)
                await writer.drain()
        writer.close()

    def zipkin_spans(self) -> list[dict[str, Any]]:
        return [s for r in self.reports for s in json.loads(r.body)]

    async def wait_for(self, count: int, spans: Any, timeout: float = 10.0) -> list[Any]:
        """Until ``spans()`` (a function of the reports) returns at least ``count`` items."""
        async with asyncio.timeout(timeout):
            while len(found := spans()) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return found
