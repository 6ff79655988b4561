"""Our httpbin (examples/curl/apps/httpbin.py), run as a real process on 127.0.0.1: httpbin's
endpoints and JSON shapes, and the curl/httpbin manifests as in Istio's samples."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from http.client import HTTPConnection

import pytest
import yaml

from tests.unit.examples.harness import CURL, App, Apps, get_json, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def httpbin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    apps = Apps(tmp_path_factory.mktemp("httpbin"))
    try:
        yield apps.start(CURL / "apps" / "httpbin.py", {}, health="/get")
    finally:
        apps.close()


def test_get(httpbin: App) -> None:
    status, body = get_json(httpbin.port, "/get?a=1&b=2&b=3",
                            headers={"X-B3-TraceId": "abc", "User-Agent": "curl/8.0"})
    assert status == 200
    assert set(body) == {"args", "headers", "origin", "url"}
    assert body["args"] == {"a": "1", "b": ["2", "3"]}
    assert body["headers"]["X-B3-Traceid"] == "abc"
    assert body["headers"]["User-Agent"] == "curl/8.0"
    assert body["headers"]["Host"] == f"127.0.0.1:{httpbin.port}"
    assert body["origin"] == "127.0.0.1"
    assert body["url"] == f"http://127.0.0.1:{httpbin.port}/get?a=1&b=2&b=3"


def test_headers_ip_user_agent_uuid(httpbin: App) -> None:
    status, body = get_json(httpbin.port, "/headers", headers={"end-user": "jason"})
    assert status == 200 and list(body) == ["headers"]
    assert body["headers"]["End-User"] == "jason"
    assert get_json(httpbin.port, "/ip") == (200, {"origin": "127.0.0.1"})
    assert get_json(httpbin.port, "/ip", headers={"X-Forwarded-For": "10.88.0.7, 10.88.0.1"}) \
        == (200, {"origin": "10.88.0.7"})
    assert get_json(httpbin.port, "/user-agent", headers={"User-Agent": "t/1"}) == (
        200, {"user-agent": "t/1"})
    status, body = get_json(httpbin.port, "/uuid")
    assert status == 200 and uuid.UUID(body["uuid"]).version == 4


@pytest.mark.parametrize("code", [200, 201, 404, 418, 500, 503])
def test_status(httpbin: App, code: int) -> None:
    for method in ("GET", "POST", "DELETE"):
        status, _, body = request(httpbin.port, method, f"/status/{code}")
        assert status == code and body == b""


def test_status_choices_and_invalid(httpbin: App) -> None:
    seen = {request(httpbin.port, "GET", "/status/201,202")[0] for _ in range(30)}
    assert seen <= {201, 202} and seen
    assert request(httpbin.port, "GET", "/status/abc")[0] == 400
    assert request(httpbin.port, "GET", "/status/999")[0] == 400


def test_delay(httpbin: App) -> None:
    start = time.monotonic()
    status, body = get_json(httpbin.port, "/delay/1?x=y")
    elapsed = time.monotonic() - start
    assert status == 200 and 1.0 <= elapsed < 3
    assert body["args"] == {"x": "y"} and "headers" in body and "url" in body
    assert request(httpbin.port, "GET", "/delay/soon")[0] == 400


def test_anything(httpbin: App) -> None:
    payload = {"hello": ["mesh", 1]}
    status, _, raw = request(httpbin.port, "PUT", "/anything/some/path?q=1",
                             body=json.dumps(payload).encode(),
                             headers={"Content-Type": "application/json"})
    body = json.loads(raw)
    assert status == 200
    assert body["method"] == "PUT"
    assert body["json"] == payload and body["data"] == json.dumps(payload)
    assert body["args"] == {"q": "1"}
    assert body["url"].endswith("/anything/some/path?q=1")
    status, body = get_json(httpbin.port, "/anything")
    assert status == 200 and body["method"] == "GET" and body["json"] is None


def test_post_form_and_method_paths(httpbin: App) -> None:
    status, _, raw = request(httpbin.port, "POST", "/post", body=b"a=1&b=two",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    body = json.loads(raw)
    assert status == 200
    assert body["form"] == {"a": "1", "b": "two"} and body["data"] == ""
    assert set(body) == {"args", "data", "files", "form", "headers", "json", "origin", "url"}
    assert request(httpbin.port, "GET", "/post")[0] == 405
    assert request(httpbin.port, "POST", "/get")[0] == 405
    assert request(httpbin.port, "DELETE", "/delete")[0] == 200
    assert request(httpbin.port, "PATCH", "/patch", body=b"x")[0] == 200


def test_index_and_not_found(httpbin: App) -> None:
    status, hdrs, body = request(httpbin.port, "GET", "/")
    assert status == 200 and hdrs["content-type"].startswith("text/html")
    assert b"httpbin" in body
    assert request(httpbin.port, "GET", "/no/such/thing")[0] == 404


def test_keep_alive_with_bodies(httpbin: App) -> None:
    """Bodies are always consumed, so one HTTP/1.1 connection serves request after request."""
    conn = HTTPConnection("127.0.0.1", httpbin.port, timeout=5)
    try:
        for path, body in (("/post", b"one"), ("/status/204", b"ignored"), ("/get", None)):
            conn.request("POST" if body is not None else "GET", path, body=body)
            resp = conn.getresponse()
            resp.read()
            assert resp.status in (200, 204)
    finally:
        conn.close()


def _docs(name: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d
            for d in yaml.safe_load_all((CURL / name).read_text()) if d}


def test_curl_and_httpbin_manifests() -> None:
    curl = _docs("curl.yaml")
    assert set(curl) == {("ServiceAccount", "curl"), ("Service", "curl"), ("Deployment", "curl")}
    assert curl[("Service", "curl")]["spec"]["ports"] == [{"port": 80, "name": "http"}]
    pod = curl[("Deployment", "curl")]["spec"]["template"]
    assert pod["metadata"]["labels"] == {"app": "curl"}
    assert pod["spec"]["serviceAccountName"] == "curl"
    [c] = pod["spec"]["containers"]
    assert c["name"] == "curl" and c["command"] == ["sleep", "infinity"]

    httpbin = _docs("httpbin.yaml")
    assert set(httpbin) == {("ServiceAccount", "httpbin"), ("Service", "httpbin"),
                            ("Deployment", "httpbin")}
    assert httpbin[("Service", "httpbin")]["spec"] == {
        "ports": [{"name": "http", "port": 8000, "targetPort": 8080}],
        "selector": {"app": "httpbin"}}
    pod = httpbin[("Deployment", "httpbin")]["spec"]["template"]
    assert pod["metadata"]["labels"] == {"app": "httpbin", "version": "v1"}
    assert pod["spec"]["serviceAccountName"] == "httpbin"
    [c] = pod["spec"]["containers"]
    assert c["name"] == "httpbin" and c["ports"] == [{"containerPort": 8080}]
    assert c["command"] == ["python3", "apps/httpbin.py"]
    assert (CURL / c["command"][1]).is_file()
