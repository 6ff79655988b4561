"""`pistio dashboard` as a process: the page, its files, the JSON APIs, and the messages it
gives when there is no node and no discovery to read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pistio.cli.dashboard_cmd import dashboard, parse_window

REPO = Path(__file__).resolve().parents[3]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, int]]:
    env = dict(os.environ, PISTIO_STATE_DIR=str(tmp_path / "no-node"))
    discovery = closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pistio.cli", "dashboard", "--address", "127.0.0.1:0",
         "--discovery-http", f"127.0.0.1:{discovery}", "--interval", "0.5", "--window", "5s"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("pistio dashboard: http://127.0.0.1:"), \
            (first, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        yield first.split(": ", 1)[1].strip().rstrip("/"), discovery
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_page_and_static_files(running: tuple[str, int]) -> None:
    url, _ = running
    status, ctype, body = get(url + "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'<svg id="graph"' in body and b'src="/static/graph.js"' in body
    status, ctype, body = get(url + "/static/graph.js")
    assert status == 200 and ctype.startswith("text/javascript") and b"/api/graph" in body
    status, ctype, _ = get(url + "/static/style.css")
    assert status == 200 and ctype.startswith("text/css")
    assert get(url + "/static/../server.py")[0] == 404
    assert json.loads(get(url + "/healthz")[2]) == {"status": "ok"}
    status, _, body = get(url + "/nope")
    assert status == 404 and json.loads(body) == {"error": "no such page: /nope"}


def test_no_node_and_no_discovery_are_reported_not_fatal(running: tuple[str, int]) -> None:
    url, discovery = running
    deadline = time.monotonic() + 10
    graph: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        graph = json.loads(get(url + "/api/graph")[2])
        if graph["error"]:
            break
        time.sleep(0.2)
    assert graph["error"].startswith("the node is not running (")
    assert graph["error"].endswith("; start it with `pistio up`, or give --prometheus URL")
    assert graph["nodes"] == [] and graph["edges"] == [] and graph["window"] == "5s"
    proxies = json.loads(get(url + "/api/proxies")[2])
    assert proxies["proxies"] == []
    assert proxies["error"].startswith(f"cannot reach the discovery at 127.0.0.1:{discovery}")
    # Still serving after several failed refreshes.
    time.sleep(1.2)
    assert get(url + "/healthz")[0] == 200


def test_windows() -> None:
    assert parse_window("60s") == 60
    assert parse_window("1m30s") == 90
    assert parse_window("2m") == 120
    assert parse_window("1h") == 3600
    assert parse_window("500ms") == 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["--window", "5x"], "'5x' is not a duration such as 30s, 1m or 1m30s"),
    (["--window", "6s", "--interval", "5"], "6s holds fewer than two scrapes 5s apart"),
    (["--address", "nowhere"], "'nowhere' is not HOST:PORT"),
])
def test_bad_options_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(dashboard, args)
    assert result.exit_code == 2
    assert message in result.output
