"""``x-forwarded-client-cert`` as Envoy's HTTP connection manager sets it
(``forward_client_cert_details`` and ``set_current_client_cert_details``).

Envoy's rules, per request:

- ``ALWAYS_FORWARD_ONLY``: the header is left as the client sent it;
- ``SANITIZE`` (the default), or a connection that is not mutual TLS (no client certificate):
  the header is removed;
- ``FORWARD_ONLY``: left as is (on mTLS connections);
- ``APPEND_FORWARD`` / ``SANITIZE_SET``: this hop's element is appended (``,``) to / replaces
  the header. The element is ``By=<local URI SAN>;Hash=<sha256 of the peer certificate>``
  followed by the configured details in Envoy's order ``Cert``, ``Chain``, ``Subject``, ``URI``,
  ``DNS`` — e.g. Istio's sidecar inbound (APPEND_FORWARD with subject, dns, uri):
  ``By=spiffe://cluster.local/ns/a/sa/b;Hash=…;Subject="";URI=spiffe://cluster.local/ns/c/sa/d``.

The element depends only on the connection (its certificates), so it is built once per
(peer certificate, local identity) and reused by every request.
"""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from pistio.proxy.access_log.stream_info import DownstreamConnectionInfo
from pistio.proxy.http.headers import RequestHead
from pistio.proxy.tls.peer import PeerCertificate, url_encoded_pem

XFCC = b"x-forwarded-client-cert"
_HCM = hcm_pb2.HttpConnectionManager
SANITIZE = _HCM.SANITIZE
FORWARD_ONLY = _HCM.FORWARD_ONLY
APPEND_FORWARD = _HCM.APPEND_FORWARD
SANITIZE_SET = _HCM.SANITIZE_SET
ALWAYS_FORWARD_ONLY = _HCM.ALWAYS_FORWARD_ONLY
# Envoy's order. ``chain`` is NACKed by the listener compiler: Python's ssl (3.11) exposes
# the peer's leaf certificate only.
_DETAIL_ORDER = ("cert", "subject", "uri", "dns")
_CACHE_LIMIT = 1024


class XfccPolicy:
    """One HCM's XFCC handling; :meth:`apply` runs once per request."""

    __slots__ = ("mode", "details", "_elements")

    def __init__(self, mode: int, details: tuple[str, ...] = ()) -> None:
        self.mode = mode
        self.details = tuple(d for d in _DETAIL_ORDER if d in details)
        self._elements: dict[tuple[str, str | None], bytes] = {}

    def apply(self, head: RequestHead, downstream: DownstreamConnectionInfo | None) -> None:
        mode = self.mode
        peer = downstream.peer_certificate if downstream is not None else None
        if mode == SANITIZE or peer is None:
            if XFCC in head.index:
                head.remove(XFCC)
            return
        if mode == FORWARD_ONLY:
            return
        assert downstream is not None
        element = self.element(peer, downstream.local_uri_san)
        previous = head.index.get(XFCC) if mode == APPEND_FORWARD else None
        head.set(XFCC, previous + b"," + element if previous else element)

    def element(self, peer: PeerCertificate, local_uri: str | None) -> bytes:
        key = (peer.sha256, local_uri)
        found = self._elements.get(key)
        if found is None:
            parts = [f"By={local_uri}"] if local_uri else []
            parts.append(f"Hash={peer.sha256}")
            for detail in self.details:
                if detail == "cert":
                    parts.append(f'Cert="{url_encoded_pem(peer)}"')
                elif detail == "subject":
                    parts.append(f'Subject="{peer.subject}"')
                elif detail == "uri":
                    parts.extend([f"URI={u}" for u in peer.uri_sans] or ["URI="])
                else:
                    parts.extend(f"DNS={d}" for d in peer.dns_sans)
            found = ";".join(parts).encode("latin-1", "replace")
            if len(self._elements) >= _CACHE_LIMIT:
                self._elements.clear()
            self._elements[key] = found
        return found


def xfcc_policy(forward_client_cert_details: int,
                set_current_client_cert_details: tuple[str, ...]) -> XfccPolicy | None:
    """``None`` when requests are never touched (ALWAYS_FORWARD_ONLY)."""
    if forward_client_cert_details == ALWAYS_FORWARD_ONLY:
        return None
    return XfccPolicy(forward_client_cert_details, set_current_client_cert_details)
