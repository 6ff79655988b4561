"""The transport's sans-I/O pieces: request classification, push requests, the
push queue and the debouncer, without sockets."""

from __future__ import annotations

import asyncio

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pistio.xds import types as T
from pistio.xds.ack import RequestKind, on_delta_request, on_sotw_request
from pistio.xds.connection import sync_status
from pistio.xds.debounce import DebounceOptions, Debouncer
from pistio.xds.push_queue import PushQueue
from pistio.xds.push_request import ConfigKey, PushRequest
from pistio.xds.testing import bounded

asyncio_test = pytest.mark.asyncio


def sotw(type_url, names=(), nonce="", version="", error=None):
    return discovery_pb2.DiscoveryRequest(
        type_url=type_url,
        resource_names=list(names),
        response_nonce=nonce,
        version_info=version,
        error_detail=status_pb2.Status(message=error) if error else None,
    )


def test_sotw_classification_follows_the_protocol():
    watches = {}
    assert on_sotw_request(watches, sotw(T.ENDPOINT, ["a"]), 0) is RequestKind.INITIAL
    state = watches[T.ENDPOINT]
    assert not state.wildcard and state.names == {"a"}
    state.nonce_sent, state.version_sent = "n1", "1"
    assert on_sotw_request(watches, sotw(T.ENDPOINT, ["a"], "old"), 0) is RequestKind.STALE
    assert on_sotw_request(watches, sotw(T.ENDPOINT, ["a"], "n1", "0", "bad"), 0) is RequestKind.NACK
    assert (state.error, state.nonce_nacked, state.version_acked) == ("bad", "n1", "")
    assert on_sotw_request(watches, sotw(T.ENDPOINT, ["a"], "n1", "1"), 0) is RequestKind.ACK
    assert (state.version_acked, state.error) == ("1", "")
    assert on_sotw_request(watches, sotw(T.ENDPOINT, ["a", "b"], "n1", "1"), 0) is RequestKind.SUBSCRIPTION
    assert state.names == {"a", "b"}
    # A fresh stream's request (no nonce) asks for everything again.
    assert on_sotw_request(watches, sotw(T.ENDPOINT, ["a"]), 0) is RequestKind.INITIAL


def test_sotw_wildcard_rules():
    watches = {}
    on_sotw_request(watches, sotw(T.CLUSTER), 0)
    assert watches[T.CLUSTER].wildcard  # legacy: empty first CDS request
    on_sotw_request(watches, sotw(T.ENDPOINT), 0)
    assert not watches[T.ENDPOINT].wildcard and watches[T.ENDPOINT].names == set()
    on_sotw_request(watches, sotw(T.SECRET, ["*"]), 0)
    assert watches[T.SECRET].wildcard
    state = watches[T.CLUSTER]
    state.nonce_sent = "n1"
    assert on_sotw_request(watches, sotw(T.CLUSTER, (), "n1", "1"), 0) is RequestKind.ACK
    assert state.wildcard  # stays wildcard while requests stay empty


def test_delta_subscriptions_apply_even_with_a_stale_nonce():
    watches = {}
    first = discovery_pb2.DeltaDiscoveryRequest(
        type_url=T.ENDPOINT, resource_names_subscribe=["a"], initial_resource_versions={"a": "v"}
    )
    outcome = on_delta_request(watches, first, 0)
    assert outcome.kind is RequestKind.INITIAL and outcome.respond
    state = watches[T.ENDPOINT]
    assert state.resource_versions == {"a": "v"}
    state.nonce_sent = "n2"
    stale = discovery_pb2.DeltaDiscoveryRequest(
        type_url=T.ENDPOINT, response_nonce="n1", resource_names_subscribe=["b"],
        resource_names_unsubscribe=["a"],
    )
    outcome = on_delta_request(watches, stale, 0)
    assert outcome.kind is RequestKind.STALE and outcome.respond and outcome.subscribed == {"b"}
    assert state.names == {"b"} and state.resource_versions == {}
    ack = discovery_pb2.DeltaDiscoveryRequest(type_url=T.ENDPOINT, response_nonce="n2")
    outcome = on_delta_request(watches, ack, 0)
    assert outcome.kind is RequestKind.ACK and not outcome.respond


def test_sync_status_like_istioctl():
    assert sync_status("", "") == "NOT SENT"
    assert sync_status("n1", "n1") == "SYNCED"
    assert sync_status("n2", "n1") == "STALE"


def test_push_request_merge():
    eds = PushRequest(full=False, configs_updated=frozenset({ConfigKey("ServiceEntry", "a")}), start=5.0)
    eds2 = PushRequest(full=False, configs_updated=frozenset({ConfigKey("ServiceEntry", "b")}), start=3.0)
    merged = eds.merge(eds2)
    assert merged.eds_only and merged.start == 3.0 and merged.kinds == {"ServiceEntry"}
    assert len(merged.configs_updated) == 2
    full = merged.merge(PushRequest(reasons=frozenset({"config"}), context="ctx"))
    assert full.full and full.context == "ctx" and full.reasons == {"config"}


@asyncio_test
@bounded(5)
async def test_push_queue_merges_per_connection_and_requeues_during_processing():
    queue: PushQueue[str] = PushQueue()
    queue.enqueue("c1", PushRequest(full=False))
    queue.enqueue("c2", PushRequest(full=False))
    queue.enqueue("c1", PushRequest(full=True))
    assert len(queue) == 2
    conn, request = await queue.dequeue()
    assert conn == "c1" and request.full
    queue.enqueue("c1", PushRequest(full=False))  # while c1 is being pushed
    assert len(queue) == 1
    queue.mark_done("c1")
    assert [(await queue.dequeue())[0] for _ in range(2)] == ["c2", "c1"]
    queue.remove("c2")
    queue.mark_done("c1")
    queue.mark_done("c2")
    await asyncio.wait_for(queue.join(), 1)


@asyncio_test
@bounded(5)
async def test_debouncer_merges_a_burst_and_keeps_eds_only():
    pushed: list[PushRequest] = []

    async def push(request: PushRequest) -> None:
        pushed.append(request)

    debouncer = Debouncer(push, DebounceOptions(quiet=0.05, max_delay=1))
    debouncer.start()
    try:
        for name in "abc":
            debouncer.enqueue(PushRequest(full=False, configs_updated=frozenset({ConfigKey("ServiceEntry", name)})))
        await asyncio.sleep(0.2)
        assert len(pushed) == 1 and pushed[0].eds_only and len(pushed[0].configs_updated) == 3
        debouncer.enqueue(PushRequest(full=False))
        debouncer.enqueue(PushRequest(full=True))
        await asyncio.sleep(0.2)
        assert len(pushed) == 2 and pushed[1].full
        assert (debouncer.events, debouncer.pushes) == (5, 2)
    finally:
        await debouncer.stop()


@asyncio_test
@bounded(5)
async def test_debouncer_runs_one_push_at_a_time():
    running, overlaps, pushed = 0, 0, []

    async def slow_push(request: PushRequest) -> None:
        nonlocal running, overlaps
        running += 1
        overlaps = max(overlaps, running)
        await asyncio.sleep(0.1)
        pushed.append(request)
        running -= 1

    debouncer = Debouncer(slow_push, DebounceOptions(quiet=0.01, max_delay=0.05))
    debouncer.start()
    try:
        for _ in range(10):
            debouncer.enqueue(PushRequest())
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert overlaps == 1
        assert 2 <= len(pushed) <= 5  # events during a push coalesce into the next
    finally:
        await debouncer.stop()


@asyncio_test
@bounded(5)
async def test_eds_debounce_disabled_pushes_endpoint_changes_at_once():
    pushed: list[PushRequest] = []

    async def push(request: PushRequest) -> None:
        pushed.append(request)

    debouncer = Debouncer(push, DebounceOptions(quiet=10, max_delay=10, eds_debounce=False))
    debouncer.start()
    try:
        debouncer.enqueue(PushRequest(full=False))
        await asyncio.sleep(0.05)
        assert len(pushed) == 1 and pushed[0].eds_only
    finally:
        await debouncer.stop()
