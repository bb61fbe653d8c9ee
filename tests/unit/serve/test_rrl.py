"""authd.serve.rrl: response rate limiting over the real responder and the example zone.

Time comes from a FakeClock; clients are raw sockaddr bytes (as the batched UDP path
hands them over) or address tuples (as the fallback path does).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from authd.clock import FakeClock
from authd.config import RrlConfig
from authd.serve import rrl
from authd.serve.responder import Responder
from authd.serve.zonetable import ZoneTable
from authd.zone import names
from authd.zone.loader import load_zone_file

ZONE_FILE = Path(__file__).resolve().parents[3] / "zones" / "example.test.zone"


def sockaddr(host: str, port: int = 5353) -> bytes:
    """The raw struct sockaddr_in/in6 recvmmsg fills in, as the batched UDP path passes it."""
    if ":" in host:
        return (
            socket.AF_INET6.to_bytes(2, sys.byteorder)
            + struct.pack(">HI", port, 0)
            + socket.inet_pton(socket.AF_INET6, host)
            + b"\x00" * 4
        )
    return (
        socket.AF_INET.to_bytes(2, sys.byteorder)
        + struct.pack(">H", port)
        + socket.inet_aton(host)
        + b"\x00" * 8
    )


@pytest.fixture(scope="module")
def zones() -> ZoneTable:
    table = ZoneTable()
    snapshot = load_zone_file(ZONE_FILE, "example.test.")
    table.publish(names.key_from_text("example.test."), snapshot)
    return table


def responder(zones: ZoneTable) -> Responder:
    return Responder(zones, identity="", version="", nsid=b"", udp_payload=1232)


def limiter(
    zones: ZoneTable,
    clock: FakeClock,
    *,
    rate: int = 5,
    slip: int = 2,
    workers: int = 1,
    exempt: tuple[str, ...] = (),
    table_size: int = rrl.DEFAULT_TABLE_SIZE,
) -> rrl.RateLimiter:
    config = RrlConfig(
        rate=rate,
        slip=slip,
        exempt=tuple(ipaddress.ip_network(e) for e in exempt),
    )
    inner = responder(zones)
    return rrl.RateLimiter(inner.respond, config, workers, clock, table_size=table_size)


def query(name: str, rdtype: str = "A", edns: bool = True) -> bytes:
    message = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    message.id = 4242
    return message.to_wire()


def burst(lim: rrl.RateLimiter, wire: bytes, client: object, count: int) -> list[bytes | None]:
    return [lim.respond(wire, False, client) for _ in range(count)]


# -- classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qname", "rdtype", "cls", "imputed"),
    [
        ("www.example.test.", "A", rrl.ANSWER, "www.example.test."),
        ("nope.example.test.", "A", rrl.NXDOMAIN, "example.test."),
        ("deep.nope.example.test.", "TXT", rrl.NXDOMAIN, "example.test."),
        ("web.example.test.", "MX", rrl.NODATA, "example.test."),
        ("host.sub.example.test.", "A", rrl.REFERRAL, "sub.example.test."),
        ("example.org.", "A", rrl.ERROR, None),
    ],
)
def test_classify_real_responses(
    zones: ZoneTable, qname: str, rdtype: str, cls: int, imputed: str | None
) -> None:
    response = responder(zones).respond(query(qname, rdtype), False)
    assert response is not None
    got_cls, got_name = rrl.classify(response)
    assert rrl.CLASS_NAMES[got_cls] == rrl.CLASS_NAMES[cls]
    if cls == rrl.ANSWER:
        assert got_name.startswith(names.key_from_text(qname))
        assert got_name[-4:-2] == dns.rdatatype.from_text(rdtype).to_bytes(2)
    elif imputed is None:
        assert got_name == b""
    else:
        assert got_name == names.key_from_text(imputed)


def test_classify_ignores_qname_case(zones: ZoneTable) -> None:
    lower = responder(zones).respond(query("www.example.test."), False)
    mixed = responder(zones).respond(query("wWw.ExAmple.TEST."), False)
    assert lower is not None and mixed is not None
    assert rrl.classify(lower) == rrl.classify(mixed)


def test_classify_formerr_without_question() -> None:
    header = struct.pack(">HHHHHH", 1, 0x8001, 0, 0, 0, 0)  # FORMERR, QDCOUNT=0
    assert rrl.classify(header) == (rrl.ERROR, b"")


def test_truncated_keeps_question_and_opt(zones: ZoneTable) -> None:
    response = responder(zones).respond(query("example.test.", "NS"), False)
    assert response is not None
    slip = rrl.truncated(response)
    parsed = dns.message.from_wire(slip)
    assert parsed.flags & dns.flags.TC
    assert parsed.id == 4242
    assert not parsed.answer and not parsed.authority
    assert parsed.question[0].name.to_text() == "example.test."
    assert parsed.edns == 0
    assert len(slip) == 12 + len("example.test.") + 1 + 4 + 11 < len(response)


def test_truncated_finds_opt_with_options() -> None:
    message = dns.message.make_response(dns.message.make_query("a.example.", "A", use_edns=0))
    message.use_edns(0, options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"nsid-value")])
    message.answer.append(
        dns.rrset.from_text("a.example.", 60, "IN", "A", "192.0.2.1", "192.0.2.2")
    )
    slip = rrl.truncated(message.to_wire())
    parsed = dns.message.from_wire(slip)
    assert parsed.flags & dns.flags.TC and not parsed.answer
    assert [o.otype for o in parsed.options] == [3]


def test_truncated_without_edns(zones: ZoneTable) -> None:
    response = responder(zones).respond(query("www.example.test.", edns=False), False)
    assert response is not None
    parsed = dns.message.from_wire(rrl.truncated(response))
    assert parsed.edns == -1 and parsed.flags & dns.flags.TC


# -- client networks ------------------------------------------------------------------------


def test_networks_from_raw_and_tuple_agree() -> None:
    for host in ("192.0.2.77", "2001:db8:1:2:3::9"):
        raw = rrl.client_network(sockaddr(host), 24, 56)
        tup = rrl.client_network((host, 5353), 24, 56)
        assert raw is not None and raw == tup
    assert rrl.client_network(sockaddr("192.0.2.1"), 24, 56) == rrl.client_network(
        sockaddr("192.0.2.254"), 24, 56
    )
    assert rrl.client_network(sockaddr("192.0.2.1"), 24, 56) != rrl.client_network(
        sockaddr("192.0.3.1"), 24, 56
    )
    assert rrl.client_network(sockaddr("2001:db8:0:ff::1"), 24, 56) == rrl.client_network(
        sockaddr("2001:db8:0:1::1"), 24, 56
    )
    assert rrl.client_network(None, 24, 56) is None
    assert rrl.client_network(b"\xff\xff" + b"\x00" * 14, 24, 56) is None


# -- limiting ------------------------------------------------------------------------------


def test_rate_then_drop_and_slip(zones: ZoneTable) -> None:
    clock = FakeClock()
    lim = limiter(zones, clock, rate=5, slip=2)
    wire = query("example.test.", "ANY")
    out = burst(lim, wire, sockaddr("192.0.2.10"), 15)
    full = [r for r in out if r is not None and not dns.message.from_wire(r).flags & dns.flags.TC]
    slipped = [r for r in out if r is not None and dns.message.from_wire(r).flags & dns.flags.TC]
    assert len(full) == 5
    assert out[:5] == full
    assert len(slipped) == 5  # every 2nd of the 10 limited
    assert out[5] is None and out[6] is not None
    assert (lim.limited, lim.slipped) == (10, 5)


def test_refill_over_time(zones: ZoneTable) -> None:
    clock = FakeClock()
    lim = limiter(zones, clock, rate=10, slip=0)
    wire = query("www.example.test.")
    client = sockaddr("198.51.100.1")
    assert all(r is not None for r in burst(lim, wire, client, 10))
    assert lim.respond(wire, False, client) is None
    clock.advance(0.5)  # five tokens back
    out = burst(lim, wire, client, 7)
    assert sum(r is not None for r in out) == 5
    clock.advance(60)  # never more than one second's worth
    assert sum(r is not None for r in burst(lim, wire, client, 20)) == 10


def test_slip_zero_drops_all_and_one_truncates_all(zones: ZoneTable) -> None:
    wire = query("www.example.test.")
    for slip, expect_sent in ((0, 0), (1, 6)):
        lim = limiter(zones, FakeClock(), rate=2, slip=slip)
        out = burst(lim, wire, sockaddr("203.0.113.5"), 8)[2:]
        assert sum(r is not None for r in out) == expect_sent
        assert lim.slipped == expect_sent and lim.limited == 6


def test_tcp_never_limited(zones: ZoneTable) -> None:
    lim = limiter(zones, FakeClock(), rate=1)
    wire = query("www.example.test.")
    out = [lim.respond(wire, True, ("192.0.2.1", 1000)) for _ in range(50)]
    assert all(r is not None and not r[2] & 0x02 for r in out)
    assert lim.limited == 0


def test_keys_separate_prefixes_classes_and_names(zones: ZoneTable) -> None:
    lim = limiter(zones, FakeClock(), rate=3, slip=0)
    a = sockaddr("192.0.2.1")
    burst(lim, query("www.example.test."), a, 3)
    assert lim.respond(query("www.example.test."), False, a) is None
    # Same /24: same bucket.
    assert lim.respond(query("www.example.test."), False, sockaddr("192.0.2.200")) is None
    # Other /24, other qname, other class: fresh buckets.
    assert lim.respond(query("www.example.test."), False, sockaddr("192.0.3.1")) is not None
    assert lim.respond(query("web.example.test."), False, a) is not None
    assert lim.respond(query("nope.example.test."), False, a) is not None


def test_random_subdomain_flood_shares_the_zone_bucket(zones: ZoneTable) -> None:
    lim = limiter(zones, FakeClock(), rate=5, slip=0)
    client = sockaddr("192.0.2.9")
    out = [lim.respond(query(f"r{i}.example.test."), False, client) for i in range(40)]
    assert sum(r is not None for r in out) == 5
    # Random names under a delegation share the delegation's bucket.
    out = [lim.respond(query(f"r{i}.sub.example.test."), False, client) for i in range(40)]
    assert sum(r is not None for r in out) == 5


def test_ipv6_prefix(zones: ZoneTable) -> None:
    lim = limiter(zones, FakeClock(), rate=2, slip=0)
    wire = query("www.example.test.")
    burst(lim, wire, sockaddr("2001:db8:0:1::1"), 2)
    assert lim.respond(wire, False, sockaddr("2001:db8:0:2::7")) is None  # same /56
    assert lim.respond(wire, False, sockaddr("2001:db8:1::1")) is not None


def test_exempt_networks(zones: ZoneTable) -> None:
    lim = limiter(zones, FakeClock(), rate=2, slip=0, exempt=("192.0.2.7/32", "2001:db8::/32"))
    wire = query("www.example.test.")
    assert all(r is not None for r in burst(lim, wire, sockaddr("192.0.2.7"), 20))
    assert all(r is not None for r in burst(lim, wire, ("2001:db8::5", 53, 0, 0), 20))
    assert lim.limited == 0 and lim.exempted == 36
    # A neighbour in the same /24 is not exempt.
    assert lim.respond(wire, False, sockaddr("192.0.2.8")) is None


def test_rate_divided_by_workers(zones: ZoneTable) -> None:
    lim = limiter(zones, FakeClock(), rate=20, slip=0, workers=4)
    out = burst(lim, query("www.example.test."), sockaddr("192.0.2.1"), 30)
    assert sum(r is not None for r in out) == 5


def test_unanswered_queries_pass_through(zones: ZoneTable) -> None:
    lim = limiter(zones, FakeClock(), rate=1)
    assert lim.respond(b"\x00\x01garbage", False, sockaddr("192.0.2.1")) is None
    assert lim.limited == 0 and lim.buckets == 0


def test_table_is_bounded_under_spoofed_flood(zones: ZoneTable) -> None:
    clock = FakeClock()
    lim = limiter(zones, clock, rate=5, table_size=256)
    wire = query("www.example.test.")
    victim = sockaddr("198.51.100.1")
    burst(lim, wire, victim, 5)
    for i in range(5000):
        client = sockaddr(str(ipaddress.IPv4Address(0x0A000000 + (i << 8))))
        assert lim.respond(wire, False, client) is not None  # each source is new
        assert lim.buckets <= 256
        if i % 500 == 0:
            clock.advance(0.01)
    # Stale buckets (idle a full second) go first when room is needed.
    clock.advance(2)
    before = lim.buckets
    for i in range(256 - before + 1):
        lim.respond(wire, False, sockaddr(str(ipaddress.IPv4Address(0x0B000000 + (i << 8)))))
    assert lim.buckets < before
    # Still within the second: no bucket is stale, the oldest-created eighth goes.
    for i in range(300):
        lim.respond(wire, False, sockaddr(str(ipaddress.IPv4Address(0x0C000000 + (i << 8)))))
        assert lim.buckets <= 256


def test_install_off_is_identity(zones: ZoneTable) -> None:
    inner = responder(zones)
    assert rrl.install(inner, RrlConfig(rate=0), 4) is inner
    assert rrl.unwrap(inner) is inner
    assert rrl.rrl_counters(inner) == {}
    wrapped = rrl.install(inner, RrlConfig(rate=10), 2)
    assert isinstance(wrapped, rrl.RateLimiter)
    assert rrl.unwrap(wrapped) is inner
    assert rrl.rrl_counters(wrapped) == {"rrl.limited": 0, "rrl.slipped": 0, "rrl.exempted": 0}
    with pytest.raises(ValueError):
        rrl.RateLimiter(inner.respond, RrlConfig(rate=0))


def test_counter_reader_sees_through_the_wrapper(zones: ZoneTable) -> None:
    inner = responder(zones)
    read = rrl.with_rrl_counters(lambda r: {"udp": r.udp_queries})  # type: ignore[attr-defined]
    wrapped = rrl.install(inner, RrlConfig(rate=1, slip=0), 1)
    for _ in range(3):
        wrapped.respond(query("www.example.test."), False, sockaddr("192.0.2.1"))
    assert read(wrapped) == {"udp": 3, "rrl.limited": 2, "rrl.slipped": 0, "rrl.exempted": 0}
    assert read(inner) == {"udp": 3}


def test_counters_found_through_outer_layers(zones: ZoneTable) -> None:
    class Outer:  # a layer like the query log: names the layer inside `wrapped`
        def __init__(self, wrapped: object) -> None:
            self.wrapped = wrapped

    limiter = rrl.install(responder(zones), RrlConfig(rate=1, slip=0), 1)
    assert isinstance(limiter, rrl.RateLimiter) and limiter.wrapped is limiter.inner
    for _ in range(2):
        limiter.respond(query("www.example.test."), False, sockaddr("192.0.2.1"))
    assert rrl.rrl_counters(Outer(Outer(limiter)))["rrl.limited"] == 1
    assert rrl.rrl_counters(Outer(responder(zones))) == {}


def test_limited_answers_are_correct_responses(zones: ZoneTable) -> None:
    """What does get through is byte-identical to the unlimited responder's answer."""
    lim = limiter(zones, FakeClock(), rate=3)
    plain = responder(zones)
    wire = query("nope.example.test.")
    expected = plain.respond(wire, False, None)
    out = burst(lim, wire, sockaddr("192.0.2.1"), 3)
    assert out == [expected] * 3
    parsed = dns.message.from_wire(out[0] or b"")
    assert parsed.rcode() == dns.rcode.NXDOMAIN
