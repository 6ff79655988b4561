"""A tiny gRPC echo server for the proxyless gRPC tests: no protoc, raw bytes in and out.

``/echo.Echo/Call`` answers with the server's version name (``v1``, ``v2``). A call with
metadata ``x-fail-first: N`` fails with UNAVAILABLE for the first N attempts of its request
key (the request payload), so a test can see retries happen: the server counts attempts
per key.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent import futures

import grpc

METHOD = "/echo.Echo/Call"
FAIL_FIRST_HEADER = "x-fail-first"


class EchoServer:
    """One gRPC server on 127.0.0.1 (an ephemeral port) that answers with ``version``."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.attempts: Counter[bytes] = Counter()
        self.calls = 0
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler(
            "echo.Echo",
            {"Call": grpc.unary_unary_rpc_method_handler(self._call)},
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def _call(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        meta = dict(context.invocation_metadata())
        with self._lock:
            self.calls += 1
            self.attempts[request] += 1
            attempt = self.attempts[request]
        fail_first = int(meta.get(FAIL_FIRST_HEADER, "0") or 0)
        if attempt <= fail_first:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.version}: attempt {attempt} fails")
        return self.version.encode()

    def start(self) -> EchoServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)
