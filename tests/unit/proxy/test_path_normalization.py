"""Path normalization (``normalize_path``, ``merge_slashes``, ``path_with_escaped_slashes_action``):
Envoy's cases for the functions, then the connection manager over real sockets — the route,
the filters and the upstream see the normalized path; rejections and redirects as Envoy sends
them."""

from __future__ import annotations

import pytest
import pytest_asyncio
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from pistio.proxy.http.path_normalization import (
    KEEP_UNCHANGED,
    REJECT_REQUEST,
    UNESCAPE_AND_FORWARD,
    UNESCAPE_AND_REDIRECT,
    PathAction,
    PathNormalization,
    canonical_path,
    merge_slashes,
)
from tests.unit.proxy.h2_fixtures import H2Client
from tests.unit.proxy.http_fixtures import Env, fetch, proxy_env, route, route_config

# Envoy's PathUtilityTest cases (test/common/http/path_utility_test.cc).
CANONICAL = [
    ("/xyz", "/xyz"),
    ("/x/y/z", "/x/y/z"),
    ("/a/b/../c", "/a/c"),
    ("/a/b/./c", "/a/b/c"),
    ("a/b/../c", "/a/c"),
    ("/a/b/../../../../c", "/c"),
    ("/a/..\\c", "/c"),
    ("/%c0%af", "/%c0%af"),
    ("/%5c%25", "/%5c%25"),
    ("/a/b/%2E%2E/c", "/a/c"),
    ("/a/b/%2E./c", "/a/c"),
    ("/a/b/%2E/c", "/a/b/c"),
    ("..", "/"),
    ("/../a/b", "/a/b"),
    ("/./a/b", "/a/b"),
    ("/A/B/C", "/A/B/C"),
    ("/a/b/%2e%2e/c", "/a/c"),
    ("/a/%2F%2f/c", "/a/%2F%2f/c"),
    # Chromium's path canonicalizer, which Envoy's normalization is: unreserved characters
    # unescaped, bytes that may not appear escaped (upper-case hex), a trailing dot segment
    # leaves its directory, a '%' that begins no escape is passed through.
    ("/%41%7e%2D%5f", "/A~-_"),
    ("/a b\"<>`{|}^\x7f", "/a%20b%22%3C%3E%60%7B%7C%7D%5E%7F"),
    ("/caf\u00e9".encode().decode("latin-1"), "/caf%C3%A9"),
    ("/a/b/.", "/a/b/"),
    ("/a/b/..", "/a/"),
    ("/a/.b/..c/...", "/a/.b/..c/..."),
    ("/100%", "/100%"),
    ("/%%30%30", "/%2500"),
    ("", "/"),
]


@pytest.mark.parametrize(("path", "expected"), CANONICAL)
def test_canonical_path(path: str, expected: str) -> None:
    assert canonical_path(path.encode("latin-1")) == expected.encode("latin-1")


@pytest.mark.parametrize("path", ["/xyz/.%00../abc", "/xyz/%00.%00./abc",
                                  "/xyz/AAAAA%%0000/abc", "/a\x00b"])
def test_invalid_paths_are_rejected(path: str) -> None:
    assert canonical_path(path.encode("latin-1")) is None


@pytest.mark.parametrize(("path", "expected"), [
    ("", ""), ("a//b/c", "a/b/c"), ("/a//b/c/", "/a/b/c/"), ("a//b/c/", "a/b/c/"), ("/a", "/a"),
    ("//a/b/c", "/a/b/c"), ("/a//b/c", "/a/b/c"), ("/a/b/c//", "/a/b/c/"),
    ("/a///b/c", "/a/b/c"), ("/a////b/c", "/a/b/c"),
])
def test_merge_slashes(path: str, expected: str) -> None:
    assert merge_slashes(path.encode()) == expected.encode()


def test_settings_apply_in_envoys_order_and_leave_the_query() -> None:
    both = PathNormalization(True, True, KEEP_UNCHANGED)
    # ".." removes the empty segment between "//" (normalization first), then slashes merge.
    assert both.apply(b"//a/./b//../c?x=//../") == (PathAction.CONTINUE, b"/a/b/c?x=//../")
    assert both.apply(b"/a//b?") == (PathAction.CONTINUE, b"/a/b?")
    forward = PathNormalization(True, False, UNESCAPE_AND_FORWARD)
    assert forward.apply(b"/private/..%2Fpublic%5c%2e%2Fabc") == (
        PathAction.CONTINUE, b"/public/abc")
    redirect = PathNormalization(False, False, UNESCAPE_AND_REDIRECT)
    assert redirect.apply(b"/private%2f../%2e%5Cpublic") == (
        PathAction.REDIRECT, b"/private/../%2e\\public")
    assert redirect.apply(b"/plain") is None  # nothing to change
    reject = PathNormalization(False, False, REJECT_REQUEST)
    assert reject.apply(b"/a%2fb")[0] is PathAction.REJECT
    assert reject.apply(b"/a/b?q=%2f") is None  # the query is not looked at
    assert PathNormalization.from_settings(False, False, 0) is None  # nothing to do


# --- through the connection manager ------------------------------------------------------------



@pytest_asyncio.fixture
async def env():
    async with proxy_env() as e:
        yield e


def hcm(normalize: bool = True, merge: bool = False, escaped: int = 0) -> dict:
    return {"normalize_path": wrappers_pb2.BoolValue(value=normalize), "merge_slashes": merge,
            "path_with_escaped_slashes_action": escaped}


ROUTES = [route_config("http", [route("/admin", cluster="admin"),
                                route("/", cluster="public")])]


def counter(env: Env, name: str) -> int:
    return env.proxy.counter(f"http.ingress_http.{name}")  # type: ignore[union-attr]


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_route_and_upstream_see_the_normalized_path(env: Env) -> None:
    admin, public = await env.start("admin", "public")
    await env.apply(ROUTES, hcm_fields=hcm(normalize=True, merge=True))
    r = await fetch(env.port, "/public/..//admin/./users?next=/../x")
    assert r.status == 200
    assert r.json()["server"] == "admin"  # the route matched the normalized path
    assert admin.received[-1].path == "/admin/users?next=/../x"  # and it went upstream
    r = await fetch(env.port, "/static/%61%64min")  # unreserved escapes are unescaped
    assert (r.json()["server"], public.received[-1].path) == ("public", "/static/admin")


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_without_normalization_paths_pass_as_received(env: Env) -> None:
    admin, public = await env.start("admin", "public")
    await env.apply(ROUTES, hcm_fields=hcm(normalize=False))
    r = await fetch(env.port, "/public/../admin")
    assert r.json()["server"] == "public"
    assert public.received[-1].path == "/public/../admin"
    assert not admin.received


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_an_invalid_path_is_answered_400(env: Env) -> None:
    admin, public = await env.start("admin", "public")
    await env.apply(ROUTES, hcm_fields=hcm())
    r = await fetch(env.port, "/admin/%00/x")
    assert (r.status, r.body) == (400, b"")
    assert counter(env, "downstream_rq_failed_path_normalization") == 1
    assert not admin.received and not public.received
    assert (await fetch(env.port, "/admin")).status == 200  # the next request is served


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_escaped_slashes_reject_redirect_forward(env: Env) -> None:
    admin, public = await env.start("admin", "public")
    await env.apply(ROUTES, hcm_fields=hcm(escaped=REJECT_REQUEST))
    r = await fetch(env.port, "/public%2F..%2Fadmin")
    assert r.status == 400
    assert counter(env, "downstream_rq_failed_path_normalization") == 1

    await env.apply(ROUTES, hcm_fields=hcm(escaped=UNESCAPE_AND_REDIRECT))
    r = await fetch(env.port, "/public%2F..%2Fadmin?a=%2F")
    assert (r.status, r.headers["location"]) == (307, "/admin?a=%2F")
    assert counter(env, "downstream_rq_redirected_with_normalized_path") == 1
    # A gRPC client cannot follow a redirect: Envoy answers it 400 (gRPC INTERNAL).
    r = await fetch(env.port, "/pkg.Svc%2FMethod", method="POST", body=b"",
                    headers={"content-type": "application/grpc"})
    assert r.status != 307
    assert counter(env, "downstream_rq_failed_path_normalization") == 2

    await env.apply(ROUTES, hcm_fields=hcm(escaped=UNESCAPE_AND_FORWARD))
    r = await fetch(env.port, "/public%2F..%2Fadmin")
    assert r.json()["server"] == "admin"
    assert admin.received[-1].path == "/admin"
    assert not public.received


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_http2_paths_are_normalized_and_grpc_gets_internal(env: Env) -> None:
    admin, public = await env.start("admin", "public")
    await env.apply(ROUTES, hcm_fields=hcm(normalize=True, escaped=UNESCAPE_AND_REDIRECT))
    client = await H2Client.connect(env.port)
    try:
        r = await client.request("/public/../admin/%7Eme")
        assert (r.status, r.json()["server"]) == (200, "admin")
        assert admin.received[-1].path == "/admin/~me"
        r = await client.request("/public%2f..%2fadmin")
        assert (r.status, r.headers["location"]) == (307, "/admin")
        # gRPC cannot follow the redirect: 400, which a gRPC client reads as INTERNAL.
        r = await client.request("/pkg.Svc%2FMethod", "POST",
                                 {"content-type": "application/grpc", "te": "trailers"},
                                 body=b"\0\0\0\0\0")
        assert r.headers.get("grpc-status", r.trailers.get("grpc-status")) == "13"
        assert not public.received
    finally:
        client.close()


def test_action_numbers_are_envoys() -> None:
    enum = hcm_pb2.HttpConnectionManager
    assert (enum.KEEP_UNCHANGED, enum.REJECT_REQUEST, enum.UNESCAPE_AND_REDIRECT,
            enum.UNESCAPE_AND_FORWARD) == (KEEP_UNCHANGED, REJECT_REQUEST, UNESCAPE_AND_REDIRECT,
                                           UNESCAPE_AND_FORWARD)


@pytest.mark.parametrize("merge", [False, True])
def test_the_fast_path_never_skips_a_change(merge: bool) -> None:
    """``apply`` answers None (nothing to do) without normalizing: for many targets built from
    the bytes that matter, that answer agrees with the full computation."""
    import random

    rng = random.Random(5)
    alphabet = [b"/", b"a", b".", b"%2e", b"%2F", b"%41", b"\\", b"?", b"=", b"%", b" ", b"~"]
    policy = PathNormalization(True, merge, UNESCAPE_AND_FORWARD)
    for _ in range(3000):
        target = b"/" + b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        q = target.find(b"?")
        path, query = (target, b"") if q < 0 else (target[:q], target[q:])
        path = path.replace(b"%2F", b"/")
        expected = canonical_path(path)
        if expected is not None and merge:
            expected = merge_slashes(expected)
        outcome = policy.apply(target)
        if outcome is None:
            assert expected is not None and expected + query == target, target
        elif expected is None:
            assert outcome[0] is PathAction.REJECT, target
        else:
            assert outcome == (PathAction.CONTINUE, expected + query), target
