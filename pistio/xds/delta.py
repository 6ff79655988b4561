"""Incremental (delta) ADS: `DeltaAggregatedResources`.

Istio's pilot/pkg/xds/delta.go. The server remembers, per type, which version
(a hash of the serialized resource) of each resource the proxy holds, seeded
on a new stream from the proxy's `initial_resource_versions`. A response
carries only resources whose version differs, and names in
`removed_resources` for resources the proxy holds that no longer exist (or
that it just subscribed to and do not exist). Subscription changes
(`resource_names_subscribe`/`_unsubscribe`) apply on every request;
ACK/NACK follow the same nonce rules as state of the world.
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
from pistio.xds.types import short_name
from pistio.xds.wire import encode_response

if TYPE_CHECKING:
    from pistio.xds.server import DiscoveryServer

log = logging.getLogger("pistio.xds")


def build_response(
    server: DiscoveryServer,
    conn: Connection,
    state: WatchState,
    push: PushRequest,
    subscribed: set[str] | frozenset[str] = frozenset(),
    requested: bool = False,
) -> bytes | None:
    """The encoded response for one type, or None when the proxy already holds everything.

    `requested`: the proxy asked. The very first response of a type is sent even
    when empty, so a proxy waiting for its initial fetch learns there is nothing.
    """
    resources = server.generate(conn, state, push)
    if resources is None:
        if not requested:
            return None
        resources = []
    current = {r.name for r in resources}
    changed = [r for r in resources if state.resource_versions.get(r.name) != r.version]
    removed = [
        name
        for name in state.resource_versions
        if name not in current and (state.wildcard or name in state.names)
    ]
    gone = set(removed)
    removed.extend(sorted(n for n in subscribed if n not in current and n not in gone))
    if not changed and not removed and not (requested and not state.nonce_sent):
        return None
    for r in changed:
        state.resource_versions[r.name] = r.version
    for name in removed:
        state.resource_versions.pop(name, None)
    nonce = state.record_send(push.version_info)
    server.stats.pushes[short_name(state.type_url)] += 1
    head = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=push.version_info,
        type_url=state.type_url,
        nonce=nonce,
        removed_resources=removed,
        control_plane=server.control_plane,
    )
    return encode_response(head, [r.delta_field for r in changed])


def on_request(
    server: DiscoveryServer, conn: Connection, req: discovery_pb2.DeltaDiscoveryRequest
) -> bytes | None:
    if req.type_url not in server.generators:
        # A type we do not serve (or a node-only request): no answer, as istiod.
        log.debug("ADS: %s asked for unserved type %r", conn.conn_id, req.type_url)
        return None
    outcome = ack.on_delta_request(conn.watches, req, time.time())
    state = conn.watches[req.type_url]
    if outcome.kind is ack.RequestKind.NACK:
        server.record_nack(conn, state)
    if not outcome.respond:
        return None
    return build_response(
        server, conn, state, server.request_push(), outcome.subscribed, requested=True
    )


async def stream(
    server: DiscoveryServer,
    request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
    context: grpc.aio.ServicerContext,
    identities: tuple[str, ...] = (),
) -> AsyncIterator[bytes]:
    first = await server.first_request(request_iterator, context)
    if first is None:
        return
    conn = server.open_connection(first.node, context, delta=True, identities=identities)
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
                            server, conn, conn.watches[type_url], event.request
                        )
                        if push_resp is not None:
                            yield push_resp
                    server.push_converged(event)
                finally:
                    server.push_finished(event)
            elif isinstance(event, discovery_pb2.DeltaDiscoveryRequest):
                if (response := on_request(server, conn, event)) is not None:
                    yield response
            else:  # end of the request stream
                return
    finally:
        reader.cancel()
        server.close_connection(conn)
