"""A real ``pistio discovery`` process for tests: started on free loopback ports, waited for
through its ready file, stopped with SIGTERM (SIGKILL if it hangs) whatever the test did."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT = 15.0


@contextlib.contextmanager
def run_discovery(config: Path, base: Path, *extra: str) -> Iterator[dict[str, Any]]:
    """Yields the ready file's contents (``grpc_address``, ``http_address``...); the log is
    ``base/discovery.log``."""
    ready = base / "ready.json"
    log_file = base / "discovery.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pistio.cli", "discovery", "--config-dir", str(config),
             "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
             "--ready-file", str(ready), *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"discovery exited with {proc.returncode}:\n{log_file.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"discovery not ready after {READY_TIMEOUT:.0f} s:\n"
                            f"{log_file.read_text()}")
            time.sleep(0.05)
        yield json.loads(ready.read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
