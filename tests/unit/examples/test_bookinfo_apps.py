"""Our Bookinfo apps, run as real processes on 127.0.0.1, behave like Istio's sample: JSON
shapes and texts, the product page, login → end-user, header propagation, and the upstream
timeouts and error texts that Istio's fault-injection and request-timeouts tasks rely on.
The manifests validate and analyze cleanly with the pistio CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.unit.examples.harness import (
    BOOKINFO,
    CURL,
    REPO,
    App,
    Apps,
    Recorder,
    closed_port,
    get_json,
    request,
    silent_listener,
    upstream_env,
)

pytestmark = pytest.mark.timeout(120)

APPS = BOOKINFO / "apps"
DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Ratings service is currently unavailable"
REVIEW_ENV = {
    "v1": {},
    "v2": {"ENABLE_RATINGS": "true", "STAR_COLOR": "black"},
    "v3": {"ENABLE_RATINGS": "true", "STAR_COLOR": "red"},
}
TRACE_HEADERS = {
    "x-request-id": "7f1c0c5e-2a52-4b8e-9d3e-5b0d1f1e2a3b",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    "x-b3-sampled": "1",
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE",
    "x-ot-span-context": "opaque-span-context",
    "user-agent": "bookinfo-test/1.0",
}


@dataclass
class Mesh:
    apps: Apps
    details: App
    ratings: App
    reviews: dict[str, App]
    productpage: dict[str, App]   # one product page per reviews version


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    apps = Apps(tmp_path_factory.mktemp("bookinfo"))
    try:
        details = apps.start(APPS / "details.py", {})
        ratings = apps.start(APPS / "ratings.py", {})
        reviews = {
            v: apps.start(APPS / "reviews.py",
                          {**env, **upstream_env(ratings=ratings.port),
                           "POD_NAME": f"reviews-{v}-0123456789-abcde"}, name=f"reviews-{v}")
            for v, env in REVIEW_ENV.items()
        }
        pages = {
            v: apps.start(APPS / "productpage.py",
                          upstream_env(details=details.port, reviews=app.port,
                                       ratings=ratings.port), name=f"productpage-{v}")
            for v, app in reviews.items()
        }
        yield Mesh(apps, details, ratings, reviews, pages)
    finally:
        apps.close()


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    started = Apps(tmp_path)
    try:
        yield started
    finally:
        started.close()


def page(port: int, headers: dict[str, str] | None = None) -> str:
    status, hdrs, body = request(port, "GET", "/productpage", headers=headers)
    assert status == 200
    assert hdrs["content-type"].startswith("text/html")
    return body.decode()


def stars(html: str) -> tuple[int, int, set[str]]:
    """(full stars, empty stars, colors) rendered on a product page."""
    full = len(re.findall(r'class="glyphicon glyphicon-star"', html))
    empty = len(re.findall(r'class="glyphicon glyphicon-star-empty"', html))
    colors = set(re.findall(r'<font color="(\w+)"', html))
    return full, empty, colors


def login(port: int, user: str) -> str:
    status, hdrs, _ = request(port, "POST", "/login",
                              body=f"username={user}&passwd=password".encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded",
                                       "Referer": "/productpage"})
    assert status == 302
    assert hdrs["location"] == "/productpage"
    cookie = hdrs["set-cookie"]
    assert cookie.startswith("session=") and "HttpOnly" in cookie
    return cookie.split(";", 1)[0]


# --- details, ratings, reviews on their own ---

def test_details_json(mesh: Mesh) -> None:
    port = mesh.details.port
    assert get_json(port, "/health") == (200, {"status": "Details is healthy"})
    assert get_json(port, "/details/0") == (200, {
        "id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback",
        "pages": 200, "publisher": "PublisherA", "language": "English",
        "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"})
    assert get_json(port, "/details/7")[1]["id"] == 7
    assert get_json(port, "/details/abc") == (400, {"error": "please provide numeric product id"})


def test_ratings_json_and_post(mesh: Mesh) -> None:
    port = mesh.ratings.port
    assert get_json(port, "/health") == (200, {"status": "Ratings is healthy"})
    assert get_json(port, "/ratings/0") == (200, {"id": 0, "ratings": {"Reviewer1": 5,
                                                                       "Reviewer2": 4}})
    assert get_json(port, "/ratings/x") == (400, {"error": "please provide numeric product ID"})
    status, _, body = request(port, "POST", "/ratings/42", body=b'{"Reviewer1": 1}',
                              headers={"Content-Type": "application/json"})
    assert (status, json.loads(body)) == (200, {"id": 42, "ratings": {"Reviewer1": 1}})
    assert get_json(port, "/ratings/42")[1] == {"id": 42, "ratings": {"Reviewer1": 1}}
    status, _, body = request(port, "POST", "/ratings/43", body=b"{nope")
    assert (status, json.loads(body)) == (400, {"error": "please provide valid ratings JSON"})


def test_keep_alive(mesh: Mesh) -> None:
    """HTTP/1.1 persistent connections: a sidecar reuses its upstream connections."""
    from http.client import HTTPConnection

    conn = HTTPConnection("127.0.0.1", mesh.details.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/details/0")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["id"] == 0
    finally:
        conn.close()


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_reviews_versions(mesh: Mesh, version: str) -> None:
    port = mesh.reviews[version].port
    assert get_json(port, "/health") == (200, {"status": "Reviews is healthy"})
    status, body = get_json(port, "/reviews/0")
    assert status == 200
    assert body["id"] == "0"
    assert body["podname"] == f"reviews-{version}-0123456789-abcde"
    assert body["clustername"] == "null"
    assert [r["reviewer"] for r in body["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert body["reviews"][0]["text"].startswith("An extremely entertaining play by Shakespeare")
    ratings = [r.get("rating") for r in body["reviews"]]
    if version == "v1":
        assert ratings == [None, None]
    else:
        color = REVIEW_ENV[version]["STAR_COLOR"]
        assert ratings == [{"stars": 5, "color": color}, {"stars": 4, "color": color}]
    assert request(port, "GET", "/reviews/abc")[0] == 404


# --- the product page ---

@pytest.mark.parametrize(("version", "expected"), [
    ("v1", (0, 0, set())),
    ("v2", (9, 1, {"black"})),
    ("v3", (9, 1, {"red"})),
])
def test_product_page(mesh: Mesh, version: str, expected: tuple[int, int, set[str]]) -> None:
    html = page(mesh.productpage[version].port)
    assert "<title>Simple Bookstore App</title>" in html
    assert "The Comedy of Errors" in html and "Wikipedia Summary" in html
    assert "Book Details" in html
    for value in ("paperback", "200", "PublisherA", "English", "1234567890", "123-1234567890"):
        assert f"<dd>{value}</dd>" in html
    assert "Book Reviews" in html
    assert "The slapstick humour is refreshing!" in html
    assert "Reviewer1" in html and "Reviewer2" in html
    assert f"reviews-{version}-0123456789-abcde" in html
    assert stars(html) == expected
    assert DETAILS_ERROR not in html and REVIEWS_ERROR not in html and RATINGS_ERROR not in html
    assert 'name="username"' in html  # not logged in: the sign-in form


def test_health_index_api_metrics(mesh: Mesh) -> None:
    port = mesh.productpage["v2"].port
    status, _, body = request(port, "GET", "/health")
    assert (status, body) == (200, b"Product page is healthy")
    status, _, body = request(port, "GET", "/")
    assert status == 200 and b"simple bookstore application" in body
    assert b'href="/productpage?u=normal"' in body
    status, products = get_json(port, "/api/v1/products")
    assert status == 200 and products[0]["id"] == 0
    assert products[0]["title"] == "The Comedy of Errors"
    assert get_json(port, "/api/v1/products/0") == get_json(mesh.details.port, "/details/0")
    status, reviews = get_json(port, "/api/v1/products/0/reviews")
    assert status == 200 and reviews["reviews"][1]["rating"] == {"stars": 4, "color": "black"}
    assert get_json(port, "/api/v1/products/0/ratings") == (
        200, {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})
    # details' own 400 comes through with productpage's error text
    assert get_json(port, "/api/v1/products/abc") == (400, {"error": DETAILS_ERROR})
    status, hdrs, body = request(port, "GET", "/metrics")
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    assert re.search(rb'request_result_total\{destination_app="details",response_code="200"\} '
                     rb"[1-9]", body)
    assert request(port, "GET", "/nope")[0] == 404


def test_login_logout(mesh: Mesh) -> None:
    port = mesh.productpage["v1"].port
    cookie = login(port, "jason")
    html = page(port, {"Cookie": cookie})
    assert "jason" in html and 'href="logout"' in html and 'name="username"' not in html
    status, hdrs, _ = request(port, "GET", "/logout",
                              headers={"Cookie": cookie, "Referer": "/productpage"})
    assert status == 302 and hdrs["location"] == "/productpage"
    assert hdrs["set-cookie"].startswith("session=;") and "Max-Age=0" in hdrs["set-cookie"]
    # a forged session is no login
    forged = "session=amFzb24.0000000000000000000000000000000"
    assert 'name="username"' in page(port, {"Cookie": forged})
    assert request(port, "POST", "/login", body=b"passwd=x",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 400


def test_end_user_and_tracing_headers_are_propagated(apps: Apps) -> None:
    """productpage → reviews v2 → ratings and productpage → details carry x-request-id, b3,
    W3C trace context, user-agent and cookie; after login productpage adds end-user, and
    reviews forwards it to ratings (what routing-by-end-user and the fault task match)."""
    with Recorder() as rec:
        reviews = apps.start(APPS / "reviews.py",
                             {**REVIEW_ENV["v2"], **upstream_env(ratings=rec.port)})
        pp = apps.start(APPS / "productpage.py",
                        upstream_env(details=rec.port, reviews=reviews.port))
        cookie = login(pp.port, "jason")
        html = page(pp.port, {**TRACE_HEADERS, "Cookie": cookie})
        assert "RecordPress" in html           # details came from the recorder
        assert stars(html) == (4, 6, {"black"})   # ratings 3 and 1 from the recorder
        [details_hdrs] = rec.headers_for("/details/0")
        [ratings_hdrs] = rec.headers_for("/ratings/0")
        for hdrs in (details_hdrs, ratings_hdrs):
            for name, value in TRACE_HEADERS.items():
                assert hdrs.get(name) == value, (name, hdrs)
            assert hdrs.get("end-user") == "jason"
            assert hdrs.get("cookie") == cookie
        assert ratings_hdrs["host"] == f"127.0.0.1:{rec.port}"

        # Anonymous: no end-user; an end-user header sent by the client is not trusted.
        page(pp.port, {"end-user": "jason", "x-request-id": "anon"})
        last = rec.headers_for("/ratings/0")[-1]
        assert "end-user" not in last and last["x-request-id"] == "anon"


def test_details_down(apps: Apps, mesh: Mesh) -> None:
    pp = apps.start(APPS / "productpage.py",
                    upstream_env(details=closed_port(), reviews=mesh.reviews["v3"].port))
    html = page(pp.port)
    assert "Error fetching product details!" in html and DETAILS_ERROR in html
    assert "Book Reviews" in html and stars(html) == (9, 1, {"red"})
    assert get_json(pp.port, "/api/v1/products/0") == (500, {"error": DETAILS_ERROR})


def test_reviews_slower_than_productpage_timeout(apps: Apps, mesh: Mesh) -> None:
    """productpage waits 3 s for reviews and tries twice (Istio's sample does so on purpose;
    the fault-injection task's 7 s ratings delay exceeds these 6 s)."""
    with silent_listener() as slow:
        pp = apps.start(APPS / "productpage.py",
                        upstream_env(details=mesh.details.port, reviews=slow))
        start = time.monotonic()
        html = page(pp.port)
        elapsed = time.monotonic() - start
    assert "Error fetching product reviews!" in html and REVIEWS_ERROR in html
    assert "Book Details" in html and "PublisherA" in html
    assert elapsed >= 5.8, elapsed  # two 3 s attempts (the listener never answers)


def test_reviews_down_fails_fast(apps: Apps, mesh: Mesh) -> None:
    pp = apps.start(APPS / "productpage.py",
                    upstream_env(details=mesh.details.port, reviews=closed_port()))
    start = time.monotonic()
    assert get_json(pp.port, "/api/v1/products/0/reviews") == (500, {"error": REVIEWS_ERROR})
    assert time.monotonic() - start < 2


def test_ratings_down(apps: Apps, mesh: Mesh) -> None:
    reviews = apps.start(APPS / "reviews.py",
                         {**REVIEW_ENV["v2"], **upstream_env(ratings=closed_port())})
    status, body = get_json(reviews.port, "/reviews/0")
    assert status == 200
    assert [r["rating"] for r in body["reviews"]] == [{"error": RATINGS_ERROR}] * 2
    pp = apps.start(APPS / "productpage.py",
                    upstream_env(details=mesh.details.port, reviews=reviews.port))
    html = page(pp.port)
    assert html.count(RATINGS_ERROR) == 2
    assert "Book Reviews" in html and stars(html)[:2] == (0, 0)


def test_ratings_timeouts_per_star_color(apps: Apps) -> None:
    """reviews v3 (red) gives up on ratings after 2.5 s; v2 (black) waits up to 10 s, so a
    3 s slow ratings still yields stars on v2 but the error on v3."""
    with Recorder(delay=3.0) as slow:
        env = upstream_env(ratings=slow.port)
        v2 = apps.start(APPS / "reviews.py", {**REVIEW_ENV["v2"], **env}, name="reviews-v2")
        v3 = apps.start(APPS / "reviews.py", {**REVIEW_ENV["v3"], **env}, name="reviews-v3")
        start = time.monotonic()
        _, body = get_json(v3.port, "/reviews/0")
        elapsed = time.monotonic() - start
        assert body["reviews"][0]["rating"] == {"error": RATINGS_ERROR}
        assert elapsed >= 2.4, elapsed  # gave up at its 2.5 s timeout, not at 3 s: the error
        _, body = get_json(v2.port, "/reviews/0")
        assert body["reviews"][0]["rating"] == {"stars": 3, "color": "black"}


def test_service_link_port_values_are_ignored(apps: Apps, mesh: Mesh) -> None:
    """Kubernetes service links set REVIEWS_PORT=tcp://<ip>:9080; Istio's *_SERVICE_PORT wins
    then, and plain values of our own *_PORT are used as they are."""
    env = {"DETAILS_HOSTNAME": "127.0.0.1", "DETAILS_PORT": "tcp://10.96.0.9:9080",
           "DETAILS_SERVICE_PORT": str(mesh.details.port),
           **upstream_env(reviews=mesh.reviews["v1"].port)}
    pp = apps.start(APPS / "productpage.py", env)
    assert get_json(pp.port, "/api/v1/products/0")[0] == 200


# --- manifests ---

def pistio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pistio.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_manifests_validate_and_analyze() -> None:
    proc = pistio("validate", "-f", "examples/bookinfo/", "-f", "examples/curl/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("validated ") == 22
    proc = pistio("analyze", "examples/bookinfo/", "examples/curl/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No validation issues found" in proc.stdout + proc.stderr


def test_bookinfo_manifest_matches_istio() -> None:
    resources = docs(BOOKINFO / "bookinfo.yaml")
    kinds = Counter(d["kind"] for d in resources)
    assert kinds == {"Service": 4, "ServiceAccount": 4, "Deployment": 6}
    deployments = {d["metadata"]["name"]: d for d in resources if d["kind"] == "Deployment"}
    assert set(deployments) == {"details-v1", "ratings-v1", "reviews-v1", "reviews-v2",
                                "reviews-v3", "productpage-v1"}
    for name, dep in deployments.items():
        app, version = name.rsplit("-", 1)
        labels = {"app": app, "version": version}
        assert dep["metadata"]["labels"] == labels
        assert dep["spec"]["selector"]["matchLabels"] == labels
        pod = dep["spec"]["template"]
        assert pod["metadata"]["labels"] == labels
        assert pod["spec"]["serviceAccountName"] == f"bookinfo-{app}"
        [c] = pod["spec"]["containers"]
        assert c["name"] == app
        assert c["image"] == f"docker.io/istio/examples-bookinfo-{app}-{version}:1.20.1"
        assert c["command"] == ["python3", f"apps/{app}.py"]
        assert (BOOKINFO / c["command"][1]).is_file()
        assert "workingDir" not in c
        assert c["ports"] == [{"containerPort": 9080}]
        assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": 9080}
        env = {e["name"]: e["value"] for e in c.get("env", [])}
        if app == "reviews":
            assert {k: env[k] for k in REVIEW_ENV[version]} == REVIEW_ENV[version]
            assert ("ENABLE_RATINGS" in env) == (version != "v1")
    for svc in (d for d in resources if d["kind"] == "Service"):
        name = svc["metadata"]["name"]
        assert svc["metadata"]["labels"] == {"app": name, "service": name}
        assert svc["spec"] == {"ports": [{"port": 9080, "name": "http"}],
                               "selector": {"app": name}}
    accounts = {d["metadata"]["name"]: d["metadata"]["labels"]
                for d in resources if d["kind"] == "ServiceAccount"}
    assert accounts == {f"bookinfo-{a}": {"account": a}
                        for a in ("details", "ratings", "reviews", "productpage")}
    for ns_file in (BOOKINFO / "namespace.yaml", CURL / "namespace.yaml"):
        [ns] = docs(ns_file)
        assert ns["kind"] == "Namespace" and ns["metadata"] == {
            "name": "default", "labels": {"istio-injection": "enabled"}}


def _shared_samples() -> Path:
    import os

    shared = Path(os.environ.get("PISTIO_SHARED", REPO.parent / "shared"))
    return shared / "conformance" / "istio-samples" / "bookinfo-networking"


def _sample_names() -> list[str]:
    return sorted(p.name for p in _shared_samples().glob("*.yaml"))


@pytest.mark.conformance
@pytest.mark.parametrize("name", _sample_names() or ["<missing>"])
def test_istio_samples_analyze_with_our_bookinfo(name: str) -> None:
    """Istio's networking YAMLs analyze against our manifests as against Istio's bookinfo.yaml:
    each file applied the way the tasks do (with the gateway, destination-rule-all and the
    ingress gateway istioctl would find in the cluster). What remains are the real issues of
    the samples themselves: ratings subsets for MySQL versions Bookinfo does not deploy,
    and the cert-manager solver Service."""
    samples = _shared_samples()
    if not samples.is_dir():
        pytest.fail(f"Istio's samples are absent at {samples} (set PISTIO_SHARED)")
    gateway = REPO / "tests" / "conformance" / "data" / "istio-ingressgateway.yaml"
    files = [samples / "bookinfo-gateway.yaml", samples / "destination-rule-all.yaml"]
    if samples / name not in files:
        files.append(samples / name)
    proc = pistio("analyze", "-o", "json", "examples/bookinfo/", "examples/curl/",
                  str(gateway), *map(str, files))
    messages = json.loads(proc.stdout or "[]")
    errors = Counter((m["code"], m["origin"]) for m in messages if m["level"] == "Error")
    expected = Counter({("IST0173", "DestinationRule ratings"): 2})
    if name == "destination-rule-all-mtls.yaml":
        expected[("IST0173", "DestinationRule ratings")] += 2
    if name == "certmanager-gateway.yaml":
        expected[("IST0101", "VirtualService istio-system/cert-manager")] = 1
    assert errors == expected, messages
