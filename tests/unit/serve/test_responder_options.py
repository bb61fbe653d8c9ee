"""Responder answers that depend on EDNS options: DNS Cookies, TCP keepalive, ZONEVERSION,
and the Extended DNS Errors. Queries are fed to respond() as bytes; a FakeClock is the time."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest

from authd.clock import FakeClock
from authd.config import RrlConfig
from authd.serve import cookies, edns, rrl
from authd.serve.cookies import CookieJar
from authd.serve.responder import Responder
from authd.serve.zonetable import ZoneTable
from authd.zone import names
from tests.support.responder import ORIGIN, ZONE, make, snapshot

SECRET = bytes(range(16))
NOW = 1_765_000_000.0
CLIENT = ("192.0.2.7", 40000)
CLIENT_IP = bytes((192, 0, 2, 7))
CLIENT_COOKIE = bytes.fromhex("0102030405060708")
BADCOOKIE = 23


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
    return Responder(
        zones,
        identity="",
        version="",
        nsid=b"",
        udp_payload=1232,
        cookies=CookieJar(SECRET),
        tcp_idle_timeout=12.5,
        clock=clock,
    )


def query(
    name: str = "mail.example.test.",
    rdtype: str = "A",
    options: list[bytes] | None = None,
    payload: int = 1232,
    qid: int = 77,
) -> bytes:
    """A query with the given raw options (code, value) in its OPT."""
    message = make(name, rdtype, use_edns=0, payload=payload)
    message.id = qid
    message.use_edns(
        0,
        payload=payload,
        options=[dns.edns.GenericOption(int.from_bytes(o[:2]), o[4:]) for o in options or []],
    )
    return message.to_wire(max_size=65535)


def ask(
    responder: Responder, data: bytes, tcp: bool = False, client: object = CLIENT
) -> dns.message.Message:
    response = responder.respond(data, tcp, client)
    assert response is not None
    return dns.message.from_wire(response)


def option_values(message: dns.message.Message, code: int) -> list[bytes]:
    return [o.to_wire() for o in message.options if o.otype == code]


def cookie_option(value: bytes) -> bytes:
    return edns.option(edns.COOKIE, value)


def server_cookie(at: float = NOW) -> bytes:
    return CLIENT_COOKIE + cookies.server_cookie(SECRET, CLIENT_COOKIE, CLIENT_IP, int(at))


# -- cookies -----------------------------------------------------------------------------


@pytest.mark.parametrize("repeat", [1, 2, 3])  # the first answer is rendered, the others cached
def test_client_cookie_alone_gets_the_answer_and_a_server_cookie(
    responder: Responder, repeat: int
) -> None:
    data = query(options=[cookie_option(CLIENT_COOKIE)])
    for _ in range(repeat):
        msg = ask(responder, data)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer[0][0].address == "192.0.2.25"
    assert option_values(msg, edns.COOKIE) == [server_cookie()]


def test_answer_with_cookie_is_the_plain_answer_plus_the_option(responder: Responder) -> None:
    plain = responder.respond(query(), False, CLIENT)
    with_cookie = responder.respond(query(options=[cookie_option(CLIENT_COOKIE)]), False, CLIENT)
    assert plain is not None and with_cookie is not None
    option = cookie_option(server_cookie())
    # Same bytes but for the OPT's RDLENGTH and the option after it.
    assert with_cookie[: -2 - len(option)] == plain[:-2]
    assert with_cookie[-len(option) :] == option
    assert int.from_bytes(with_cookie[-2 - len(option) : -len(option)]) == len(option)


def test_valid_server_cookie_is_echoed_and_marked_for_rrl(
    responder: Responder, clock: FakeClock
) -> None:
    cookie = server_cookie()
    clock.advance(600)
    data = query(options=[cookie_option(cookie)])
    msg = ask(responder, data)
    assert msg.rcode() == dns.rcode.NOERROR
    assert option_values(msg, edns.COOKIE) == [cookie]
    assert responder.valid_cookie_query is data
    assert responder.cookies is not None and responder.cookies.counts == [0, 1, 0]


def test_old_server_cookie_is_renewed(responder: Responder, clock: FakeClock) -> None:
    cookie = server_cookie()
    clock.advance(2000)
    msg = ask(responder, query(options=[cookie_option(cookie)]))
    assert msg.rcode() == dns.rcode.NOERROR
    assert option_values(msg, edns.COOKIE) == [server_cookie(NOW + 2000)]


@pytest.mark.parametrize("name", ["mail.example.test.", "nothere.example.test.", "example.org."])
def test_bad_server_cookie_over_udp_gets_badcookie(responder: Responder, name: str) -> None:
    bad = CLIENT_COOKIE + bytes(16)
    msg = ask(responder, query(name, options=[cookie_option(bad)]))
    assert msg.rcode() == BADCOOKIE
    assert not msg.answer and not msg.authority
    assert option_values(msg, edns.COOKIE) == [server_cookie()]
    assert responder.rcodes[BADCOOKIE] == 1
    assert responder.cookies is not None and responder.cookies.counts == [0, 0, 1]


def test_bad_server_cookie_over_tcp_gets_the_answer(responder: Responder) -> None:
    bad = CLIENT_COOKIE + bytes(16)
    msg = ask(responder, query(options=[cookie_option(bad)]), tcp=True)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer
    assert option_values(msg, edns.COOKIE) == [server_cookie()]


def test_expired_server_cookie_over_udp_gets_badcookie(
    responder: Responder, clock: FakeClock
) -> None:
    cookie = server_cookie()
    clock.advance(3601)
    msg = ask(responder, query(options=[cookie_option(cookie)]))
    assert msg.rcode() == BADCOOKIE
    assert option_values(msg, edns.COOKIE) == [server_cookie(NOW + 3601)]


@pytest.mark.parametrize("length", [0, 7, 9, 15, 41])
@pytest.mark.parametrize("name", ["mail.example.test.", "example.org."])
def test_malformed_cookie_is_formerr(responder: Responder, length: int, name: str) -> None:
    for tcp in (False, True):
        msg = ask(responder, query(name, options=[cookie_option(bytes(length))]), tcp)
        assert msg.rcode() == dns.rcode.FORMERR
        assert not option_values(msg, edns.COOKIE)


def test_cookies_off_answers_without_one(zones: ZoneTable) -> None:
    plain = Responder(zones, identity="", version="", nsid=b"", udp_payload=1232)
    msg = ask(plain, query(options=[cookie_option(CLIENT_COOKIE + bytes(16))]))
    assert msg.rcode() == dns.rcode.NOERROR and not option_values(msg, edns.COOKIE)


def test_cookie_too_big_for_the_udp_limit_is_rendered_again(responder: Responder) -> None:
    bare = responder.respond(query("big.example.test.", "TXT", payload=4096), False, CLIENT)
    assert bare is not None
    size = len(bare)  # an answer that fits exactly: the cookie would not
    data = query("big.example.test.", "TXT", [cookie_option(CLIENT_COOKIE)], payload=size)
    for _ in range(2):
        response = responder.respond(data, False, CLIENT)
        assert response is not None and len(response) <= size
        msg = dns.message.from_wire(response)
        assert msg.flags & dns.flags.TC
        assert option_values(msg, edns.COOKIE) == [server_cookie()]


def test_valid_cookie_is_exempt_from_rrl(zones: ZoneTable, clock: FakeClock) -> None:
    inner = Responder(
        zones,
        identity="",
        version="",
        nsid=b"",
        udp_payload=1232,
        cookies=CookieJar(SECRET),
        clock=clock,
    )
    limiter = rrl.install(inner, RrlConfig(rate=1, slip=0), 1, clock)
    with_cookie = query(options=[cookie_option(server_cookie())])
    without = query()
    assert all(limiter.respond(with_cookie, False, CLIENT) is not None for _ in range(20))
    answered = [limiter.respond(without, False, CLIENT) for _ in range(20)]
    assert answered.count(None) >= 18
    client_only = query(options=[cookie_option(CLIENT_COOKIE)])
    assert limiter.respond(client_only, False, CLIENT) is None  # not verified: limited


# -- keepalive ---------------------------------------------------------------------------


def test_keepalive_on_tcp_only(responder: Responder) -> None:
    data = query(options=[edns.option(edns.KEEPALIVE, b"")])
    for _ in range(2):
        msg = ask(responder, data, tcp=True)
        assert option_values(msg, edns.KEEPALIVE) == [(125).to_bytes(2)]  # 12.5 s
    assert not option_values(ask(responder, data), edns.KEEPALIVE)
    assert not option_values(ask(responder, query(), tcp=True), edns.KEEPALIVE)


def test_keepalive_with_a_timeout_from_a_client(responder: Responder) -> None:
    data = query(options=[edns.option(edns.KEEPALIVE, b"\x00\x10")])
    assert ask(responder, data, tcp=True).rcode() == dns.rcode.FORMERR
    msg = ask(responder, data)  # UDP: ignored
    assert msg.rcode() == dns.rcode.NOERROR and not option_values(msg, edns.KEEPALIVE)


# -- ZONEVERSION -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mail.example.test.", "nothere.example.test.", "example.test."])
def test_zoneversion_in_authoritative_answers(responder: Responder, name: str) -> None:
    data = query(name, options=[edns.option(edns.ZONEVERSION, b"")])
    for _ in range(2):
        msg = ask(responder, data)
        assert msg.flags & dns.flags.AA
        assert option_values(msg, edns.ZONEVERSION) == [b"\x02\x00" + (2026112201).to_bytes(4)]


def test_zoneversion_not_in_referrals_refusals_or_when_not_empty(responder: Responder) -> None:
    asked = [edns.option(edns.ZONEVERSION, b"")]
    referral = ask(responder, query("www.sub.example.test.", options=asked))
    assert not referral.flags & dns.flags.AA and referral.authority
    assert not option_values(referral, edns.ZONEVERSION)
    refused = ask(responder, query("example.org.", options=asked))
    assert not option_values(refused, edns.ZONEVERSION)
    odd = ask(responder, query(options=[edns.option(edns.ZONEVERSION, b"\x01")]))
    assert not option_values(odd, edns.ZONEVERSION)


# -- option limits -----------------------------------------------------------------------


def test_option_storm_answers_as_without_options(responder: Responder) -> None:
    storm = [edns.option(100, b"")] * 16000 + [cookie_option(CLIENT_COOKIE)]
    data = query(options=storm)
    for tcp in (False, True):
        msg = ask(responder, data, tcp)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer[0][0].address == "192.0.2.25"
        assert option_values(msg, edns.COOKIE) == [server_cookie()]


def test_duplicate_cookies_first_wins_unless_one_is_malformed(responder: Responder) -> None:
    other = bytes.fromhex("1112131415161718")
    msg = ask(responder, query(options=[cookie_option(CLIENT_COOKIE), cookie_option(other)]))
    assert msg.rcode() == dns.rcode.NOERROR
    assert option_values(msg, edns.COOKIE) == [server_cookie()]
    data = query(options=[cookie_option(CLIENT_COOKIE), cookie_option(bytes(3))])
    assert ask(responder, data).rcode() == dns.rcode.FORMERR


# -- Extended DNS Errors -----------------------------------------------------------------


def ede_codes(message: dns.message.Message) -> list[tuple[int, str | None]]:
    return [(o.code, o.text) for o in message.options if o.otype == dns.edns.EDE]


def test_not_ready_for_a_zone_never_loaded(zones: ZoneTable, responder: Responder) -> None:
    zones.add_zone(names.key_from_text("other.test."))
    msg = ask(responder, query("www.other.test."))
    assert msg.rcode() == dns.rcode.SERVFAIL and ede_codes(msg) == [(14, None)]
    without_edns = make("www.other.test.", "A")
    assert ask(responder, without_edns.to_wire()).edns == -1
    assert responder.ede == {14: 1}


def test_stale_answers_say_when_the_zone_expired(zones: ZoneTable, responder: Responder) -> None:
    data = query()
    assert not ede_codes(ask(responder, data))  # cached while fresh
    zones.set_state(ORIGIN, servfail=False, expired_at=1_764_000_000.0)
    for _ in range(3):  # rendered, then from the cache
        msg = ask(responder, data)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer
        assert ede_codes(msg) == [(3, "zone expired at 2025-11-24T16:00:00Z")]
    negative = ask(responder, query("nothere.example.test."))
    assert negative.rcode() == dns.rcode.NXDOMAIN and ede_codes(negative)[0][0] == 3
    assert responder.ede[3] == 4
    plain = make("mail.example.test.", "A")
    assert ask(responder, plain.to_wire()).edns == -1  # only to queries with EDNS
    zones.set_state(ORIGIN, servfail=False)  # refreshed: fresh answers again
    assert not ede_codes(ask(responder, data))


def test_servfail_on_expire_is_invalid_data(zones: ZoneTable, responder: Responder) -> None:
    zones.set_state(ORIGIN, servfail=True, expired_at=1_764_000_000.0)
    msg = ask(responder, query())
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert ede_codes(msg) == [(24, "zone expired at 2025-11-24T16:00:00Z")]


def test_refusals_and_unsupported(responder: Responder) -> None:
    outside = ask(responder, query("example.org."))
    assert outside.rcode() == dns.rcode.REFUSED and ede_codes(outside) == [(20, None)]
    axfr = ask(responder, query("example.test.", "AXFR"), tcp=True)
    assert axfr.rcode() == dns.rcode.NOTAUTH and ede_codes(axfr) == [(18, None)]
    ixfr = ask(responder, query("example.test.", "IXFR"))
    assert ixfr.rcode() == dns.rcode.NOTAUTH and ede_codes(ixfr) == [(18, None)]
    odd = dns.message.make_query("example.test.", "SOA", use_edns=0)
    odd.set_opcode(dns.opcode.Opcode(15))
    msg = ask(responder, odd.to_wire())
    assert msg.rcode() == dns.rcode.NOTIMP and ede_codes(msg) == [(21, None)]
    hesiod = ask(responder, make("example.test.", "SOA", "HS", use_edns=0).to_wire())
    assert hesiod.rcode() == dns.rcode.REFUSED and ede_codes(hesiod) == [(21, None)]
    assert responder.ede == {20: 1, 18: 2, 21: 2}


def test_refused_notify_is_prohibited(responder: Responder, clock: FakeClock) -> None:
    from authd.xfr.notify_edge import NotifyEndpoint

    events: list[object] = []
    responder.notify_handler = NotifyEndpoint({}, {}, events.append, clock=clock.now)
    notify = dns.message.make_query("example.test.", "SOA", use_edns=0)
    notify.set_opcode(dns.opcode.NOTIFY)
    msg = ask(responder, notify.to_wire())
    assert msg.rcode() in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)
    assert ede_codes(msg) == [(18, None)] and not events
    assert responder.ede == {18: 1}


def test_unknown_opcode_without_a_question_is_notimp(responder: Responder) -> None:
    header_only = (77).to_bytes(2) + bytes(((15 << 3), 0)) + bytes(8)
    msg = dns.message.from_wire(responder.respond(header_only, False, CLIENT) or b"")
    assert msg.rcode() == dns.rcode.NOTIMP and not msg.question
    query_without_question = (77).to_bytes(2) + bytes(10)
    msg = dns.message.from_wire(responder.respond(query_without_question, False, CLIENT) or b"")
    assert msg.rcode() == dns.rcode.FORMERR


def test_cached_answers_with_cookies_match_the_full_path(
    zones: ZoneTable, responder: Responder, clock: FakeClock
) -> None:
    """The raw cookie lookup (respond -> _cookie_hit) answers as the full parse does."""
    fresh = Responder(
        zones,
        identity="",
        version="",
        nsid=b"",
        udp_payload=1232,
        cookies=CookieJar(SECRET),
        clock=clock,
    )
    for name in ("mail.example.test.", "nothere.example.test.", "example.test."):
        for cookie in (CLIENT_COOKIE, server_cookie()):
            data = query(name, options=[cookie_option(cookie)], qid=9)
            first = fresh.respond(data, False, CLIENT)  # rendered: nothing cached yet
            responder.respond(query(name, qid=9), False, CLIENT)  # caches the bare answer
            again = responder.respond(data, False, CLIENT)  # a raw cache hit
            assert first == again
            if cookie != CLIENT_COOKIE:
                assert responder.valid_cookie_query is data


def test_an_option_that_looks_like_a_cookie_is_not_one(responder: Responder) -> None:
    lookalike = edns.option(100, cookie_option(CLIENT_COOKIE))  # a cookie inside option 100
    data = query(options=[lookalike])
    for _ in range(2):
        msg = ask(responder, data)
        assert msg.rcode() == dns.rcode.NOERROR and not option_values(msg, edns.COOKIE)


def test_worker_counters_name_ede_codes_and_cookie_verdicts(responder: Responder) -> None:
    from authd.serve.stats import responder_counters

    ask(responder, query("example.org."))  # REFUSED, EDE 20
    ask(responder, query(options=[cookie_option(CLIENT_COOKIE)]))
    ask(responder, query(options=[cookie_option(CLIENT_COOKIE + bytes(16))]))
    counters = responder_counters(responder)
    assert counters["ede.20"] == 1
    assert (counters["cookie.client-only"], counters["cookie.valid"], counters["cookie.bad"]) == (
        1,
        0,
        1,
    )
    assert counters["rcode.BADCOOKIE"] == 1


def test_the_same_query_bytes_later_get_a_new_verdict(
    responder: Responder, clock: FakeClock
) -> None:
    data = query(options=[cookie_option(server_cookie())])
    assert ask(responder, data).rcode() == dns.rcode.NOERROR
    clock.advance(3601)
    assert ask(responder, data).rcode() == BADCOOKIE
