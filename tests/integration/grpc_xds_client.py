"""A proxyless gRPC client for the tests: grpcio's own xDS resolver against pistio discovery.

grpcio reads ``GRPC_XDS_BOOTSTRAP`` once per process, so each scenario runs this script in a
fresh process. It dials ``xds:///<target>`` and calls ``/echo.Echo/Call`` (raw bytes).

``count`` mode makes N calls and prints one JSON object::

    {"versions": {"v1": 903, "v2": 97}, "codes": {"OK": 1000}, "details": [...]}

``watch`` mode prints ``ready`` once a call succeeded, then calls until ``--until`` answered
``--streak`` times in a row (or ``--max-seconds`` passed) and prints the wall-clock time of
every change of answer, so the caller can measure when routing followed a config edit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import grpc

METHOD = "/echo.Echo/Call"


def _answer(
    stub, payload: bytes, metadata, timeout: float, wait_for_ready: bool = False
) -> tuple[str, str, str]:
    """(version or "", status code name, details) of one call."""
    try:
        reply = stub(payload, metadata=metadata, timeout=timeout, wait_for_ready=wait_for_ready)
        return reply.decode(), "OK", ""
    except grpc.RpcError as err:
        return "", err.code().name, err.details() or ""


def _warm_up(stub, metadata, deadline: float) -> tuple[str, str, str]:
    """The first call waits for the xDS resolver (LDS → RDS → CDS → EDS) to settle."""
    timeout = max(0.1, deadline - time.monotonic())
    return _answer(stub, b"warmup", metadata, timeout, wait_for_ready=True)


def count(stub, args: argparse.Namespace, metadata) -> dict[str, object]:
    versions: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    details: list[str] = []
    deadline = time.monotonic() + args.max_seconds
    if args.warmup:
        _warm_up(stub, metadata, deadline)
    for i in range(args.calls):
        if time.monotonic() > deadline:
            break
        version, code, detail = _answer(
            stub, f"{args.key}-{i}".encode(), metadata, args.call_timeout
        )
        codes[code] += 1
        if version:
            versions[version] += 1
        if detail and len(details) < 5:
            details.append(detail)
    return {"versions": dict(versions), "codes": dict(codes), "details": details}


def watch(stub, args: argparse.Namespace, metadata) -> dict[str, object]:
    deadline = time.monotonic() + args.max_seconds
    version, code, detail = _warm_up(stub, metadata, deadline)
    if code != "OK":
        return {"error": f"{code}: {detail}"}
    print("ready", flush=True)
    changes: list[tuple[float, str]] = [(time.time(), version)]
    streak = 0
    calls = 0
    while time.monotonic() < deadline:
        version, code, _ = _answer(stub, f"{args.key}-{calls}".encode(), metadata, 1.0)
        calls += 1
        answer = version or code
        if answer != changes[-1][1]:
            changes.append((time.time(), answer))
        streak = streak + 1 if answer == args.until else 0
        if streak >= args.streak:
            break
    return {"changes": changes, "calls": calls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=["count", "watch"])
    parser.add_argument("--target", default="xds:///echo.default.svc.cluster.local:7070")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--header", action="append", default=[], help="name=value metadata")
    parser.add_argument("--key", default="call", help="request payload prefix")
    parser.add_argument("--call-timeout", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=15.0)
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--until", default="v2", help="watch: the answer to wait for")
    parser.add_argument("--streak", type=int, default=50)
    args = parser.parse_args()
    metadata = tuple(tuple(h.split("=", 1)) for h in args.header)
    with grpc.insecure_channel(args.target) as channel:
        stub = channel.unary_unary(METHOD)
        run = count if args.mode == "count" else watch
        print(json.dumps(run(stub, args, metadata)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
