"""What a request from a proxy means: ACK, NACK, stale, or a (re)subscription.

Sans-I/O: these functions read one request, update the connection's
`WatchState` for its type, and say whether the server must respond. The rules
are the xDS protocol's:

- `response_nonce` ties a request to the response it answers. A nonce other
  than the last one sent for the type is stale: the proxy has not seen our
  latest response yet, so its ACK/NACK says nothing about what it runs; it is
  ignored (in delta xDS its subscription changes still apply).
- `error_detail` present means NACK: the proxy rejected that response and keeps
  running its previous config. `version_info` then names the last version it
  accepted.
- No nonce (first request for a type, or a fresh stream after a reconnect, even
  one carrying a nonce from a previous server) asks for the full current state.
- In state of the world an ACK whose `resource_names` differ from the current
  subscription is also a new subscription, and gets a response.
- Wildcard: "*" among the names, or (legacy) no names on the first request of
  a Listener/Cluster-like type; it stays wildcard while requests stay empty.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from pistio.xds.connection import WatchState
from pistio.xds.types import LEGACY_WILDCARD_TYPES, WILDCARD


class RequestKind(enum.Enum):
    INITIAL = "initial"  # no usable nonce: send the full state of the type
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # answers an older response: ignored
    SUBSCRIPTION = "subscription"  # ACK that also changes the subscription (SotW)
    UPDATE = "update"  # delta request without a nonce on a known type: subscription change only


RESPONDS = frozenset({RequestKind.INITIAL, RequestKind.SUBSCRIPTION})


def _sotw_subscription(state: WatchState, names: Iterable[str], first: bool) -> bool:
    """Set the subscription from a SotW request; True if it changed."""
    requested = {sys.intern(n) for n in names}  # one copy per name across proxies
    if WILDCARD in requested:
        wildcard = True
        requested.discard(WILDCARD)
    elif not requested and state.type_url in LEGACY_WILDCARD_TYPES:
        wildcard = first or state.wildcard
    else:
        wildcard = False
    changed = wildcard != state.wildcard or requested != state.names
    for gone in state.names - requested:
        state.resource_versions.pop(gone, None)
    state.wildcard, state.names = wildcard, requested
    return changed


def on_sotw_request(
    watches: dict[str, WatchState], req: discovery_pb2.DiscoveryRequest, now: float
) -> RequestKind:
    state = watches.get(req.type_url)
    if state is None:
        state = watches[req.type_url] = WatchState(req.type_url)
        _sotw_subscription(state, req.resource_names, first=True)
        return RequestKind.INITIAL
    if not state.nonce_sent or not req.response_nonce:
        _sotw_subscription(state, req.resource_names, first=not state.nonce_sent)
        return RequestKind.INITIAL
    if req.response_nonce != state.nonce_sent:
        return RequestKind.STALE
    if req.HasField("error_detail"):
        state.nonce_nacked = req.response_nonce
        state.error = req.error_detail.message
        return RequestKind.NACK
    state.version_acked = req.version_info
    state.nonce_acked = req.response_nonce
    state.error = ""
    state.acked_at = now
    if _sotw_subscription(state, req.resource_names, first=False):
        return RequestKind.SUBSCRIPTION
    return RequestKind.ACK


@dataclass
class DeltaOutcome:
    kind: RequestKind
    respond: bool
    # Names this request newly subscribed to: if they do not exist, the response
    # says so in removed_resources, so the proxy stops waiting for them.
    subscribed: set[str] = field(default_factory=set)


def on_delta_request(
    watches: dict[str, WatchState], req: discovery_pb2.DeltaDiscoveryRequest, now: float
) -> DeltaOutcome:
    state = watches.get(req.type_url)
    first = state is None
    if state is None:
        state = watches[req.type_url] = WatchState(req.type_url)
        # A reconnecting client tells us what it already has; only differences
        # will be sent, and names it has that no longer exist get removed.
        state.resource_versions.update(req.initial_resource_versions)

    # Subscription changes apply whatever the nonce says: the client will not
    # repeat them.
    subscribe = {sys.intern(n) for n in req.resource_names_subscribe}  # one copy per name
    was_wildcard = state.wildcard
    if WILDCARD in subscribe or (first and not subscribe and req.type_url in LEGACY_WILDCARD_TYPES):
        state.wildcard = True
    subscribe.discard(WILDCARD)
    new_names = subscribe - state.names
    state.names |= subscribe
    for name in req.resource_names_unsubscribe:
        if name == WILDCARD:
            state.wildcard = False
            continue
        state.names.discard(name)
        if not state.wildcard:
            # The client drops an unsubscribed resource; forget we sent it.
            state.resource_versions.pop(name, None)
    if state.wildcard is False and was_wildcard:
        for name in list(state.resource_versions):
            if name not in state.names:
                state.resource_versions.pop(name)
    respond = first or bool(new_names) or (state.wildcard and not was_wildcard)

    if first:
        kind = RequestKind.INITIAL
    elif not req.response_nonce:
        kind = RequestKind.UPDATE
    elif req.response_nonce != state.nonce_sent:
        kind = RequestKind.STALE
    elif req.HasField("error_detail"):
        state.nonce_nacked = req.response_nonce
        state.error = req.error_detail.message
        kind = RequestKind.NACK
    else:
        state.nonce_acked = req.response_nonce
        state.version_acked = state.version_sent
        state.error = ""
        state.acked_at = now
        kind = RequestKind.ACK
    return DeltaOutcome(kind, respond, new_names)
