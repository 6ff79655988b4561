"""Span exporters' common part: batching, bounded buffering, a sender task, stats.

Spans wait in the worker until ``min_flush_spans`` (Envoy's 5) are there or the flush
interval (Envoy's 5 s, runtime ``tracing.<tracer>.flush_interval_ms``; here the environment
variable ``PISTIO_TRACING_FLUSH_INTERVAL_MS``) has passed since the first of them; then they
go out as one report. Reports are sent one after another by a task of the worker's event
loop, so the request path only appends to a list. At most ``max_pending`` spans wait (sent
or not); more are dropped and counted (``spans_dropped``): a collector that is down costs
bounded memory.

The collector is a host of an ordinary cluster of the worker's cluster manager, picked by
its load balancer for each report. Stats (``tracing.zipkin.*``, ``tracing.opentelemetry.*``):
``spans_sent``, ``timer_flushed``, ``reports_sent`` (2xx), ``reports_dropped`` (the collector
refused them), ``reports_failed`` (no answer, connection error, no healthy host),
``reports_skipped_no_cluster``, ``spans_dropped``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from pistio.proxy.tracing.span import Span

if TYPE_CHECKING:
    from pistio.proxy.runtime.cluster_manager import ClusterManager
    from pistio.proxy.stats.store import StatsStore
    from pistio.proxy.tracing.config import Provider
    from pistio.proxy.tracing.node import LocalNode

log = logging.getLogger("pistio.proxy.tracing")

FLUSH_INTERVAL_ENV = "PISTIO_TRACING_FLUSH_INTERVAL_MS"
DEFAULT_FLUSH_INTERVAL = 5.0
MIN_FLUSH_SPANS = 5
DEFAULT_MAX_PENDING = 10000


def flush_interval() -> float:
    raw = os.environ.get(FLUSH_INTERVAL_ENV)
    if raw:
        try:
            return max(0.001, int(raw) / 1000)
        except ValueError:
            log.warning("%s=%r is not a number of milliseconds; using %.0f s",
                        FLUSH_INTERVAL_ENV, raw, DEFAULT_FLUSH_INTERVAL)
    return DEFAULT_FLUSH_INTERVAL


class SpanExporter:
    """Batches spans and hands each batch to :meth:`send` (one report at a time)."""

    stat_prefix = "tracing"

    def __init__(self, loop: asyncio.AbstractEventLoop, clusters: ClusterManager,
                 store: StatsStore, cluster_name: str, *, max_pending: int = DEFAULT_MAX_PENDING,
                 min_flush: int = MIN_FLUSH_SPANS, interval: float | None = None) -> None:
        self.loop = loop
        self.clusters = clusters
        self.cluster_name = cluster_name
        self.max_pending = max_pending
        self.min_flush = min_flush
        self.interval = flush_interval() if interval is None else interval
        self.pending: list[Span] = []
        self.batches: deque[list[Span]] = deque()
        self.queued = 0  # spans in pending and batches
        self._timer: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task[None] | None = None
        p = self.stat_prefix
        self.spans_sent = store.counter(f"{p}.spans_sent")
        self.spans_dropped = store.counter(f"{p}.spans_dropped")
        self.timer_flushed = store.counter(f"{p}.timer_flushed")
        self.reports_sent = store.counter(f"{p}.reports_sent")
        self.reports_dropped = store.counter(f"{p}.reports_dropped")
        self.reports_failed = store.counter(f"{p}.reports_failed")
        self.reports_skipped_no_cluster = store.counter(f"{p}.reports_skipped_no_cluster")

    # --- the request path --------------------------------------------------------------------

    def add(self, span: Span) -> None:
        if self.queued >= self.max_pending:
            self.spans_dropped.value += 1
            return
        self.pending.append(span)
        self.queued += 1
        if len(self.pending) >= self.min_flush:
            self.flush()
        elif self._timer is None:
            self._timer = self.loop.call_later(self.interval, self._on_timer)

    # --- flushing ------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        self.timer_flushed.value += 1
        self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.pending:
            return
        self.batches.append(self.pending)
        self.pending = []
        if self._sender is None:
            self._sender = self.loop.create_task(self._send_batches())

    async def _send_batches(self) -> None:
        try:
            while self.batches:
                batch = self.batches.popleft()
                try:
                    await self._report(batch)
                finally:
                    self.queued -= len(batch)
        finally:
            self._sender = None

    async def _report(self, batch: list[Span]) -> None:
        runtime = self.clusters.get(self.cluster_name)
        if runtime is None:
            self.reports_skipped_no_cluster.value += 1
            return
        host = runtime.lb.choose_host()
        if host is None:
            self.reports_failed.value += 1
            return
        self.spans_sent.value += len(batch)
        try:
            ok = await self.send(host.address, host.port, batch)
        except (TimeoutError, OSError, ConnectionError, ValueError) as err:
            self.reports_failed.value += 1
            log.debug("trace report to %s:%d failed: %s", host.address, host.port, err)
            return
        except Exception as err:  # a broken exporter must not kill the sender task
            self.reports_failed.value += 1
            log.warning("trace report to %s:%d failed: %r", host.address, host.port, err)
            return
        if ok:
            self.reports_sent.value += 1
        else:
            self.reports_dropped.value += 1

    async def send(self, address: str, port: int, batch: list[Span]) -> bool:
        """Deliver one report; ``True`` when the collector accepted it."""
        raise NotImplementedError

    async def drain(self, timeout: float = 5.0) -> None:
        """Send what is waiting (worker shutdown, tests)."""
        self.flush()
        sender = self._sender
        if sender is not None:
            await asyncio.wait_for(asyncio.shield(sender), timeout)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class HttpCollectorClient:
    """HTTP/1.1 POSTs to collector hosts over one kept-alive connection (reopened when the
    host changes or the collector closes it). Answers with a body of ``content-length`` or
    ``chunked`` encoding; the status is what counts."""

    def __init__(self) -> None:
        self._key: tuple[str, int] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._key = self._reader = self._writer = None

    async def post(self, address: str, port: int, path: str, authority: str,
                   content_type: str, body: bytes, headers: tuple[tuple[str, str], ...] = (),
                   timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(
                self._post(address, port, path, authority, content_type, body, headers),
                timeout)
        except BaseException:
            self.close()
            raise

    async def _post(self, address: str, port: int, path: str, authority: str,
                    content_type: str, body: bytes, headers: tuple[tuple[str, str], ...]
                    ) -> tuple[int, bytes]:
        if self._key != (address, port) or self._writer is None or self._writer.is_closing():
            self.close()
            self._reader, self._writer = await asyncio.open_connection(address, port)
            self._key = (address, port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        writer.write((f"POST {path} HTTP/1.1\r\nhost: {authority}\r\n"
                      f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
                      f"{extra}\r\n").encode("latin-1") + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            data = await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            data = await _read_chunked(reader)
        else:
            data = b""
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, data


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # trailers not expected: the final CRLF
            return b"".join(out)
        out.append(await reader.readexactly(size))
        await reader.readexactly(2)


# One exporter per provider config per worker (cluster manager), shared by every connection
# manager that names it; a config update that keeps the provider keeps the exporter.
_EXPORTERS: weakref.WeakKeyDictionary[Any, dict[Provider, SpanExporter]] = (
    weakref.WeakKeyDictionary())


def exporter_for(provider: Provider, loop: asyncio.AbstractEventLoop,
                 clusters: ClusterManager, store: StatsStore, node: LocalNode) -> SpanExporter:
    from pistio.proxy.tracing.config import ZipkinProvider

    exporters = _EXPORTERS.setdefault(clusters, {})
    exporter = exporters.get(provider)
    if exporter is None:
        if isinstance(provider, ZipkinProvider):
            from pistio.proxy.tracing.zipkin import ZipkinExporter

            exporter = ZipkinExporter(provider, loop, clusters, store, node)
        elif provider.transport == "grpc":
            from pistio.proxy.tracing.otlp import OtlpGrpcExporter

            exporter = OtlpGrpcExporter(provider, loop, clusters, store, node)
        else:
            from pistio.proxy.tracing.otlp import OtlpHttpExporter

            exporter = OtlpHttpExporter(provider, loop, clusters, store, node)
        exporters[provider] = exporter
    return exporter


def all_exporters() -> list[SpanExporter]:
    return [e for group in _EXPORTERS.values() for e in group.values()]


def close_exporters(clusters: ClusterManager) -> None:
    """Stop the exporters of one worker (its cluster manager); spans still waiting are lost,
    as in Envoy at shutdown."""
    for exporter in _EXPORTERS.pop(clusters, {}).values():
        exporter.close()
