"""A small Zipkin-compatible trace collector for the local mesh (stdlib only).

It speaks the parts of Zipkin's v2 HTTP API that the mesh and its users need:

- ``POST /api/v2/spans``: a JSON list of spans (Zipkin v2, what the sidecars' Zipkin tracer
  sends; gzip bodies accepted);
- ``GET /api/v2/services``, ``GET /api/v2/spans?serviceName=``: what has been seen;
- ``GET /api/v2/traces?serviceName=&limit=``: traces (lists of spans), newest first;
- ``GET /api/v2/trace/<traceId>``: one trace.

Spans live in memory (the newest ``MAX_SPANS``), as Zipkin's in-memory storage keeps them.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_SPANS = int(os.environ.get("MAX_SPANS", "100000"))

_lock = threading.Lock()
_traces: OrderedDict[str, list[dict]] = OrderedDict()  # trace id -> spans, oldest first
_count = 0


def _store(spans: list[dict]) -> int:
    global _count
    stored = 0
    with _lock:
        for span in spans:
            if not isinstance(span, dict) or not span.get("traceId") or not span.get("id"):
                continue
            trace_id = str(span["traceId"]).lower().rjust(32, "0")
            _traces.setdefault(trace_id, []).append(span)
            _traces.move_to_end(trace_id)
            _count += 1
            stored += 1
        while _count > MAX_SPANS and _traces:
            _, dropped = _traces.popitem(last=False)
            _count -= len(dropped)
    return stored


def _service(span: dict) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName") or "")


def _traces_for(service: str | None, limit: int) -> list[list[dict]]:
    with _lock:
        found = []
        for spans in reversed(_traces.values()):
            if service is None or any(_service(s) == service for s in spans):
                found.append(list(spans))
                if len(found) >= limit:
                    break
        return found


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:  # quiet: one line per POST is noise
        pass

    def _send(self, status: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path != "/api/v2/spans":
            self._send(404, {"error": "not found"})
            return
        try:
            if self.headers.get("content-encoding", "").lower() == "gzip":
                raw = gzip.decompress(raw)
            spans = json.loads(raw or b"[]")
            if not isinstance(spans, list):
                raise ValueError("expected a JSON list of spans")
        except (ValueError, OSError) as exc:
            self._send(400, {"error": f"malformed spans: {exc}"})
            return
        _store(spans)
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        limit = int(query.get("limit", "10") or 10)
        if url.path == "/api/v2/services":
            with _lock:
                names = sorted({_service(s) for spans in _traces.values() for s in spans} - {""})
            self._send(200, names)
        elif url.path == "/api/v2/spans":
            service = query.get("serviceName", "")
            with _lock:
                names = sorted({str(s.get("name", "")) for spans in _traces.values()
                                for s in spans if _service(s) == service})
            self._send(200, names)
        elif url.path == "/api/v2/traces":
            self._send(200, _traces_for(query.get("serviceName"), limit))
        elif url.path.startswith("/api/v2/trace/"):
            trace_id = url.path.rsplit("/", 1)[1].lower().rjust(32, "0")
            with _lock:
                spans = list(_traces.get(trace_id, []))
            self._send(200 if spans else 404, spans)
        elif url.path in ("/health", "/"):
            self._send(200, {"status": "UP", "spans": _count})
        else:
            self._send(404, {"error": "not found"})


def main() -> None:
    port = int(os.environ.get("PORT", "9411"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    print(f"zipkin collector listening on :{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
