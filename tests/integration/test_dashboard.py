"""`pistio dashboard` on a real node (root): Bookinfo and the curl sample run with sidecars,
the curl pod keeps loading the product page, and the dashboard, scraping every sidecar's
15090 itself, draws Bookinfo's versioned app graph in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): productpage, details, reviews v1/v2/v3 and ratings, with
request rates, p99 latencies and mTLS padlocks on the edges, and the 8 sidecars SYNCED in the
proxy list. The screenshot is kept at test-artifacts/dashboard-bookinfo.png (git-ignored; the one
in docs/images is a copy from such a run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.node_fixture import REPO, Node, make_node, need_root, wait_for
from tests.integration.root_guard import need_root as root_need
from tests.ports import free_port

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(600)]

PAGE = "http://productpage:9080/productpage"
SCREENSHOT = REPO / "test-artifacts" / "dashboard-bookinfo.png"
TRAFFIC_SECONDS = 240
SIDECARS = ("productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3",
            "ratings-v1", "curl", "httpbin")

WORKLOADS = {"productpage-v1": "productpage v1", "details-v1": "details v1",
             "reviews-v1": "reviews v1", "reviews-v2": "reviews v2",
             "reviews-v3": "reviews v3", "ratings-v1": "ratings v1", "curl": "curl"}
SERVICES = ("productpage", "details", "reviews", "ratings")


def wl(name: str) -> str:
    return f"workload:default:{name}"


def svc(name: str) -> str:
    return f"service:default:{name}"


# Bookinfo's request path as Kiali's versioned app graph draws it.
EDGES = [
    (wl("curl"), svc("productpage")), (svc("productpage"), wl("productpage-v1")),
    (wl("productpage-v1"), svc("details")), (svc("details"), wl("details-v1")),
    (wl("productpage-v1"), svc("reviews")),
    (svc("reviews"), wl("reviews-v1")), (svc("reviews"), wl("reviews-v2")),
    (svc("reviews"), wl("reviews-v3")),
    (wl("reviews-v2"), svc("ratings")), (wl("reviews-v3"), svc("ratings")),
    (svc("ratings"), wl("ratings-v1")),
]

# What the page shows, read from its SVG and table (data-* attributes set by graph.js).
PAGE_STATE = """
const nodes = [...document.querySelectorAll('#graph .node')].map((n) => ({
  id: n.dataset.nodeId, label: n.dataset.label, kind: n.dataset.kind}));
const edges = [...document.querySelectorAll('#graph .edge')].map((e) => ({
  source: e.dataset.source, target: e.dataset.target, rps: parseFloat(e.dataset.rps),
  mtls: e.dataset.mtls === 'true', p99: e.dataset.p99,
  label: (e.querySelector('.edge-label') || {}).textContent || ''}));
const proxies = [...document.querySelectorAll('#proxies tbody tr')].map((r) => ({
  proxy: r.dataset.proxy, synced: r.dataset.synced === 'true',
  cells: [...r.cells].map((c) => c.textContent)}));
const banner = document.getElementById('banner');
return {nodes, edges, proxies, banner: banner.hidden ? '' : banner.textContent};
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    need_root()
    root_need("drive headless Chromium", ("chromium", "chromedriver"))
    node = make_node(tmp_path_factory.mktemp("dashboard"))
    try:
        up = node.pistio("up", "-f", "examples/bookinfo", "-f", "examples/curl",
                         "--timeout", "240", timeout=300)
        assert up.returncode == 0, (up.stdout, up.stderr, node.log_tail())
        yield node
    finally:
        node.down()
        left = node.leftovers()
        assert not left, left


def start_dashboard(node: Node, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pistio.cli", "dashboard", "--address", "127.0.0.1:0",
         "--interval", "1", "--window", "30s", *extra],
        cwd=REPO, env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # type: ignore[union-attr]
    if not first.startswith("pistio dashboard: http://"):
        stop_dashboard(proc)
        pytest.fail(f"dashboard did not start: {first}")
    return proc, first.split(": ", 1)[1].strip().rstrip("/")


def stop_dashboard(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    code = proc.wait(timeout=15)
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert code == 0, err
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def dashboard_url(node: Node) -> Iterator[str]:
    """The dashboard scraping the sidecars itself (no Prometheus)."""
    proc, url = start_dashboard(node)
    try:
        yield url
    finally:
        stop_dashboard(proc)


@pytest.fixture(scope="module")
def traffic(node: Node, dashboard_url: str) -> Iterator[None]:
    """The curl pod loads the product page a few times a second, for as long as the test
    may need, started after the dashboard's first scrape so every request is counted."""
    script = (f"end=$(( $(date +%s) + {TRAFFIC_SECONDS} )); "
              f"while [ $(date +%s) -lt $end ]; do "
              f"curl -s -o /dev/null --max-time 10 {PAGE}; sleep 0.1; done")
    worker = threading.Thread(target=node.exec, args=("deploy/curl", "sh", "-c", script),
                              kwargs={"timeout": TRAFFIC_SECONDS + 30}, daemon=True)
    worker.start()
    yield


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pistio-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1500,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def complete(state: dict[str, Any]) -> bool:
    """Every Bookinfo node and edge drawn with traffic, every edge into a workload with its
    p99 and padlock, and the 8 sidecars synced."""
    labels = {n["id"]: n["label"] for n in state["nodes"]}
    if any(labels.get(wl(w)) != label for w, label in WORKLOADS.items()):
        return False
    if any(labels.get(svc(s)) != s for s in SERVICES):
        return False
    edges = {(e["source"], e["target"]): e for e in state["edges"]}
    for pair in EDGES:
        edge = edges.get(pair)
        if edge is None or not edge["rps"] > 0 or "rps" not in edge["label"]:
            return False
        if pair[1].startswith("workload:") and not (edge["mtls"] and edge["p99"]):
            return False
    synced = [p for p in state["proxies"] if p["synced"]]
    return len(state["proxies"]) == len(SIDECARS) == len(synced)


def test_dashboard_draws_bookinfo(node: Node, dashboard_url: str, traffic: None,
                                  browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(dashboard_url + "/")
    last: dict[str, Any] = {}

    def drawn(driver: Any) -> bool:
        last.update(driver.execute_script(PAGE_STATE))
        return complete(last)

    try:
        WebDriverWait(browser, 120, poll_frequency=1).until(drawn)
    except TimeoutException:
        with urllib.request.urlopen(dashboard_url + "/api/graph", timeout=5) as resp:
            api = json.loads(resp.read())
        pytest.fail(f"graph incomplete after 120s.\npage: {json.dumps(last)[:6000]}\n"
                    f"api: error={api.get('error')} warnings={api.get('warnings')}\n"
                    f"{node.log_tail(2000)}")

    # The proxy table is proxy-status's: every sidecar, all four types SYNCED.
    names = [p["cells"][0] for p in last["proxies"]]  # <deployment>-<replicaset>-<pod>
    assert sorted(n.rsplit("-", 2)[0] for n in names) == sorted(SIDECARS), names
    for row in last["proxies"]:
        assert row["cells"][1] == "default", row
        assert all(cell.startswith("SYNCED") for cell in row["cells"][2:6]), row
    assert last["banner"] == "", last["banner"]

    # The API agrees with the page: Bookinfo answers 200 everywhere, so no 5xx anywhere.
    with urllib.request.urlopen(dashboard_url + "/api/graph", timeout=5) as resp:
        graph = json.loads(resp.read())
    assert graph["error"] is None and graph["warnings"] == [], graph
    by_pair = {(e["source"], e["target"]): e for e in graph["edges"]}
    for pair in EDGES:
        edge = by_pair[pair]
        assert edge["protocol"] == "http" and edge["errorPercent"] == 0, edge
        assert edge["health"] == "healthy", edge
        assert set(edge["responses"]) == {"200"}, edge
    # reviews fans out to its three versions; only v2 and v3 call ratings.
    assert (wl("reviews-v1"), svc("ratings")) not in by_pair
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes[wl("curl")]["layer"] < nodes[svc("productpage")]["layer"] < \
        nodes[wl("productpage-v1")]["layer"] < nodes[svc("reviews")]["layer"] < \
        nodes[wl("reviews-v2")]["layer"] < nodes[svc("ratings")]["layer"]

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1500, max(1000, int(height) + 40))
    WebDriverWait(browser, 10).until(drawn)  # redrawn at the new size
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(tmp_path / "dashboard-bookinfo.png"))
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(tmp_path / "dashboard-bookinfo.png", SCREENSHOT)
    print(f"screenshot: {SCREENSHOT} and {tmp_path / 'dashboard-bookinfo.png'}")




@pytest.fixture
def prometheus(node: Node, tmp_path: Path) -> Iterator[str]:
    """Debian's Prometheus scraping every sidecar's 15090 each second."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is missing (make deb installs it)"
    pods = json.loads(node.pistio("get", "pods", "-o", "json", check=True).stdout)["items"]
    targets = [f"{p['status']['podIP']}:15090" for p in pods
               if any(c.get("name") == "istio-proxy" for c in p["spec"]["containers"])]
    assert len(targets) == len(SIDECARS), targets
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "envoy-stats", "metrics_path": "/stats/prometheus",
                            "scrape_timeout": "900ms",
                            "static_configs": [{"targets": targets}]}],
    }))
    port = free_port()
    with (tmp_path / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1):
                return True
        except OSError:
            return False

    try:
        assert wait_for(ready, 60, 0.2), (tmp_path / "prometheus.log").read_text()[-3000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def api_graph(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/api/graph", timeout=5) as resp:
        return json.loads(resp.read())


def test_dashboard_on_prometheus_draws_the_same_graph(node: Node, traffic: None,
                                                     prometheus: str) -> None:
    """With --prometheus, the same graph comes out of Kiali's PromQL run by a real
    Prometheus (which also proves every query is valid PromQL)."""
    proc, url = start_dashboard(node, "--prometheus", prometheus)
    try:
        def drawn() -> dict[str, Any] | None:
            graph = api_graph(url)
            edges = {(e["source"], e["target"]): e for e in graph["edges"]}
            labels = {n["id"]: n["label"] for n in graph["nodes"]}
            ok = (graph["error"] is None and graph["warnings"] == []
                  and all(labels.get(wl(w)) == label for w, label in WORKLOADS.items())
                  and all(pair in edges and edges[pair]["rps"] > 0 for pair in EDGES)
                  and all(edges[pair]["mtls"] and edges[pair]["p99Ms"] is not None
                          for pair in EDGES if pair[1].startswith("workload:")))
            return graph if ok else None

        graph = wait_for(drawn, 90, 1)
        assert graph, f"graph incomplete: {json.dumps(api_graph(url))[:6000]}"
        assert graph["source"] == f"Prometheus at {prometheus}"
        edges = {(e["source"], e["target"]): e for e in graph["edges"]}
        for pair in EDGES:
            assert edges[pair]["errorPercent"] == 0 and edges[pair]["health"] == "healthy"
        # p99 comes from Istio's buckets: a finite bound-interpolated value.
        assert 0 < edges[(svc("productpage"), wl("productpage-v1"))]["p99Ms"] < 10000
    finally:
        stop_dashboard(proc)
