"""A small httpbin (https://httpbin.org) for the mesh examples, stdlib only.

GET /get /headers /ip /user-agent /uuid, /status/<code>[,<code>...] and /delay/<n> (any
method; the delay is capped at 10 s), /anything[/...] (any method), POST /post, PUT /put,
PATCH /patch, DELETE /delete, and an HTML index at /. JSON shapes follow httpbin's."""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

MAX_DELAY = 10.0
MAX_BODY = 10 * 1024 * 1024
METHOD_PATHS = {"/get": "GET", "/post": "POST", "/put": "PUT", "/patch": "PATCH",
                "/delete": "DELETE"}

INDEX = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>httpbin</title></head>
<body><h1>httpbin</h1><p>A simple HTTP Request &amp; Response Service.</p>
<ul>
<li><a href="/get">/get</a> the request's query parameters, headers, origin</li>
<li><a href="/headers">/headers</a> the request's headers</li>
<li><a href="/ip">/ip</a> the requester's address</li>
<li><a href="/uuid">/uuid</a> a UUID4</li>
<li><a href="/status/418">/status/:code</a> that status code</li>
<li><a href="/delay/1">/delay/:n</a> a response after n seconds (at most 10)</li>
<li><a href="/anything">/anything</a> anything passed in the request</li>
<li>/post, /put, /patch, /delete the request's data</li>
</ul></body></html>
"""


def _flatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """httpbin's multidict rendering: a single value as a string, repeats as a list."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key not in out:
            out[key] = value
        elif isinstance(out[key], list):
            out[key].append(value)
        else:
            out[key] = [out[key], value]
    return out


class HttpbinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "httpbin"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    # --- request facts ---

    def _headers_json(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.headers.items():
            title = "-".join(p.capitalize() for p in name.split("-"))
            out[title] = f"{out[title]},{value}" if title in out else value
        return out

    def _origin(self) -> str:
        forwarded = self.headers.get("X-Forwarded-For")
        return forwarded.split(",")[0].strip() if forwarded else self.client_address[0]

    def _url(self) -> str:
        host = self.headers.get("Host") or f"{self.server.server_address[0]}"
        return f"http://{host}{self.path}"

    def _args(self) -> dict[str, Any]:
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        return _flatten(parse_qsl(query, keep_blank_values=True))

    def _body_json(self, body: bytes, *, method: bool) -> dict[str, Any]:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        text = body.decode("utf-8", "replace")
        form: dict[str, Any] = {}
        data = text
        if ctype == "application/x-www-form-urlencoded":
            form, data = _flatten(parse_qsl(text, keep_blank_values=True)), ""
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        out: dict[str, Any] = {"args": self._args(), "data": data, "files": {}, "form": form,
                               "headers": self._headers_json(), "json": parsed}
        if method:
            out["method"] = self.command
        out |= {"origin": self._origin(), "url": self._url()}
        return out

    # --- responses ---

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, (json.dumps(obj, indent=2) + "\n").encode())

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _status(self, spec: str) -> None:
        try:
            codes = [int(c) for c in spec.split(",") if c]
            if not codes or any(not 100 <= c <= 599 for c in codes):
                raise ValueError(spec)
        except ValueError:
            self._send(400, b"Invalid status code", "text/plain; charset=utf-8")
            return
        self._send(random.choice(codes), b"", "text/plain; charset=utf-8")

    def _delay(self, spec: str, body: bytes) -> None:
        try:
            seconds = float(spec)
        except ValueError:
            self._send(400, b"Invalid delay", "text/plain; charset=utf-8")
            return
        time.sleep(min(max(seconds, 0.0), MAX_DELAY))
        out = self._body_json(body, method=False)
        del out["json"]
        self._json(out)

    def _handle(self) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send(413, b"Request body too large", "text/plain; charset=utf-8")
            return
        path = self.path.split("?", 1)[0]
        method = self.command if self.command != "HEAD" else "GET"
        if path == "/anything" or path.startswith("/anything/"):
            self._json(self._body_json(body, method=True))
        elif path.startswith("/status/"):
            self._status(path[len("/status/"):])
        elif path.startswith("/delay/"):
            self._delay(path[len("/delay/"):], body)
        elif path in METHOD_PATHS:
            if METHOD_PATHS[path] != method:
                self._send(405, b"Method Not Allowed", "text/plain; charset=utf-8")
            elif method == "GET":
                self._json({"args": self._args(), "headers": self._headers_json(),
                            "origin": self._origin(), "url": self._url()})
            else:
                self._json(self._body_json(body, method=False))
        elif method != "GET":
            self._send(405 if path in ("/", "/headers", "/ip", "/uuid", "/user-agent") else 404,
                       b"", "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, INDEX, "text/html; charset=utf-8")
        elif path == "/headers":
            self._json({"headers": self._headers_json()})
        elif path == "/ip":
            self._json({"origin": self._origin()})
        elif path == "/user-agent":
            self._json({"user-agent": self.headers.get("User-Agent")})
        elif path == "/uuid":
            self._json({"uuid": str(uuid.uuid4())})
        else:
            self._send(404, b"Not Found", "text/plain; charset=utf-8")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0
    if not port:
        value = os.environ.get("PORT", "").strip()
        port = int(value) if value.isdigit() else 8080
    host = os.environ.get("LISTEN_ADDRESS", "0.0.0.0")
    server = ThreadingHTTPServer((host, port), HttpbinHandler)
    server.daemon_threads = True
    print(f"listening on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
