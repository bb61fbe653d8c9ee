"""The drill's pure checks (authd/assure/drill.py) on real answers from authd's responder
for a signed zone, and on crafted ones: each failure the drill must catch."""

from __future__ import annotations

import calendar
import copy
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype
import pytest

from authd.assure import drill
from authd.serve.responder import Responder
from authd.serve.zonetable import ZoneTable
from authd.zone import names
from authd.zone.loader import load_zone_file
from authd.zone.snapshot import DNSKEY, NS, SOA, Snapshot

ZONES = Path(__file__).parents[1] / "zones"
# The signatures in answer.nsec.zone run from 2026-01-01 to 2040-01-01.
NOW = calendar.timegm((2030, 1, 1, 0, 0, 0))
LATE = calendar.timegm((2041, 1, 1, 0, 0, 0))
A = 1


@pytest.fixture(scope="module")
def signed() -> Snapshot:
    return load_zone_file(ZONES / "answer.nsec.zone", "example")


@pytest.fixture(scope="module")
def responder(signed: Snapshot) -> Responder:
    table = ZoneTable()
    table.add_zone(signed.origin)
    table.publish(signed.origin, signed)
    return Responder(table, identity="", version="", nsid=b"", udp_payload=1232)


def answer(responder: Responder, name: str, rtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rtype, want_dnssec=True, payload=1232)
    query.flags &= ~dns.flags.RD
    raw = responder.respond(query.to_wire(), tcp)
    assert raw is not None
    return dns.message.from_wire(raw)


def rebuilt(message: dns.message.Message) -> dns.message.Message:
    """The message as it would arrive after editing its sections (dnspython indexes them)."""
    return dns.message.from_wire(message.to_wire())


def test_questions_are_the_apex_set_then_a_sample_of_authoritative_names(
    signed: Snapshot,
) -> None:
    asked = drill.questions(signed, 5)
    assert asked[:3] == [(signed.origin, SOA), (signed.origin, NS), (signed.origin, DNSKEY)]
    sample = asked[3:]
    assert 1 <= len(sample) <= 5
    for owner, _ in sample:
        assert owner != signed.origin
        assert owner not in signed.cuts  # no delegation
        assert not any(a in signed.cuts for a in names.ancestors(owner, signed.origin))  # glue
        assert not owner.startswith(names.WILDCARD_LABEL)
    assert drill.questions(signed, 0) == asked[:3]


def test_real_answers_from_authd_pass(signed: Snapshot, responder: Responder) -> None:
    for owner, rtype in drill.questions(signed, 5):
        for tcp in (False, True):
            name = names.to_text(owner)
            response = answer(responder, name, dns.rdatatype.to_text(rtype), tcp)
            ok, why = drill.check_answer(signed, (owner, rtype), response, NOW, udp=not tcp)
            assert ok, (name, rtype, why)
            assert why in ("signed, valid", "truncated over UDP (TC set); TCP carries the answer")


def test_expired_signatures_fail(signed: Snapshot, responder: Responder) -> None:
    response = answer(responder, "example.", "SOA")
    ok, why = drill.check_answer(signed, (signed.origin, SOA), response, LATE, udp=True)
    assert not ok and why.startswith("RRSIG does not validate"), why


def test_missing_aa_fails(signed: Snapshot, responder: Responder) -> None:
    response = answer(responder, "example.", "SOA")
    response.flags &= ~dns.flags.AA
    ok, why = drill.check_answer(signed, (signed.origin, SOA), response, NOW, udp=True)
    assert not ok and "AA not set" in why


def test_different_data_fails(signed: Snapshot, responder: Responder) -> None:
    response = answer(responder, "example.", "A")
    changed = copy.deepcopy(response)
    rrset = changed.find_rrset(changed.answer, dns.name.from_text("example."), 1, A)
    rrset.clear()
    rrset.add(dns.rdata.from_text(1, A, "192.0.2.250"), 3600)
    ok, why = drill.check_answer(signed, (signed.origin, A), changed, NOW, udp=True)
    assert not ok and "differs from the served data" in why


def test_missing_signature_fails(signed: Snapshot, responder: Responder) -> None:
    response = answer(responder, "example.", "A")
    response.answer = [r for r in response.answer if r.rdtype != dns.rdatatype.RRSIG]
    response = rebuilt(response)
    ok, why = drill.check_answer(signed, (signed.origin, A), response, NOW, udp=True)
    assert (ok, why) == (False, "no RRSIG in the answer")


def test_no_answer_error_and_truncation(signed: Snapshot, responder: Responder) -> None:
    question = (signed.origin, SOA)
    assert drill.check_answer(signed, question, "no answer within 2 s", NOW, udp=True) == (
        False,
        "no answer within 2 s",
    )
    refused = answer(responder, "example.", "SOA")
    refused.set_rcode(dns.rcode.REFUSED)
    assert drill.check_answer(signed, question, refused, NOW, udp=False) == (False, "rcode REFUSED")
    truncated = answer(responder, "example.", "SOA")
    truncated.flags |= dns.flags.TC
    assert drill.check_answer(signed, question, truncated, NOW, udp=True)[0]
    # over TCP a truncated answer is no answer
    truncated.answer = []
    truncated = rebuilt(truncated)
    assert not drill.check_answer(signed, question, truncated, NOW, udp=False)[0]


def test_unsigned_answers_need_only_the_data(responder: Responder) -> None:
    plain = load_zone_file(ZONES / "answer.zone", "example")
    table = ZoneTable()
    table.add_zone(plain.origin)
    table.publish(plain.origin, plain)
    unsigned = Responder(table, identity="", version="", nsid=b"", udp_payload=1232)
    response = answer(unsigned, "example.", "NS")
    assert drill.check_answer(plain, (plain.origin, NS), response, NOW, udp=True) == (
        True,
        "unsigned",
    )


def test_horizon_check() -> None:
    day = 86400
    check = drill.horizon_check(NOW + 10 * day, NOW + 10 * day, NOW, 3)
    assert check.ok and "10.0 days; signatures expire" in check.detail
    assert not drill.horizon_check(NOW + 2 * day, NOW + 2 * day, NOW, 3).ok
    expired = drill.horizon_check(NOW + 5 * day, NOW + 9 * day, NOW, 3)
    assert expired.ok and "the zone expires" in expired.detail
    assert not drill.horizon_check(NOW - 1, None, NOW, 0).ok
    assert drill.horizon_check(None, None, NOW, 3).ok


def test_verdict_needs_every_check() -> None:
    assert drill.verdict([drill.Check("a", True), drill.Check("b", True)])
    assert not drill.verdict([drill.Check("a", True), drill.Check("b", False, "why")])
    assert not drill.verdict([])


def test_text_form_says_whether_the_copy_carries_the_domain() -> None:
    from authd.assure.text import format_drill

    result = {
        "zone": "example",
        "serial": 7,
        "ok": False,
        "valid_until": "2030-01-15T00:00:00Z",
        "checks": [
            {"name": "verify", "ok": True, "detail": "signed, 3 RRsets validated"},
            {"name": "udp 127.0.0.1@53 example SOA", "ok": False, "detail": "AA not set"},
        ],
    }
    assert format_drill(result).splitlines() == [
        "example serial 7: drill FAILED (1/2 checks)",
        "ok   verify: signed, 3 RRsets validated",
        "FAIL udp 127.0.0.1@53 example SOA: AA not set",
        "the copy would not carry the domain: 1 check(s) failed (its horizon is "
        "2030-01-15T00:00:00Z)",
    ]
    result["ok"] = True
    assert format_drill(result).splitlines()[-1] == (
        "the copy would carry the domain until 2030-01-15T00:00:00Z"
    )
