"""State-of-the-world ADS: `StreamAggregatedResources`.

Istio's pilot/pkg/xds/ads.go. One stream carries every type. Each response for
a type gets a fresh nonce; the proxy answers each with an ACK or NACK (see
`ack.py`). Responses answering a request carry everything the proxy watches;
pushes carry, for Listener and Cluster, the complete set (absence means
deletion) and, for other types, only the resources whose content changed.
A push whose output equals what the proxy already got sends nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from pistio.xds import ack
from pistio.xds.connection import Connection, PushEvent, WatchState
from pistio.xds.push_request import PushRequest
from pistio.xds.types import SOTW_COMPLETE_TYPES, short_name
from pistio.xds.wire import encode_response

if TYPE_CHECKING:
    from pistio.xds.server import DiscoveryServer

log = logging.getLogger("pistio.xds")


def build_response(
    server: DiscoveryServer,
    conn: Connection,
    state: WatchState,
    push: PushRequest,
    requested: bool,
) -> bytes | None:
    """The encoded response for one type, or None when there is nothing to send.

    `requested`: the proxy asked (first request, new subscription), so it gets
    the full set even if unchanged.
    """
    resources = server.generate(conn, state, push)
    if resources is None:
        if not requested:
            return None
        resources = []  # the proxy asked: "nothing" is an answer it must get
    current = {r.name: r.version for r in resources}
    if requested or state.type_url in SOTW_COMPLETE_TYPES:
        if not requested and current == state.resource_versions:
            return None
        to_send = resources
        state.resource_versions = current
    else:
        to_send = [r for r in resources if state.resource_versions.get(r.name) != r.version]
        if not to_send:
            return None
        state.resource_versions.update((r.name, r.version) for r in to_send)
    nonce = state.record_send(push.version_info)
    server.stats.pushes[short_name(state.type_url)] += 1
    head = discovery_pb2.DiscoveryResponse(
        version_info=push.version_info,
        type_url=state.type_url,
        nonce=nonce,
        control_plane=server.control_plane,
    )
    return encode_response(head, [r.sotw_field for r in to_send])


def on_request(
    server: DiscoveryServer, conn: Connection, req: discovery_pb2.DiscoveryRequest
) -> bytes | None:
    if req.type_url not in server.generators:
        # A type we do not serve (or a node-only request): no answer, as istiod.
        log.debug("ADS: %s asked for unserved type %r", conn.conn_id, req.type_url)
        return None
    kind = ack.on_sotw_request(conn.watches, req, time.time())
    state = conn.watches[req.type_url]
    if kind is ack.RequestKind.NACK:
        server.record_nack(conn, state)
        return None
    if kind not in ack.RESPONDS:
        log.debug(
            "ADS:%s: %s %s nonce=%s",
            short_name(req.type_url),
            kind.value,
            conn.conn_id,
            req.response_nonce,
        )
        return None
    return build_response(server, conn, state, server.request_push(), requested=True)


async def stream(
    server: DiscoveryServer,
    request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
    context: grpc.aio.ServicerContext,
    identities: tuple[str, ...] = (),
) -> AsyncIterator[bytes]:
    first = await server.first_request(request_iterator, context)
    if first is None:
        return
    conn = server.open_connection(first.node, context, delta=False, identities=identities)
    reader = server.start_reader(conn, request_iterator)
    try:
        if (response := on_request(server, conn, first)) is not None:
            yield response
        while True:
            event = await conn.inbox.get()
            if isinstance(event, PushEvent):
                try:
                    for type_url in server.push_types(conn, event.request):
                        push_resp = build_response(
                            server, conn, conn.watches[type_url], event.request, requested=False
                        )
                        if push_resp is not None:
                            yield push_resp
                    server.push_converged(event)
                finally:
                    server.push_finished(event)
            elif isinstance(event, discovery_pb2.DiscoveryRequest):
                if (response := on_request(server, conn, event)) is not None:
                    yield response
            else:  # end of the request stream
                return
    finally:
        reader.cancel()
        server.close_connection(conn)
