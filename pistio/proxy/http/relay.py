"""A minimal HTTP/1.1 proxy: downstream codec → pick an upstream → pooled upstream connection.

This is the data path without the route table: ``pick_upstream(head)`` returns an upstream
address or a local reply. ``pistio proxy`` puts the HTTP connection manager and the router
filter in this seat instead (``pistio.proxy.http.connection_manager``,
``pistio.proxy.router``); the relay stays as the bare codec path the data-plane benchmark
measures:

    python -m pistio.proxy.http.relay --listen 127.0.0.1:15001 --upstream 127.0.0.1:8080

Workers are processes sharing the listening port through ``SO_REUSEPORT`` (the kernel spreads
connections across them), each with its own uvloop, pools and deadline sweeper.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

import uvloop

from pistio.proxy.http.codec_options import HttpConnectionOptions
from pistio.proxy.http.headers import RequestHead, RequestIdGenerator
from pistio.proxy.http.http1_downstream import Http1ServerConnection, Http1Stream
from pistio.proxy.http.timeouts import DeadlineSweeper, tick_for
from pistio.proxy.upstream.connection_pool import UpstreamHttpOptions, UpstreamPools


@dataclass(frozen=True, slots=True)
class LocalReplyDecision:
    """Answer from the proxy instead of an upstream (no route: 404, direct response...)."""

    status: int
    body: bytes | None = None


PickUpstream = Callable[[RequestHead], "tuple[str, int] | LocalReplyDecision"]


class Relay:
    """The stream handler: sends each request where ``pick_upstream`` says."""

    def __init__(
        self,
        pick_upstream: PickUpstream,
        options: HttpConnectionOptions,
        upstream_options: UpstreamHttpOptions | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._pick = pick_upstream
        self.options = options
        upstream_options = upstream_options or UpstreamHttpOptions()
        self.sweeper = DeadlineSweeper(
            self.loop,
            tick_for(
                options.request_headers_timeout,
                options.idle_timeout,
                upstream_options.idle_timeout,
            ),
        )
        self.pools = UpstreamPools(self.loop, upstream_options, self.sweeper)
        self._request_ids = RequestIdGenerator()

    def on_request(self, stream: Http1Stream) -> None:
        target = self._pick(stream.head)
        if type(target) is tuple:
            self.pools.get(target).acquire(stream)
        else:
            stream.send_local_reply(target.status, target.body)  # type: ignore[union-attr]

    def protocol(self) -> Http1ServerConnection:
        return Http1ServerConnection(self, self.options, self.sweeper, self._request_ids)

    def close(self) -> None:
        self.pools.close()
        self.sweeper.close()


def fixed_upstream(address: tuple[str, int]) -> PickUpstream:
    """Every request to one upstream address."""

    def pick(head: RequestHead) -> tuple[str, int]:
        return address

    return pick


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _serve(listen: tuple[str, int], upstream: tuple[str, int], server_name: bytes) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(fixed_upstream(upstream), HttpConnectionOptions(server_name=server_name))
    server = await loop.create_server(relay.protocol, sock=_listening_socket(*listen))
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await stop
    finally:
        server.close()
        relay.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pistio.proxy.http.relay")
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT")
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server-name", default="istio-envoy")
    args = parser.parse_args(argv)

    def run() -> None:
        uvloop.run(_serve(args.listen, args.upstream, args.server_name.encode()))

    if args.workers <= 1:
        run()
        return 0
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            try:
                run()
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
