"""Authoritative DNS for the cluster domain over UDP and TCP (asyncio + dnspython).

What it answers (RFC 1034/2308 semantics, values like CoreDNS's kubernetes plugin):
- known name, A (or ANY): the addresses, TTL 30, AA;
- known name or empty non-terminal, other types: NOERROR, no answer, SOA in authority, AA;
- unknown name inside the domain: NXDOMAIN, SOA in authority, AA;
- anything outside the domain: REFUSED (pods have no route off the host, so no forwarding);
- not a query (QR set), unparsable: dropped on UDP, connection closed on TCP.
UDP answers larger than 512 bytes (or the client's EDNS size) are sent truncated (TC, no
records) so the resolver retries over TCP. No logging on the per-query path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pistio.node.dns.records import DnsTable, Snapshot

log = logging.getLogger(__name__)

_A = dns.rdatatype.A
_ANY = dns.rdatatype.ANY
_SOA = dns.rdatatype.SOA
_IN = dns.rdataclass.IN
_CLASSIC_UDP = 512
_MAX_UDP = 1232           # the DNS flag day 2020 EDNS size: no IP fragmentation
_TCP_IDLE = 10.0          # seconds a TCP client may sit silent before we hang up
_TCP_MAX_CONNS = 256      # bounds memory if something opens connections and stalls
_TCP_MAX_QUERIES = 1000   # per connection, then close (the client reconnects)
_CACHE_MAX = 2048         # cached responses per table snapshot (cleared when full)
_MISS = object()


class DnsServer:
    def __init__(self, table: DnsTable) -> None:
        self.table = table
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._warned = False
        # The response is a pure function of (query bytes minus the ID, transport, table
        # snapshot), so repeated queries (glibc asks the same few names over and over) cost
        # one dict lookup instead of a dnspython parse and render.
        self._cache: dict[tuple[bool, bytes], bytes | None] = {}
        self._cache_snap: object = None

    async def start(self, host: str, port: int = 53) -> tuple[str, int]:
        """Bind UDP and TCP on the same port (0 = any free one); return the bound address."""
        if self._udp is not None:
            raise RuntimeError("DnsServer already started")
        loop = asyncio.get_running_loop()
        # With port 0 the UDP port picked may be taken for TCP: retry a bounded few times.
        for _ in range(1 if port else 20):
            udp, _proto = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port))
            bound = udp.get_extra_info("sockname")
            try:
                tcp = await asyncio.start_server(self._serve_tcp, host, bound[1])
            except OSError:
                udp.close()
                if port:
                    raise
                continue
            self._udp, self._tcp = udp, tcp
            return bound[0], bound[1]
        raise OSError(f"no port free for both UDP and TCP on {host}")

    async def close(self) -> None:
        """Stop listening and drop open TCP connections; idempotent."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for w in list(self._conns):
                w.close()
            await self._tcp.wait_closed()
            self._tcp = None

    # ---- the per-query path -------------------------------------------------------------

    def answer(self, wire: bytes, *, udp: bool) -> bytes | None:
        """The response bytes for one query message, or None to drop it."""
        snap = self.table.snapshot()
        if snap is not self._cache_snap:
            self._cache.clear()
            self._cache_snap = snap
        key = (udp, wire[2:])
        hit = self._cache.get(key, _MISS)
        if hit is not _MISS:
            return None if hit is None else wire[:2] + hit  # type: ignore[operator]
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # dnspython raises many types on garbage; all mean "malformed"
            out = None
        else:
            if query.flags & dns.flags.QR:
                out = None  # never answer a response: avoids reflection loops
            else:
                try:
                    out = self._respond(query, snap, udp)
                except Exception:
                    # A bug here must not take the server down; say so once, SERVFAIL.
                    if not self._warned:
                        self._warned = True
                        log.exception("DNS: failed to answer a query (further ones not logged)")
                    return _servfail(query)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = None if out is None else out[2:]
        return out

    def _respond(self, query: dns.message.Message, snap: Snapshot, udp: bool) -> bytes:
        resp = dns.message.make_response(query, our_payload=_MAX_UDP)
        limit = 65535
        if udp:
            limit = max(_CLASSIC_UDP, min(query.payload, _MAX_UDP)) if query.edns >= 0 \
                else _CLASSIC_UDP
        if query.edns > 0:
            resp.set_rcode(dns.rcode.BADVERS)
            return resp.to_wire(max_size=limit)
        if query.opcode() != dns.opcode.QUERY:
            resp.set_rcode(dns.rcode.NOTIMP)
            return resp.to_wire(max_size=limit)
        if len(query.question) != 1:
            resp.set_rcode(dns.rcode.FORMERR)
            return resp.to_wire(max_size=limit)
        q = query.question[0]
        origin = self.table.origin
        if q.rdclass not in (_IN, dns.rdataclass.ANY) or not q.name.is_subdomain(origin):
            resp.set_rcode(dns.rcode.REFUSED)
            return resp.to_wire(max_size=limit)
        resp.flags |= dns.flags.AA
        rds = snap.a.get(q.name)
        if rds is not None and q.rdtype in (_A, _ANY):
            rrset = dns.rrset.RRset(q.name, _IN, _A)
            rrset.update(rds)
            resp.answer.append(rrset)
        elif q.name == origin and q.rdtype == _SOA:
            resp.answer.append(self._soa_rrset(snap.soa))
        else:
            if rds is None and q.name not in snap.ents:
                resp.set_rcode(dns.rcode.NXDOMAIN)
            resp.authority.append(self._soa_rrset(snap.soa))
        try:
            return resp.to_wire(max_size=limit)
        except dns.exception.TooBig:
            # RFC 2181 §9: a truncated answer is retried over TCP; send no partial RRsets.
            resp.answer.clear()
            resp.authority.clear()
            resp.additional.clear()
            resp.flags |= dns.flags.TC
            return resp.to_wire(max_size=limit)

    def _soa_rrset(self, soa) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(self.table.origin, _IN, _SOA)
        rrset.update(soa)
        return rrset

    # ---- transports ---------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= _TCP_MAX_CONNS:
            writer.close()
            return
        self._conns.add(writer)
        try:
            for _ in range(_TCP_MAX_QUERIES):
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), _TCP_IDLE)
                    body = await asyncio.wait_for(
                        reader.readexactly(int.from_bytes(head, "big")), _TCP_IDLE)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                out = self.answer(body, udp=False)
                if out is None:
                    return  # malformed stream: we cannot resynchronise, hang up
                writer.write(len(out).to_bytes(2, "big") + out)
                try:
                    await asyncio.wait_for(writer.drain(), _TCP_IDLE)
                except (TimeoutError, ConnectionError):
                    return
        finally:
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        out = self._server.answer(data, udp=True)
        if out is not None and self._transport is not None:
            self._transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from clients that went away; the socket keeps serving


def _servfail(query: dns.message.Message) -> bytes | None:
    try:
        resp = dns.message.make_response(query)
        resp.set_rcode(dns.rcode.SERVFAIL)
        return resp.to_wire(max_size=_CLASSIC_UDP)
    except Exception:
        return None
