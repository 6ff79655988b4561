"""Running a listener's listener filters on an accepted socket: Envoy's listener filter stage.

``original_dst`` recovers the destination iptables rewrote; ``tls_inspector`` and
``http_inspector`` peek (``MSG_PEEK``) at the first bytes and never consume them, so the filter
chain chosen afterwards — and its TLS or HTTP codec — reads the connection from its first
byte. The result is the :class:`~pistio.proxy.config.listener_config.ConnInfo` that
``ListenerConfig.select_filter_chain`` takes.

Waiting for "more bytes" on a socket whose bytes stay unread cannot use a level-triggered
readiness callback alone (it would fire again at once); the socket's ``SO_RCVLOWAT`` is raised
to one byte more than already seen, so the event loop wakes only when something new arrives
(or the peer closes), and it is put back to 1 before the socket is handed on. A wake-up with no
new bytes therefore means the peer will send no more (it half-closed): the inspectors decide on
what they have — a short request followed by ``shutdown(SHUT_WR)`` still gets proxied, where
Envoy would close it. A peer that closes before sending anything is closed
(``downstream_listener_filter_remote_close``).

Bounds: at most ``MAX_INSPECT_SIZE`` (64 KiB) is peeked; ``listener_filters_timeout`` (Envoy's
default 15 s; Istio sends its ``protocolDetectionTimeout``, 0 = no limit, with
``continue_on_listener_filters_timeout: true``) limits the wait. On timeout the connection goes
on with what was found when ``continue_on_timeout`` is set, else it is closed
(``downstream_pre_cx_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from pistio.proxy.config.listener_config import (
    ConnInfo,
    ListenerFilterConfig,
    ListenerFilterKind,
)
from pistio.proxy.filters.listener.http_inspector import (
    MAX_INSPECT_SIZE,
    HttpDetection,
    inspect_http,
)
from pistio.proxy.filters.listener.tls_inspector import (
    MAX_PEEK_BYTES as TLS_MAX_PEEK_BYTES,
)
from pistio.proxy.filters.listener.tls_inspector import (
    TlsDetection,
    inspect_client_hello,
)
from pistio.proxy.network.original_dst import original_destination
from pistio.proxy.stats.store import Counter, StatsStore

SO_RCVLOWAT = getattr(socket, "SO_RCVLOWAT", 18)


class InspectionVerdict(enum.Enum):
    """How the listener filter stage ended; anything but ``DONE`` and ``TIMEOUT_CONTINUED``
    closes the connection."""

    DONE = "done"
    TIMEOUT_CONTINUED = "timeout_continued"
    TIMEOUT = "timeout"  # listener.downstream_pre_cx_timeout
    REMOTE_CLOSE = "remote_close"  # listener.downstream_listener_filter_remote_close
    ERROR = "error"  # listener.downstream_listener_filter_error (too large, read error)


@dataclass(frozen=True, slots=True)
class Inspection:
    verdict: InspectionVerdict
    conn: ConnInfo | None  # None when the connection is to be closed

    @property
    def accepted(self) -> bool:
        return self.conn is not None


class InspectorStats:
    """Envoy's ``tls_inspector.*`` and ``http_inspector.*`` counters (process-wide names)."""

    __slots__ = ("tls_found", "tls_not_found", "sni_found", "sni_not_found", "alpn_found",
                 "alpn_not_found", "client_hello_too_large", "http10_found", "http11_found",
                 "http2_found", "http_not_found", "read_error")

    def __init__(self, store: StatsStore) -> None:
        for name in self.__slots__:
            family = "http_inspector." if name.startswith(("http", "read")) else "tls_inspector."
            counter: Counter = store.counter(family + name)
            setattr(self, name, counter)


async def inspect(
    sock: socket.socket,
    loop: asyncio.AbstractEventLoop,
    filters: Sequence[ListenerFilterConfig],
    timeout: float | None,
    *,
    continue_on_timeout: bool = True,
    original_dst: tuple[str, int] | None = None,
    stats: InspectorStats | None = None,
) -> Inspection:
    """Run ``filters`` (a listener's compiled ``listener_filters``) on an accepted, connected
    socket and describe the connection for filter chain selection.

    ``original_dst``: the destination already recovered by the accepting listener (the
    ``use_original_dst`` hand-off from 15001); otherwise the ``original_dst`` filter, when
    present, recovers it here, and without it the socket's local address is the destination.
    ``timeout`` is the listener's ``listener_filters_timeout`` (``None``: no limit). The socket
    is left non-blocking and with nothing consumed."""
    try:
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return Inspection(InspectionVerdict.REMOTE_CLOSE, None)
    src_ip, src_port = _unmap(peer[0]), peer[1]
    local_port = local[1]
    if original_dst is None:
        if any(f.kind is ListenerFilterKind.ORIGINAL_DST and f.enabled_for(local_port)
               for f in filters):
            try:
                original_dst = original_destination(sock)
            except OSError:
                return Inspection(InspectionVerdict.REMOTE_CLOSE, None)
        else:
            original_dst = (_unmap(local[0]), local_port)
    dst_ip, dst_port = original_dst
    tls = any(f.kind is ListenerFilterKind.TLS_INSPECTOR and f.enabled_for(dst_port)
              for f in filters)
    http = any(f.kind is ListenerFilterKind.HTTP_INSPECTOR and f.enabled_for(dst_port)
               for f in filters)
    if not tls and not http:
        return Inspection(InspectionVerdict.DONE, ConnInfo(dst_ip, dst_port, src_ip, src_port))
    sock.setblocking(False)
    sniffer = _Sniffer(tls, http, stats)
    verdict = await _peek_until_decided(sock, loop, sniffer, timeout)
    if verdict is InspectionVerdict.TIMEOUT and continue_on_timeout:
        verdict = InspectionVerdict.TIMEOUT_CONTINUED
    if verdict not in (InspectionVerdict.DONE, InspectionVerdict.TIMEOUT_CONTINUED):
        return Inspection(verdict, None)
    sniffer.finish()
    return Inspection(verdict, ConnInfo(
        dst_ip, dst_port, src_ip, src_port,
        server_name=sniffer.server_name,
        transport_protocol=sniffer.transport_protocol,
        application_protocols=sniffer.application_protocols,
    ))


def _unmap(ip: str) -> str:
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class _Sniffer:
    """The TLS then HTTP inspector's decisions on the bytes peeked so far."""

    __slots__ = ("tls_pending", "http_pending", "stats", "server_name", "transport_protocol",
                 "application_protocols", "failed", "limit")

    def __init__(self, tls: bool, http: bool, stats: InspectorStats | None) -> None:
        self.tls_pending = tls
        self.http_pending = http
        self.stats = stats
        self.server_name = ""
        self.transport_protocol = "raw_buffer"
        self.application_protocols: tuple[str, ...] = ()
        self.failed = False
        self.limit = TLS_MAX_PEEK_BYTES if tls and not http else MAX_INSPECT_SIZE

    @property
    def decided(self) -> bool:
        return not (self.tls_pending or self.http_pending)

    def feed(self, data: bytes) -> None:
        stats = self.stats
        if self.tls_pending:
            result = inspect_client_hello(data)
            state = result.state
            if state is TlsDetection.NEED_MORE and len(data) >= TLS_MAX_PEEK_BYTES:
                state = TlsDetection.TOO_LARGE
            if state is TlsDetection.NEED_MORE:
                return  # the HTTP inspector runs after the TLS one, as in Envoy's order
            self.tls_pending = False
            if state is TlsDetection.TOO_LARGE:
                self.failed = True
                if stats is not None:
                    stats.client_hello_too_large.value += 1
                return
            if state is TlsDetection.TLS:
                self.http_pending = False  # the HTTP inspector skips TLS connections
                self.transport_protocol = "tls"
                self.server_name = result.server_name
                self.application_protocols = result.alpn
                if stats is not None:
                    stats.tls_found.value += 1
                    (stats.sni_found if result.server_name else stats.sni_not_found).value += 1
                    (stats.alpn_found if result.alpn else stats.alpn_not_found).value += 1
                return
            if stats is not None:
                stats.tls_not_found.value += 1
        if self.http_pending:
            detection, protocol = inspect_http(data)
            if detection is HttpDetection.NEED_MORE:
                return
            self.http_pending = False
            if detection is HttpDetection.TOO_LARGE:
                self.failed = True
                if stats is not None:
                    stats.read_error.value += 1
            elif detection is HttpDetection.HTTP:
                self.application_protocols = (protocol,)
                if stats is not None:
                    counter = {"h2c": stats.http2_found, "http/1.1": stats.http11_found}.get(
                        protocol, stats.http10_found)
                    counter.value += 1
            elif stats is not None:
                stats.http_not_found.value += 1

    def finish(self) -> None:
        """No more bytes will be looked at: undecided inspectors found nothing."""
        if self.stats is not None:
            if self.tls_pending:
                self.stats.tls_not_found.value += 1
            if self.http_pending:
                self.stats.http_not_found.value += 1
        self.tls_pending = self.http_pending = False


async def _peek_until_decided(
    sock: socket.socket,
    loop: asyncio.AbstractEventLoop,
    sniffer: _Sniffer,
    timeout: float | None,
) -> InspectionVerdict:
    deadline = None if timeout is None else loop.time() + timeout
    seen = 0
    lowat = 1
    fd = sock.fileno()
    try:
        while True:
            try:
                data = sock.recv(sniffer.limit, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                return InspectionVerdict.REMOTE_CLOSE
            if data is not None:
                if not data:
                    return InspectionVerdict.REMOTE_CLOSE if seen == 0 else InspectionVerdict.DONE
                if len(data) == seen:
                    # Readable with nothing new: the peer half-closed after these bytes.
                    return InspectionVerdict.DONE
                seen = len(data)
                sniffer.feed(data)
                if sniffer.failed:
                    return InspectionVerdict.ERROR
                if sniffer.decided:
                    return InspectionVerdict.DONE
                if seen >= sniffer.limit:
                    return InspectionVerdict.ERROR
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVLOWAT, seen + 1)
                    lowat = seen + 1
                except OSError:
                    return InspectionVerdict.DONE  # cannot wait for "more" without spinning
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return InspectionVerdict.TIMEOUT
            if not await _readable(loop, fd, remaining):
                return InspectionVerdict.TIMEOUT
    finally:
        if lowat != 1:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVLOWAT, 1)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable (True) or ``timeout`` passes (False)."""
    waiter: asyncio.Future[bool] = loop.create_future()

    def wake(value: bool) -> None:
        if not waiter.done():
            waiter.set_result(value)

    loop.add_reader(fd, wake, True)
    timer = loop.call_later(timeout, wake, False) if timeout is not None else None
    try:
        return await waiter
    finally:
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
