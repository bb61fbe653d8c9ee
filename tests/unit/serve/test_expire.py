"""EDNS EXPIRE as a server (RFC 7314): the option read from queries, the seconds answers
say, and the responder counting down with a FakeClock from the expiry facts the main
process sends (updates.SetState)."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from authd.clock import FakeClock
from authd.serve import edns, updates
from authd.serve.responder import Responder
from authd.serve.xfrout import MessageStream
from authd.serve.zonetable import ZoneTable
from authd.xfr.stream import TYPE_AXFR, TYPE_IXFR, parse_message, sign_message
from authd.xfr.transfer import build_query
from tests.support import outbound
from tests.support.responder import ORIGIN, ZONE, make, snapshot

NOW = 1_765_000_000.0
SOA_EXPIRE = 1209600  # ZONE's SOA EXPIRE field
ASK = [edns.option(edns.EXPIRE, b"")]


@pytest.fixture
def zones() -> ZoneTable:
    table = ZoneTable()
    table.publish(ORIGIN, snapshot(ZONE + "sub NS ns.sub\nns.sub A 192.0.2.99\n"))
    return table


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(now=NOW)


@pytest.fixture
def responder(zones: ZoneTable, clock: FakeClock) -> Responder:
    return Responder(zones, identity="", version="", nsid=b"", udp_payload=1232, clock=clock)


def query(
    name: str, rdtype: str = "A", options: list[bytes] | None = None, payload: int = 1232
) -> bytes:
    """A query with the given raw options (code, length, value) in its OPT."""
    message = make(name, rdtype, use_edns=0)
    message.use_edns(
        0,
        payload=payload,
        options=[dns.edns.GenericOption(int.from_bytes(o[:2]), o[4:]) for o in options or []],
    )
    return message.to_wire()


def ask(responder: Responder, data: bytes) -> dns.message.Message:
    response = responder.respond(data, False, ("192.0.2.7", 40000))
    assert response is not None
    return dns.message.from_wire(response)


def option_values(message: dns.message.Message, code: int) -> list[bytes]:
    return [o.to_wire() for o in message.options if o.otype == code]


def expire_of(message: dns.message.Message) -> list[int]:
    return [int.from_bytes(value) for value in option_values(message, edns.EXPIRE)]


# -- the option ---------------------------------------------------------------------------


def test_parse_sees_expire_of_any_length_and_only_when_present() -> None:
    assert edns.parse(edns.option(edns.EXPIRE, b"")) == edns.Options(
        False, None, -1, False, False, True
    )
    assert edns.parse(edns.option(edns.EXPIRE, b"\x00\x00\x00\x05")).expire  # as Knot
    assert not edns.parse(edns.option(edns.NSID, b"")).expire  # type: ignore[union-attr]
    assert edns.NO_OPTIONS.expire is False


def test_expire_option_is_four_octets_clamped_to_32_bits() -> None:
    assert edns.expire(300) == b"\x00\x09\x00\x04\x00\x00\x01\x2c"
    assert edns.expire(-5)[4:] == b"\x00\x00\x00\x00"
    assert edns.expire(1 << 40)[4:] == b"\xff\xff\xff\xff"


def test_seconds_for_primary_secondary_signatures_and_past_expire() -> None:
    rdata = snapshot().soa_rdata
    assert edns.expire_seconds(NOW, None, None, rdata) == SOA_EXPIRE  # a file zone: SOA EXPIRE
    assert edns.expire_seconds(NOW, None, NOW + 5, rdata) == SOA_EXPIRE  # Knot: timer only
    assert edns.expire_seconds(NOW, NOW + 500.9, None, rdata) == 500
    assert edns.expire_seconds(NOW, NOW + 500, NOW + 200, rdata) == 200  # RRSIGs end first
    assert edns.expire_seconds(NOW, NOW - 1, None, rdata) == 0  # served past expire


# -- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [("example.test.", "SOA"), ("mail.example.test.", "A"), ("nothere.example.test.", "A")],
)
def test_secondary_answers_count_down(
    responder: Responder, zones: ZoneTable, clock: FakeClock, name: str, rdtype: str
) -> None:
    zones.set_expiry(ORIGIN, NOW + 1000, None)
    data = query(name, rdtype, options=ASK)
    first = ask(responder, data)  # rendered
    assert first.flags & dns.flags.AA and expire_of(first) == [1000]
    clock.advance(250)
    assert expire_of(ask(responder, data)) == [750]  # from the cache, fresh value
    clock.advance(2000)
    assert expire_of(ask(responder, data)) == [0]  # serving past expire (serve-stale)


def test_the_earliest_signature_expiration_bounds_the_value(
    responder: Responder, zones: ZoneTable
) -> None:
    zones.set_expiry(ORIGIN, NOW + 86400, NOW + 3600)
    assert expire_of(ask(responder, query("example.test.", "SOA", options=ASK))) == [3600]


def test_a_file_zone_says_its_soa_expire(responder: Responder) -> None:
    assert expire_of(ask(responder, query("example.test.", "SOA", options=ASK))) == [SOA_EXPIRE]


def test_referrals_carry_it_refusals_and_option_less_queries_do_not(
    responder: Responder, zones: ZoneTable
) -> None:
    zones.set_expiry(ORIGIN, NOW + 60, None)
    referral = ask(responder, query("www.sub.example.test.", options=ASK))
    assert referral.authority and expire_of(referral) == [60]  # zone data, as Knot
    assert expire_of(ask(responder, query("example.org.", options=ASK))) == []
    plain = ask(responder, query("mail.example.test."))
    assert plain.rcode() == dns.rcode.NOERROR and expire_of(plain) == []


def test_an_expired_zone_answering_servfail_sends_no_expire(
    responder: Responder, zones: ZoneTable
) -> None:
    zones.set_expiry(ORIGIN, NOW - 10, None)
    zones.set_state(ORIGIN, servfail=True, expired_at=NOW - 10)
    msg = ask(responder, query("example.test.", "SOA", options=ASK))
    assert msg.rcode() == dns.rcode.SERVFAIL and expire_of(msg) == []


def test_with_nsid_and_zoneversion_every_option_is_there(
    zones: ZoneTable, clock: FakeClock
) -> None:
    responder = Responder(
        zones, identity="", version="", nsid=b"ns1", udp_payload=1232, clock=clock
    )
    zones.set_expiry(ORIGIN, NOW + 42, None)
    asked = [edns.option(edns.NSID, b""), edns.option(edns.ZONEVERSION, b""), *ASK]
    for _ in range(2):
        msg = ask(responder, query("example.test.", "SOA", options=asked))
        assert expire_of(msg) == [42]
        assert option_values(msg, edns.NSID) == [b"ns1"]
        assert option_values(msg, edns.ZONEVERSION)


# -- what reaches the workers ----------------------------------------------------------------


def test_set_state_message_carries_the_expiry_and_keeps_the_cache(zones: ZoneTable) -> None:
    cache = zones.get(ORIGIN).cache  # type: ignore[union-attr]
    updates.apply_update(updates.SetState(ORIGIN, False, None, NOW + 9, NOW + 7), zones)
    zone = zones.get(ORIGIN)
    assert zone is not None and (zone.expires_at, zone.signatures_until) == (NOW + 9, NOW + 7)
    assert zone.cache is cache  # answers did not change: nothing to re-render
    zones.publish(ORIGIN, snapshot())  # a new version keeps them until the next message
    zone = zones.get(ORIGIN)
    assert zone is not None and (zone.expires_at, zone.signatures_until) == (NOW + 9, NOW + 7)


# -- outbound transfers ----------------------------------------------------------------------


def _transfer(asked: bool, qtype: int, serial: int | None = None) -> list[bytes]:
    """A signed AXFR/IXFR request (with EXPIRE when `asked`) to a served v3, every answer."""
    _, _, v3 = outbound.versions()
    r = outbound.responder(None, v3)
    r.zones.set_expiry(outbound.QKEY, outbound.NOW + 777, None)
    soa = None if serial is None else (0, outbound.soa(serial)[3])
    data = build_query(outbound.QKEY, qtype, query_id=4242, soa=soa, expire=asked)
    data, mac = sign_message(data, outbound.KEY, outbound.NOW)
    answer = r.respond(data, True, outbound.CLIENT)
    assert answer is not None
    messages = [bytes(answer)]
    if isinstance(answer, MessageStream):
        messages += list(answer.rest)
    outbound.receive(messages, qtype, None if serial is None else v3, mac)  # TSIG checked
    return messages


def test_an_axfr_asked_with_expire_has_it_in_the_first_message_only() -> None:
    messages = _transfer(True, TYPE_AXFR)
    assert len(messages) >= 2
    assert [parse_message(m).expire for m in messages] == [777] + [None] * (len(messages) - 1)
    assert all(parse_message(m).expire is None for m in _transfer(False, TYPE_AXFR))


def test_an_ixfr_asked_with_expire_has_it_too() -> None:
    (current,) = _transfer(True, TYPE_IXFR, serial=3)  # up to date: one SOA
    assert parse_message(current).expire == 777


def test_no_room_for_expire_renders_again_within_the_udp_limit(clock: FakeClock) -> None:
    """An answer that fits 512 octets only without the option is rendered again with the
    option reserved (whole RRsets only: truncated), never sent over the limit."""
    for size in range(300, 480):
        table = ZoneTable()
        table.publish(
            ORIGIN, snapshot(ZONE + f'fit TXT "{"x" * (size // 2)}" "{"y" * (size - size // 2)}"\n')
        )
        table.set_expiry(ORIGIN, NOW + 99, None)
        r = Responder(table, identity="", version="", nsid=b"", udp_payload=1232, clock=clock)
        message = make("fit.example.test.", "TXT", use_edns=0, payload=512)
        plain = r.respond(message.to_wire(), False, None)
        assert plain is not None
        if 512 - 8 < len(plain) <= 512:  # fits, but not with 8 more octets
            break
    else:
        pytest.fail("no TXT size gives an answer of 505..512 octets")
    data = query("fit.example.test.", "TXT", options=ASK, payload=512)
    for _ in range(2):  # rendered, then the cache entry
        response = r.respond(data, False, None)
        assert response is not None and len(response) <= 512
        msg = dns.message.from_wire(response)
        assert msg.flags & dns.flags.TC and expire_of(msg) == [99]
