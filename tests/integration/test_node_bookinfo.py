"""Bookinfo on a local node, end to end (root): `pistio up` runs our Bookinfo and the curl
sample with sidecars, and Istio's own Bookinfo YAMLs, applied with `pistio apply -f`, give the
behaviour Istio's tasks describe: request routing by end-user, fault injection, traffic
shifting and request timeouts. After `pistio down` the host holds nothing of the node.

Istio's YAMLs come from ../shared/conformance/istio-samples/bookinfo-networking (the tests fail,
not skip, when it is absent).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.node_fixture import Node, make_node, need_root, wait_for
from tests.shared_data import bookinfo_samples

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.timeout(600)]

PAGE = "http://productpage:9080/productpage"
# Istio's tasks give config "a few seconds"; the issue asks for routing to follow within 2 s.
APPLY_DEADLINE = 2.0


def samples() -> Path:
    return bookinfo_samples()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    need_root()
    node = make_node(tmp_path_factory.mktemp("bookinfo"))
    try:
        up = node.pistio("up", "-f", "examples/bookinfo", "-f", "examples/curl",
                         "--timeout", "240", timeout=300)
        assert up.returncode == 0, (up.stdout, up.stderr, node.log_tail())
        yield node
    finally:
        node.down()
        left = node.leftovers()
        assert not left, left


def reviews_version(page: str) -> str:
    """Which reviews served the page: v1 shows no stars, v2 black ones, v3 red ones."""
    if "product reviews are currently unavailable" in page:
        return "unavailable"
    stars = re.findall(r'<font color="(black|red)"', page)
    if not stars:
        return "v1" if "Reviewer1" in page else "none"
    return "v2" if stars[0] == "black" else "v3"


def page_as(node: Node, user: str | None, timeout: float = 30) -> str:
    """The product page, logged in as ``user`` (a cookie jar inside the curl pod's run)."""
    if user is None:
        done = node.curl(PAGE, timeout=timeout)
    else:
        script = (f"jar=$(mktemp) && curl -s -o /dev/null -c $jar -d username={user} "
                  f"http://productpage:9080/login && curl -s --max-time {int(timeout) - 5} "
                  f"-b $jar {PAGE}; rm -f $jar")
        done = node.exec("deploy/curl", "sh", "-c", script, timeout=timeout)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def apply(node: Node, *files: str) -> float:
    paths = [str(samples() / f) for f in files]
    done = node.pistio("apply", *[a for p in paths for a in ("-f", p)])
    assert done.returncode == 0, (done.stdout, done.stderr)
    return time.monotonic()


def clear(node: Node, *files: str) -> None:
    paths = [str(samples() / f) for f in files]
    done = node.pistio("delete", "--ignore-not-found", *[a for p in paths for a in ("-f", p)])
    assert done.returncode == 0, (done.stdout, done.stderr)


def test_up_runs_bookinfo_with_sidecars(node: Node) -> None:
    pods = node.pistio("get", "pods", check=True).stdout
    for deploy in ("productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2",
                   "reviews-v3", "curl", "httpbin"):
        assert re.search(rf"^{deploy}-\w+-\w+\s+2/2\s+Running\s", pods, re.M), pods
    status = node.pistio("proxy-status", check=True).stdout
    assert status.count("SYNCED") >= 8 * 2, status
    # istioctl's deploy/NAME form, resolved through the node to one of its pods.
    routes = node.pistio("proxy-config", "routes", "deploy/productpage-v1", check=True).stdout
    assert "reviews.default.svc.cluster.local:9080" in routes, routes
    svcs = node.pistio("get", "svc", "-o", "wide", check=True).stdout
    assert re.search(r"^productpage\s+ClusterIP\s+10\.97\.\d+\.\d+\s+<none>\s+9080/TCP", svcs,
                     re.M), svcs


def test_product_page_passes_both_sidecars(node: Node) -> None:
    done = node.curl(PAGE, "-D", "-")
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition("\n\n")  # text mode: CRLF read as LF
    assert head.startswith("HTTP/1.1 200"), head
    assert "William Shakespeare" in body and "Reviewer1" in body, body[:2000]
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in head.splitlines()[1:])}
    # The client sidecar measured the upstream; the server sidecar replaced the app's
    # Server header with its own.
    assert "x-envoy-upstream-service-time" in headers, head
    assert headers.get("server") == "envoy", head  # Istio sidecars answer as envoy
    stats = node.exec("deploy/curl", "curl", "-s", "127.0.0.1:15000/stats").stdout
    assert re.search(r"cluster\.outbound\|9080\|\|productpage\.default\.svc\.cluster\.local"
                     r"\.upstream_rq_200: [1-9]", stats), stats[:3000]
    inbound = node.exec("deploy/productpage-v1", "curl", "-s", "127.0.0.1:15000/stats").stdout
    assert re.search(r"cluster\.inbound\|9080\|\|\.upstream_rq_200: [1-9]", inbound), \
        inbound[:3000]


def test_cluster_dns_names(node: Node) -> None:
    for name in ("details", "details.default", "details.default.svc.cluster.local"):
        done = node.curl(f"http://{name}:9080/details/0")
        assert '"author": "William Shakespeare"' in done.stdout.replace('":"', '": "'), \
            (name, done.stdout, done.stderr)


def test_request_routing_by_end_user(node: Node) -> None:
    try:
        apply(node, "destination-rule-all.yaml", "virtual-service-all-v1.yaml")
        assert wait_for(lambda: all(reviews_version(page_as(node, None)) == "v1"
                                    for _ in range(3)), 10), "reviews never settled on v1"
        started = apply(node, "virtual-service-reviews-test-v2.yaml")
        seen = wait_for(lambda: reviews_version(page_as(node, "jason")) == "v2",
                        APPLY_DEADLINE, interval=0.05)
        elapsed = time.monotonic() - started
        assert seen, f"jason not routed to v2 within {APPLY_DEADLINE}s"
        print(f"routing change followed in {elapsed:.2f}s")
        versions = Counter(reviews_version(page_as(node, None)) for _ in range(6))
        assert versions == Counter({"v1": 6}), versions
        assert Counter(reviews_version(page_as(node, "jason")) for _ in range(4)) == \
            Counter({"v2": 4})
    finally:
        clear(node, "virtual-service-reviews-test-v2.yaml", "virtual-service-all-v1.yaml",
              "destination-rule-all.yaml")


def test_fault_injection_delay_and_abort(node: Node) -> None:
    try:
        apply(node, "destination-rule-all.yaml", "virtual-service-all-v1.yaml")
        apply(node, "virtual-service-reviews-test-v2.yaml")
        started = apply(node, "virtual-service-ratings-test-delay.yaml")
        # 7 s delay on ratings for jason: reviews v2 waits, productpage gives up on reviews
        # (3 s, one retry) and says so. Other users are untouched.
        t0 = time.monotonic()
        page = page_as(node, "jason", timeout=30)
        took = time.monotonic() - t0
        assert reviews_version(page) == "unavailable", page[-2000:]
        assert took > 2.5, took
        assert reviews_version(page_as(node, None)) == "v1"
        started = apply(node, "virtual-service-ratings-test-abort.yaml")
        seen = wait_for(lambda: "Ratings service is currently unavailable" in
                        page_as(node, "jason"), APPLY_DEADLINE, interval=0.05)
        assert seen, f"abort not in force {time.monotonic() - started:.2f}s after apply"
        assert "Ratings service is currently unavailable" not in page_as(node, None)
    finally:
        clear(node, "virtual-service-ratings-test-abort.yaml",
              "virtual-service-reviews-test-v2.yaml", "virtual-service-all-v1.yaml",
              "destination-rule-all.yaml")


def test_traffic_shifting(node: Node) -> None:
    try:
        apply(node, "destination-rule-all.yaml", "virtual-service-all-v1.yaml")
        apply(node, "virtual-service-reviews-50-v3.yaml")
        assert wait_for(lambda: reviews_version(page_as(node, None)) == "v3",
                        APPLY_DEADLINE + 3, interval=0.05), "v3 never served"
        versions = Counter(reviews_version(page_as(node, None)) for _ in range(40))
        # 50/50 over 40 requests: outside 8..32 has probability < 1e-4.
        assert set(versions) == {"v1", "v3"}, versions
        assert 8 <= versions["v3"] <= 32, versions
        apply(node, "virtual-service-reviews-v3.yaml")
        assert wait_for(lambda: all(reviews_version(page_as(node, None)) == "v3"
                                    for _ in range(5)), APPLY_DEADLINE + 3)
    finally:
        clear(node, "virtual-service-reviews-v3.yaml", "virtual-service-all-v1.yaml",
              "destination-rule-all.yaml")


TIMEOUT_TASK = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault: {delay: {percentage: {value: 100}, fixedDelay: 2s}}
    route: [{destination: {host: ratings, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
"""

TIMEOUT_HALF_SECOND = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
    timeout: 0.5s
"""


def test_request_timeouts(node: Node, tmp_path: Path) -> None:
    """Istio's request-timeouts task: ratings delayed 2 s, then reviews given 0.5 s."""
    (tmp_path / "delay.yaml").write_text(TIMEOUT_TASK)
    (tmp_path / "timeout.yaml").write_text(TIMEOUT_HALF_SECOND)
    try:
        apply(node, "destination-rule-all.yaml")
        node.pistio("apply", "-f", str(tmp_path / "delay.yaml"), check=True)
        assert wait_for(lambda: reviews_version(page_as(node, None)) == "v2", 10)
        t0 = time.monotonic()
        assert reviews_version(page_as(node, None)) == "v2"
        assert time.monotonic() - t0 > 1.8  # the 2 s delay is felt, the page still whole
        node.pistio("apply", "-f", str(tmp_path / "timeout.yaml"), check=True)
        assert wait_for(lambda: reviews_version(page_as(node, None)) == "unavailable",
                        APPLY_DEADLINE + 2, interval=0.05)
        # Without the 0.5 s timeout reviews would answer after the 2 s delay, page whole.
        assert reviews_version(page_as(node, None)) == "unavailable"
    finally:
        node.pistio("delete", "--ignore-not-found", "-f", str(tmp_path / "delay.yaml"))
        clear(node, "destination-rule-all.yaml")


def test_apply_is_all_or_nothing(node: Node, tmp_path: Path) -> None:
    bad = tmp_path / "mixed.yaml"
    bad.write_text("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good-one}
spec:
  hosts: [details]
  http: [{route: [{destination: {host: details}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-one}
spec:
  hosts: [details]
  http: [{route: [{destination: {host: details}, weight: -5}]}]
""")
    done = node.pistio("apply", "-f", str(bad))
    assert done.returncode != 0
    assert "bad-one" in done.stderr and "weight" in done.stderr, done.stderr
    listed = node.pistio("get", "virtualservices", "-A").stdout
    assert "good-one" not in listed and "bad-one" not in listed, listed


def test_recreated_pod_gets_new_ip_and_mesh_follows(node: Node) -> None:
    before = node.pistio("get", "pods", "-o", "wide", check=True).stdout
    line = next(ln for ln in before.splitlines() if ln.startswith("ratings-v1-"))
    name, ip = line.split()[0], line.split()[5]
    node.pistio("delete", "pod", name, check=True)

    def replaced() -> str | None:
        out = node.pistio("get", "pods", "-o", "wide").stdout
        for ln in out.splitlines():
            if ln.startswith("ratings-v1-") and ln.split()[0] != name and " 2/2 " in ln:
                return ln.split()[5]
        return None

    new_ip = wait_for(replaced, 90, interval=0.5)
    assert new_ip and new_ip != ip, (ip, new_ip)
    # The curl pod's sidecar now sends ratings traffic to the new pod's address.
    clusters = wait_for(lambda: new_ip in (out := node.exec(
        "deploy/curl", "curl", "-s", "127.0.0.1:15000/clusters").stdout) and out, 10, 0.2)
    assert clusters and f"{ip}:9080" not in clusters, clusters
    got = node.curl("http://ratings:9080/ratings/0")
    assert '"Reviewer1"' in got.stdout, (got.stdout, got.stderr)


def test_crash_loop_is_visible(node: Node, tmp_path: Path) -> None:
    manifest = tmp_path / "crasher.yaml"
    manifest.write_text("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: crasher}
spec:
  selector: {matchLabels: {app: crasher}}
  template:
    metadata:
      labels: {app: crasher}
      annotations: {sidecar.istio.io/inject: "false"}
    spec:
      containers:
      - {name: crasher, image: busybox, command: [sh, -c, "echo about to fail; exit 3"]}
""")
    node.pistio("apply", "-f", str(manifest), check=True)
    try:
        def crashing() -> str | None:
            out = node.pistio("get", "pods").stdout
            ln = next((x for x in out.splitlines() if x.startswith("crasher-")), "")
            return ln if "CrashLoopBackOff" in ln and int(ln.split()[3]) >= 1 else None

        line = wait_for(crashing, 30, interval=0.3)
        assert line, node.pistio("get", "pods").stdout
        logs = node.pistio("logs", "deploy/crasher").stdout
        assert "about to fail" in logs, logs
    finally:
        node.pistio("delete", "-f", str(manifest))


def test_pod_without_sidecar_reaches_cluster_ip(node: Node, tmp_path: Path) -> None:
    manifest = tmp_path / "plain.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: plain}
spec:
  containers: [{name: main, image: curl, command: [sleep, infinity]}]
""")
    node.pistio("apply", "-f", str(manifest), check=True)
    try:
        assert wait_for(lambda: " 1/1 " in node.pistio("get", "pods", "-n", "plain").stdout, 30)
        got = node.exec("client", "curl", "-s", "--max-time", "10",
                        "http://httpbin.default:8000/get", namespace="plain")
        assert '"url"' in got.stdout, (got.stdout, got.stderr)
    finally:
        node.pistio("delete", "-f", str(manifest))


def test_up_again_reuses_the_node(node: Node) -> None:
    again = node.pistio("up", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "is running" in again.stdout
