"""The node's DNS server over real UDP and TCP sockets on 127.0.0.1 (no namespaces needed).

The server runs on its own event loop in a thread, as in the node; the tests are plain
blocking clients (dnspython's dns.query and raw sockets).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from pistio.node.dns import DnsServer, DnsTable

TIMEOUT = 3.0
REVIEWS = "reviews.default.svc.cluster.local"
BOOKINFO = {
    REVIEWS: ["10.96.0.10"],
    "ratings.default.svc.cluster.local": ["10.96.0.11"],
    "productpage.default.svc.cluster.local": ["10.96.0.12"],
}


class Running:
    def __init__(self, table: DnsTable, server: DnsServer, loop: asyncio.AbstractEventLoop,
                 addr: tuple[str, int]) -> None:
        self.table, self.server, self.loop = table, server, loop
        self.host, self.port = addr

    def udp(self, name: str, rdtype: str = "A", **kw) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        return dns.query.udp(q, self.host, port=self.port, timeout=TIMEOUT)

    def tcp(self, name: str, rdtype: str = "A", **kw) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        return dns.query.tcp(q, self.host, port=self.port, timeout=TIMEOUT)


@pytest.fixture
def dns_server() -> Iterator[Running]:
    table = DnsTable()
    table.replace(BOOKINFO)
    server = DnsServer(table)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="dns-test-loop", daemon=True)
    thread.start()
    try:
        started: Future = asyncio.run_coroutine_threadsafe(server.start("127.0.0.1", 0), loop)
        addr = started.result(TIMEOUT)
        yield Running(table, server, loop, addr)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


def _ips(resp: dns.message.Message) -> list[str]:
    return [rd.address for rrset in resp.answer if rrset.rdtype == dns.rdatatype.A
            for rd in rrset]


def _soa_in_authority(resp: dns.message.Message) -> bool:
    return any(r.rdtype == dns.rdatatype.SOA and r.name.to_text() == "cluster.local."
               for r in resp.authority)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_record_for_a_known_service(dns_server: Running, transport: str) -> None:
    resp = getattr(dns_server, transport)(REVIEWS)
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.flags & dns.flags.AA and resp.flags & dns.flags.QR
    assert not resp.flags & dns.flags.TC
    assert _ips(resp) == ["10.96.0.10"]
    (rrset,) = resp.answer
    assert rrset.ttl == 30
    assert rrset.name.to_text() == REVIEWS + "."


def test_lookup_is_case_insensitive_and_echoes_the_question(dns_server: Running) -> None:
    resp = dns_server.udp("ReViEwS.Default.SVC.cluster.LOCAL")
    assert _ips(resp) == ["10.96.0.10"]
    # The answer owner keeps the asker's spelling (0x20 case randomisation checks this).
    assert resp.answer[0].name.to_text() == "ReViEwS.Default.SVC.cluster.LOCAL."
    assert resp.question[0].name.to_text() == "ReViEwS.Default.SVC.cluster.LOCAL."
    assert dns_server.table.lookup("REVIEWS.default.svc.cluster.local.") == ("10.96.0.10",)
    assert dns_server.table.lookup(REVIEWS) == ("10.96.0.10",)
    assert dns_server.table.lookup("nope.default.svc.cluster.local") is None


@pytest.mark.parametrize("rdtype", ["AAAA", "MX", "TXT", "SRV"])
def test_other_types_on_a_known_name_are_nodata(dns_server: Running, rdtype: str) -> None:
    resp = dns_server.udp(REVIEWS, rdtype)
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.answer == []
    assert resp.flags & dns.flags.AA
    assert _soa_in_authority(resp)  # RFC 2308: lets resolvers cache the negative answer


def test_empty_non_terminal_is_nodata_not_nxdomain(dns_server: Running) -> None:
    # "default.svc.cluster.local" owns nothing but has names below it (RFC 8020).
    for name in ("default.svc.cluster.local", "svc.cluster.local", "cluster.local"):
        resp = dns_server.udp(name)
        assert resp.rcode() == dns.rcode.NOERROR, name
        assert resp.answer == [], name


def test_soa_at_the_apex(dns_server: Running) -> None:
    resp = dns_server.udp("cluster.local", "SOA")
    assert resp.rcode() == dns.rcode.NOERROR
    (rrset,) = resp.answer
    assert rrset.rdtype == dns.rdatatype.SOA and rrset.ttl == 30


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_unknown_name_inside_the_domain_is_nxdomain_with_soa(dns_server: Running,
                                                             transport: str) -> None:
    for name in ("nope.default.svc.cluster.local",
                 # what glibc asks first for "reviews.default..." with ndots:5 and the
                 # search list: must be NXDOMAIN so it moves on to the next candidate
                 REVIEWS + ".default.svc.cluster.local"):
        resp = getattr(dns_server, transport)(name)
        assert resp.rcode() == dns.rcode.NXDOMAIN, name
        assert resp.flags & dns.flags.AA
        assert resp.answer == []
        assert _soa_in_authority(resp)
        soa = next(r for r in resp.authority if r.rdtype == dns.rdatatype.SOA)[0]
        assert soa.minimum == 30


@pytest.mark.parametrize("name", ["example.com", "reviews", "reviews.default",
                                  "10.0.96.10.in-addr.arpa", "local", "cluster.local.evil.com"])
def test_names_outside_the_cluster_domain_are_refused(dns_server: Running, name: str) -> None:
    resp = dns_server.udp(name)
    assert resp.rcode() == dns.rcode.REFUSED
    assert resp.answer == [] and not resp.flags & dns.flags.AA


def test_replace_is_visible_to_the_next_query(dns_server: Running) -> None:
    assert _ips(dns_server.udp(REVIEWS)) == ["10.96.0.10"]
    dns_server.table.replace({REVIEWS: ["10.96.0.99"],
                              "details.default.svc.cluster.local": ["10.96.0.13"]})
    assert _ips(dns_server.udp(REVIEWS)) == ["10.96.0.99"]
    assert _ips(dns_server.tcp("details.default.svc.cluster.local")) == ["10.96.0.13"]
    # Names missing from the new table are gone (replace, not merge).
    assert dns_server.udp("ratings.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    dns_server.table.replace({})
    assert dns_server.udp(REVIEWS).rcode() == dns.rcode.NXDOMAIN


def test_replace_rejects_bad_input_and_keeps_the_old_table(dns_server: Running) -> None:
    for bad in ({"reviews.default.svc.example.com": ["10.96.0.1"]},
                {REVIEWS: ["not-an-ip"]},
                {REVIEWS: ["fd00::1"]},
                {"cluster.local": ["10.96.0.1"]}):
        with pytest.raises(ValueError):
            dns_server.table.replace(bad)
    assert _ips(dns_server.udp(REVIEWS)) == ["10.96.0.10"]


def test_headless_service_answers_every_pod_ip(dns_server: Running) -> None:
    pods = ["10.88.0.5", "10.88.0.6", "10.88.0.7"]
    dns_server.table.replace({**BOOKINFO, "db.default.svc.cluster.local": pods + ["10.88.0.5"]})
    for transport in ("udp", "tcp"):
        resp = getattr(dns_server, transport)("db.default.svc.cluster.local")
        assert sorted(_ips(resp)) == pods  # duplicates removed
        assert len(resp.answer) == 1 and resp.answer[0].ttl == 30


def _big_table(n: int) -> dict[str, list[str]]:
    return {**BOOKINFO, "big.default.svc.cluster.local": [f"10.88.1.{i}" for i in range(1, n + 1)]}


def test_big_answer_is_truncated_over_udp_and_complete_over_tcp(dns_server: Running) -> None:
    dns_server.table.replace(_big_table(60))  # 60 A records ≈ 1 KB > 512 bytes
    q = dns.message.make_query("big.default.svc.cluster.local", "A")  # no EDNS
    # Raw UDP so that we see the datagram's size and flags exactly.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(q.to_wire(), (dns_server.host, dns_server.port))
        wire, _ = s.recvfrom(65535)
    assert len(wire) <= 512
    resp = dns.message.from_wire(wire)
    assert resp.id == q.id
    assert resp.flags & dns.flags.TC
    assert resp.answer == []
    # A resolver retries over TCP on TC and gets all of it (dnspython's fallback does).
    q2 = dns.message.make_query("big.default.svc.cluster.local", "A")
    resp, used_tcp = dns.query.udp_with_fallback(q2, dns_server.host, port=dns_server.port,
                                                 timeout=TIMEOUT)
    assert used_tcp
    assert not resp.flags & dns.flags.TC
    assert set(_ips(resp)) == {f"10.88.1.{i}" for i in range(1, 61)}


def test_edns_client_gets_a_bigger_udp_answer(dns_server: Running) -> None:
    dns_server.table.replace(_big_table(60))
    resp = dns_server.udp("big.default.svc.cluster.local", use_edns=0, payload=4096)
    assert not resp.flags & dns.flags.TC
    assert len(_ips(resp)) == 60
    assert resp.edns == 0
    # Beyond our EDNS size (1232) it still truncates rather than fragment.
    dns_server.table.replace(_big_table(250))
    resp = dns_server.udp("big.default.svc.cluster.local", use_edns=0, payload=4096)
    assert resp.flags & dns.flags.TC
    assert len(_ips(dns_server.tcp("big.default.svc.cluster.local"))) == 250


def test_small_answer_to_a_tiny_edns_size_is_not_truncated(dns_server: Running) -> None:
    # EDNS sizes below 512 are treated as 512 (RFC 6891 §6.2.5).
    resp = dns_server.udp(REVIEWS, use_edns=0, payload=100)
    assert not resp.flags & dns.flags.TC and _ips(resp) == ["10.96.0.10"]


GARBAGE = [b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\xff" * 40,
           # a valid header claiming a question that is not there
           struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0),
           # a question whose label length runs past the end
           struct.pack("!HHHHHH", 2, 0x0100, 1, 0, 0, 0) + b"\x3fabc"]


def test_udp_garbage_is_dropped_and_the_server_keeps_answering(dns_server: Running) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        for junk in GARBAGE:
            s.sendto(junk, (dns_server.host, dns_server.port))
        with pytest.raises(TimeoutError):
            s.recvfrom(65535)  # nothing comes back for garbage
        # A response (QR set) sent to us is not answered either: no reflection loops.
        reply = dns.message.make_response(dns.message.make_query(REVIEWS, "A"))
        s.sendto(reply.to_wire(), (dns_server.host, dns_server.port))
        with pytest.raises(TimeoutError):
            s.recvfrom(65535)
        # The same socket still gets a good query answered.
        s.settimeout(TIMEOUT)
        q = dns.message.make_query(REVIEWS, "A")
        s.sendto(q.to_wire(), (dns_server.host, dns_server.port))
        wire, _ = s.recvfrom(65535)
    assert _ips(dns.message.from_wire(wire)) == ["10.96.0.10"]
    assert _ips(dns_server.udp(REVIEWS)) == ["10.96.0.10"]


def _tcp_read_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def test_tcp_garbage_closes_the_connection_and_the_server_keeps_answering(
        dns_server: Running) -> None:
    addr = (dns_server.host, dns_server.port)
    # Garbage framed as a DNS message, then garbage that is not even framed.
    for payload in (struct.pack("!H", 13) + b"\xff" * 13,
                    struct.pack("!H", 0),
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(addr, timeout=TIMEOUT) as s:
            s.sendall(payload)
            if payload.startswith(b"GET"):
                s.shutdown(socket.SHUT_WR)  # a short "frame" never completes; we hang up
            assert s.recv(100) == b""       # server closed the connection
    # A half-sent message then a disconnect.
    with socket.create_connection(addr, timeout=TIMEOUT) as s:
        s.sendall(struct.pack("!H", 300) + b"\x00" * 10)
    # Several queries on one connection (RFC 7766 pipelining) still work.
    with socket.create_connection(addr, timeout=TIMEOUT) as s:
        queries = [dns.message.make_query(n, "A") for n in (REVIEWS, "nope.svc.cluster.local")]
        for q in queries:
            w = q.to_wire()
            s.sendall(struct.pack("!H", len(w)) + w)
        answers = []
        for _ in queries:
            (n,) = struct.unpack("!H", _tcp_read_exactly(s, 2))
            answers.append(dns.message.from_wire(_tcp_read_exactly(s, n)))
    assert [a.id for a in answers] == [q.id for q in queries]
    assert _ips(answers[0]) == ["10.96.0.10"]
    assert answers[1].rcode() == dns.rcode.NXDOMAIN
    assert _ips(dns_server.tcp(REVIEWS)) == ["10.96.0.10"]
    assert _ips(dns_server.udp(REVIEWS)) == ["10.96.0.10"]


def test_unsupported_opcode_is_notimp(dns_server: Running) -> None:
    q = dns.message.make_query(REVIEWS, "A")
    q.set_opcode(dns.opcode.NOTIFY)
    resp = dns.query.udp(q, dns_server.host, port=dns_server.port, timeout=TIMEOUT)
    assert resp.rcode() == dns.rcode.NOTIMP


def test_udp_and_tcp_share_the_port_and_close_frees_it() -> None:
    async def scenario() -> None:
        server = DnsServer(DnsTable())
        host, port = await server.start("127.0.0.1", 0)
        assert host == "127.0.0.1" and port > 0
        with pytest.raises(RuntimeError):
            await server.start("127.0.0.1", 0)
        # A client connection that is still open must not keep close() waiting.
        _r, w = await asyncio.open_connection(host, port)
        await asyncio.wait_for(server.close(), TIMEOUT)
        await server.close()  # idempotent
        w.close()
        # Both ports are free again.
        again = DnsServer(DnsTable())
        assert await again.start("127.0.0.1", port) == (host, port)
        await again.close()

    asyncio.run(scenario())


def test_repeated_queries_get_their_own_id_and_spelling(dns_server: Running) -> None:
    # Responses are cached by query bytes; the ID and the asker's case must still be echoed.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        for qid, name in [(1, REVIEWS), (2, REVIEWS), (65535, REVIEWS.upper()), (3, REVIEWS)]:
            q = dns.message.make_query(name, "A", id=qid)
            s.sendto(q.to_wire(), (dns_server.host, dns_server.port))
            resp = dns.message.from_wire(s.recvfrom(65535)[0])
            assert resp.id == qid
            assert resp.question[0].name.to_text() == name + "."
            assert resp.answer[0].name.to_text() == name + "."
            assert _ips(resp) == ["10.96.0.10"]
