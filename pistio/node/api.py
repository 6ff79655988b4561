"""The node's control socket: one JSON request and one JSON answer per connection.

The CLI talks to the running node through ``<state dir>/node.sock`` (root-only, mode 600).
Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("pistio.node.api")

MAX_REQUEST = 64 * 1024 * 1024
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class NodeUnavailable(RuntimeError):
    """No node answers on the socket."""


class ApiServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                       limit=MAX_REQUEST)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                handler = self.handlers[request["op"]]
            except (ValueError, KeyError, TypeError):
                answer: dict[str, Any] = {"ok": False, "error": "bad request"}
            else:
                try:
                    answer = await handler(request)
                except Exception as exc:  # one failing request must not take the node down
                    log.exception("request %s failed", request.get("op"))
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def call(path: Path, op: str, timeout: float = 120.0, **fields: Any) -> dict[str, Any]:
    """Send one request to the node and return its answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise NodeUnavailable(f"the node is not running ({path}: {exc.strerror})") from exc
        sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError as exc:
        raise NodeUnavailable(f"the node did not answer {op!r} within {timeout:.0f}s") from exc
    finally:
        sock.close()
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise NodeUnavailable(f"the node closed the connection during {op!r}") from exc


def alive(path: Path) -> bool:
    try:
        return bool(call(path, "ping", timeout=5).get("ok"))
    except NodeUnavailable:
        return False
