"""Tests of serve/xfr_edge.py through the responder: AXFR from the served version, IXFR
from the journal in the state directory, the fall-backs, refusals and the UDP rules.

Each answer is read back by authd's own inbound transfer code (stream.TransferAssembler),
so "the downstream ends at the served version" is what is checked, not the bytes.
"""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import dns.tsig
import pytest

from authd.xfr.stream import (
    TYPE_AXFR,
    TYPE_IXFR,
    Kind,
    TsigVerifier,
    parse_message,
    sign_message,
)
from authd.zone.snapshot import Snapshot
from authd.zone.store import Store
from tests.support.outbound import (
    CLIENT,
    KEY,
    META,
    NOW,
    ORIGIN,
    QKEY,
    ask,
    diff_records,
    receive,
    responder,
    versions,
    zone,
)


@pytest.fixture
def state(tmp_path: Path) -> tuple[Path, list[Snapshot]]:
    v1, v2, v3 = versions()
    with Store(tmp_path) as store:
        store.save_full(v1, META)
        for old, new in ((v1, v2), (v2, v3)):
            deleted, added = diff_records(old, new)
            store.append_diff(QKEY, old.serial, new.serial, deleted, added, META)
    return tmp_path, [v1, v2, v3]


def test_axfr_is_the_served_version(state: tuple[Path, list[Snapshot]]) -> None:
    state_dir, (_, _, v3) = state
    messages, mac = ask(responder(state_dir, v3), "AXFR")
    assert len(messages) >= 2  # several messages, each signed
    got = receive(messages, TYPE_AXFR, None, mac)
    assert got.snapshot is not None
    assert sorted(got.snapshot.records()) == sorted(v3.records())


def test_ixfr_from_the_journal(state: tuple[Path, list[Snapshot]]) -> None:
    state_dir, (v1, v2, v3) = state
    r = responder(state_dir, v3)
    for old in (v1, v2):
        messages, mac = ask(r, "IXFR", old.serial)
        got = receive(messages, TYPE_IXFR, old, mac)
        assert got.kind is Kind.IXFR and got.snapshot is not None
        assert [(s.from_serial, s.to_serial) for s in got.steps][-1] == (2, 3)
        assert sorted(got.snapshot.records()) == sorted(v3.records())
    assert r.xfr_handler is not None and r.xfr_handler.counters()["xfrout.ixfr"] == 2


def test_ixfr_of_a_serial_not_in_the_journal_is_answered_axfr_style(
    state: tuple[Path, list[Snapshot]],
) -> None:
    state_dir, (_, _, v3) = state
    old = zone(serial=0, hosts=10)
    messages, mac = ask(responder(state_dir, v3), "IXFR", 0)
    got = receive(messages, TYPE_IXFR, old, mac)
    assert got.kind is Kind.AXFR_STYLE_IXFR and got.snapshot is not None
    assert sorted(got.snapshot.records()) == sorted(v3.records())
    # No state directory at all (a file zone): the same, never SERVFAIL.
    messages, mac = ask(responder(None, v3), "IXFR", 1)
    assert receive(messages, TYPE_IXFR, old, mac).kind is Kind.AXFR_STYLE_IXFR


def test_ixfr_from_a_current_or_newer_client_is_one_soa(
    state: tuple[Path, list[Snapshot]],
) -> None:
    state_dir, (_, _, v3) = state
    r = responder(state_dir, v3)
    for serial in (3, 4):
        messages, _ = ask(r, "IXFR", serial)
        assert len(messages) == 1
        answer = dns.message.from_wire(messages[0], keyring=False)  # type: ignore[arg-type]
        assert [rrset.rdtype for rrset in answer.answer] == [6]
        assert answer.answer[0][0].serial == 3  # type: ignore[attr-defined]


def test_udp_ixfr_is_the_soa_and_udp_axfr_notimp(state: tuple[Path, list[Snapshot]]) -> None:
    state_dir, (_, _, v3) = state
    r = responder(state_dir, v3)
    messages, _ = ask(r, "IXFR", 1, tcp=False)
    answer = dns.message.from_wire(messages[0], keyring=False)  # type: ignore[arg-type]
    assert answer.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in answer.answer] == [6]
    messages, _ = ask(r, "AXFR", tcp=False)
    assert dns.message.from_wire(messages[0], keyring=False).rcode() == dns.rcode.NOTIMP  # type: ignore[arg-type]


def test_refusals(state: tuple[Path, list[Snapshot]]) -> None:
    state_dir, (_, _, v3) = state
    r = responder(state_dir, v3)
    outside, _ = ask(r, "AXFR", client=("198.51.100.1", 1), edns=True)
    unsigned, _ = ask(r, "AXFR", key=None, edns=True)
    wrong = dns.tsig.Key("down-key.", "d3Jvbmd3cm9uZ3dyb25nd3Jvbmc=", dns.tsig.HMAC_SHA256)
    badsig, _ = ask(r, "AXFR", key=wrong)
    for messages, rcode in ((outside, 5), (unsigned, 5), (badsig, 9)):
        assert len(messages) == 1 and messages[0][3] & 0xF == rcode
    message = dns.message.from_wire(unsigned[0])
    assert [(o.otype, o.code) for o in message.options] == [(15, 18)]
    assert r.xfr_handler is not None
    counts = r.xfr_handler.counters()
    assert counts["xfrout.refused"] == 2 and counts["xfrout.bad-tsig"] == 1
    assert r.ede == {18: 2}  # authd_responses_ede_total{code="18"}


def test_an_expired_zone_is_not_transferred_unless_allowed(
    state: tuple[Path, list[Snapshot]],
) -> None:
    state_dir, (_, _, v3) = state
    expired = responder(state_dir, v3)
    expired.zones.set_state(QKEY, False, NOW - 1)  # serve-stale: answers, but past expire
    messages, _ = ask(expired, "AXFR", edns=True)
    assert messages[0][3] & 0xF == dns.rcode.REFUSED
    options = dns.message.from_wire(messages[0], keyring=False).options  # type: ignore[arg-type]
    assert [(o.otype, o.code, o.text) for o in options] == [(15, 18, "zone expired")]  # type: ignore[attr-defined]
    allowed = responder(state_dir, v3, provide_expired=True)
    allowed.zones.set_state(QKEY, False, NOW - 1)
    messages, mac = ask(allowed, "AXFR")
    assert receive(messages, TYPE_AXFR, None, mac).snapshot is not None
    expired.zones.set_state(QKEY, False, None)  # refreshed again
    messages, _ = ask(expired, "AXFR")
    assert messages[0][3] & 0xF == dns.rcode.NOERROR


def test_a_zone_not_served_is_notauth(state: tuple[Path, list[Snapshot]]) -> None:
    state_dir, (_, _, v3) = state
    r = responder(state_dir, v3)
    query = dns.message.make_query("other.example.", "AXFR")
    answer = r.respond(query.to_wire(), True, CLIENT)
    assert answer is not None and answer[3] & 0xF == dns.rcode.NOTAUTH


def test_a_signed_soa_query_is_answered_and_signed_with_the_same_key(
    state: tuple[Path, list[Snapshot]],
) -> None:
    """Knot, NSD and BIND sign their SOA checks with the transfer key."""
    state_dir, (_, _, v3) = state
    r = responder(state_dir, v3)
    query = dns.message.make_query(ORIGIN, "SOA")
    data, mac = sign_message(query.to_wire(), KEY, NOW)
    answer = r.respond(data, False, CLIENT)
    assert answer is not None
    message = parse_message(answer)
    TsigVerifier(KEY, mac).check(answer, message, NOW)
    assert message.rcode == 0 and [rec[1] for rec in message.records] == [6]
    stranger = dns.tsig.Key("who.", "d3Jvbmd3cm9uZ3dyb25nd3Jvbmc=", dns.tsig.HMAC_SHA256)
    data, _ = sign_message(query.to_wire(), stranger, NOW)
    answer = r.respond(data, False, CLIENT)
    assert answer is not None and answer[3] & 0xF == dns.rcode.NOTAUTH
