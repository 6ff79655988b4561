"""Who sent a request, and which of its headers to trust: Envoy's internal/external rules.

Envoy's connection manager decides per request whether it is *internal* (from inside the
trusted network) or *external*, and an external request at the first proxy that uses the
remote address is an *edge* request (Envoy docs: "HTTP header sanitizing" and
"x-forwarded-for"; ``ConnectionManagerUtility::mutateRequestHeaders``):

- ``use_remote_address: true`` (gateways): the connection's peer is appended to
  ``x-forwarded-for`` (its local address when the peer is loopback; not with
  ``skip_xff_append``) and ``x-forwarded-proto`` is overwritten with the connection's scheme
  unless ``xff_num_trusted_hops`` says the previous hop is trusted. The client address is the
  peer, or with trusted hops the ``x-forwarded-for`` entry that many hops from the right
  *before* the append; only a request that arrived without ``x-forwarded-for`` can be internal.
- otherwise (sidecars): the client address is the ``x-forwarded-for`` entry
  ``xff_num_trusted_hops`` from the right, and only a request whose ``x-forwarded-for`` holds a
  single address can be internal; without the header the request is external.
- internal = that client address lies in ``internal_address_config`` (its CIDR ranges; Unix
  socket peers with ``unix_sockets``). With no ``internal_address_config`` nothing is internal:
  Envoy 1.36 dropped the old RFC 1918 default.

An internal request gets ``x-envoy-internal: true`` (a client's own value is always removed).
An external one loses the ``x-envoy-*`` headers that steer the proxy (retries, timeouts,
forced tracing, ...) and the route configuration's ``internal_only_headers``; at the edge it
also loses the decorator and downstream-service headers, gets ``x-envoy-external-address``
and a fresh ``x-request-id`` (unless ``preserve_external_request_id``). An address taken from
``x-forwarded-for`` becomes the stream's downstream remote address (RBAC ``remote_ip``,
``%DOWNSTREAM_REMOTE_ADDRESS%``, CEL ``source.address``), with port 0 as in Envoy.

A sidecar request without ``x-forwarded-for`` costs one lookup and one set test here.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.http.headers import X_FORWARDED_PROTO, X_REQUEST_ID, RequestHead

X_FORWARDED_FOR = b"x-forwarded-for"
X_ENVOY_INTERNAL = b"x-envoy-internal"
X_ENVOY_EXTERNAL_ADDRESS = b"x-envoy-external-address"

# Removed from every external request (Envoy's cleanInternalHeaders).
EXTERNAL_STRIPPED = frozenset({
    b"x-envoy-retriable-status-codes",
    b"x-envoy-retriable-header-names",
    b"x-envoy-retry-on",
    b"x-envoy-retry-grpc-on",
    b"x-envoy-max-retries",
    b"x-envoy-upstream-alt-stat-name",
    b"x-envoy-upstream-rq-timeout-ms",
    b"x-envoy-upstream-rq-per-try-timeout-ms",
    b"x-envoy-upstream-rq-timeout-alt-response",
    b"x-envoy-expected-rq-timeout-ms",
    b"x-envoy-force-trace",
    b"x-envoy-ip-tags",
    b"x-envoy-original-url",
    b"x-envoy-hedge-on-per-try-timeout",
})
# Removed from edge requests only.
EDGE_STRIPPED = frozenset({
    b"x-envoy-decorator-operation",
    b"x-envoy-downstream-service-cluster",
    b"x-envoy-downstream-service-node",
})
# What a sidecar request without x-forwarded-for is checked for in one set test.
_SIDECAR_CHECK = EXTERNAL_STRIPPED | {X_ENVOY_INTERNAL}
# A request with none of these headers, at a connection manager without use_remote_address
# and a route configuration without internal_only_headers, is left as it is.
SIDECAR_UNTOUCHED = _SIDECAR_CHECK | {X_FORWARDED_FOR}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = tuple[str, int] | str


def last_address_from_xff(xff: bytes, skip: int) -> tuple[str | None, bool]:
    """The ``x-forwarded-for`` entry ``skip`` places from the right, as an IP address text, and
    whether it was the header's only entry (Envoy's ``getLastAddressFromXFF``). Entries are
    split on commas and trimmed; an entry that is not an IP address gives ``(None, False)``."""
    entries = xff.split(b",")
    if skip >= len(entries):
        return None, False
    text = entries[len(entries) - 1 - skip].strip().decode("latin-1")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None, False
    return str(ip), len(entries) == 1 and skip == 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class RequestTrust:
    """One connection manager's settings for the rules above, compiled once."""

    use_remote_address: bool = False
    xff_num_trusted_hops: int = 0
    skip_xff_append: bool = False
    internal_networks: tuple[Network, ...] = ()
    internal_unix_sockets: bool = False
    generate_request_id: bool = True
    preserve_external_request_id: bool = False

    @classmethod
    def of(cls, use_remote_address: bool, xff_num_trusted_hops: int, skip_xff_append: bool,
           internal_cidrs: Iterable[str], internal_unix_sockets: bool,
           generate_request_id: bool, preserve_external_request_id: bool) -> RequestTrust:
        return cls(use_remote_address, xff_num_trusted_hops, skip_xff_append,
                   tuple(ipaddress.ip_network(c, strict=False) for c in internal_cidrs),
                   internal_unix_sockets, generate_request_id, preserve_external_request_id)

    def is_internal(self, address: Address) -> bool:
        if isinstance(address, str):  # a Unix socket path
            return self.internal_unix_sockets
        if not self.internal_networks:
            return False
        try:
            ip = ipaddress.ip_address(address[0])
        except ValueError:
            return False
        return any(ip in net for net in self.internal_networks)

    def apply(self, head: RequestHead, downstream: DownstreamConnectionInfo | None,
              internal_only: tuple[bytes, ...], forwarded_proto: bytes,
              new_request_id: Callable[[], bytes]) -> DownstreamConnectionInfo | None:
        """Edit ``head`` as the rules say; returns the stream's own downstream view when the
        client address came from ``x-forwarded-for`` (else None: the connection's stands)."""
        index = head.index
        if not self.use_remote_address and X_FORWARDED_FOR not in index:
            # A sidecar's usual request: external, not edge, client address = the peer.
            if not _SIDECAR_CHECK.isdisjoint(index) or internal_only:
                _strip(head, False, internal_only)
            return None
        peer: Address | None = downstream.direct_remote_address if downstream else None
        final: Address | None = None
        from_xff = False
        if self.use_remote_address:
            xff = index.get(X_FORWARDED_FOR)
            trusted_checks = xff is None
            hops = self.xff_num_trusted_hops
            if hops > 0 and xff is not None:
                ip, _ = last_address_from_xff(xff, hops - 1)
                if ip is not None:
                    final, from_xff = (ip, 0), True
            if final is None:
                final = peer
            if not self.skip_xff_append and isinstance(peer, tuple):
                appended = peer[0]
                if _is_loopback(appended) and downstream is not None and isinstance(
                        downstream.local_address, tuple):
                    appended = downstream.local_address[0]
                value = appended.encode("latin-1")
                head.set(X_FORWARDED_FOR, xff + b"," + value if xff else value)
            if hops == 0 or X_FORWARDED_PROTO not in index:
                head.set(X_FORWARDED_PROTO, forwarded_proto)
        else:
            ip, trusted_checks = last_address_from_xff(index[X_FORWARDED_FOR],
                                                       self.xff_num_trusted_hops)
            if ip is not None:
                final, from_xff = (ip, 0), True
        internal = trusted_checks and final is not None and self.is_internal(final)
        edge = not internal and self.use_remote_address
        if internal:
            head.set(X_ENVOY_INTERNAL, b"true")
        else:
            _strip(head, edge, internal_only)
        if final is None:
            final = peer
        if edge:
            if isinstance(final, tuple):
                head.set(X_ENVOY_EXTERNAL_ADDRESS, final[0].encode("latin-1"))
            if self.generate_request_id and not self.preserve_external_request_id:
                head.set(X_REQUEST_ID, new_request_id())
        if from_xff and final is not None:
            return _with_remote(downstream, final)
        return None


def _strip(head: RequestHead, edge: bool, internal_only: tuple[bytes, ...]) -> None:
    index = head.index
    names = [n for n in index if n in EXTERNAL_STRIPPED or n == X_ENVOY_INTERNAL
             or (edge and n in EDGE_STRIPPED)]
    names += (h for h in internal_only if h in index)
    if names:
        drop = frozenset(names)
        head.fields = [(n, v) for n, v in head.fields if n.lower() not in drop]
        for n in drop:
            index.pop(n, None)


def _with_remote(downstream: DownstreamConnectionInfo | None,
                 remote: Address) -> DownstreamConnectionInfo:
    """A copy of the connection's facts for one stream, its remote address replaced (the
    socket's peer stays ``direct_remote_address``)."""
    view = copy.copy(downstream) if downstream is not None else DownstreamConnectionInfo()
    view.remote_address = remote
    return view
