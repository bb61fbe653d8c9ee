"""Tests of zone/drift.py: what a peer's answers mean against the served version."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from authd.zone import drift, names
from authd.zone.drift import PeerAnswers
from authd.zone.snapshot import DNSKEY, NS, Snapshot, SnapshotBuilder

ORIGIN = "example.com."
A, TXT, CAA = 1, 16, 257


def wire(rtype: str, text: str) -> bytes:
    data = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text).to_wire()
    assert data is not None
    return data


def build(serial: int = 10, hosts: int = 6) -> Snapshot:
    builder = SnapshotBuilder(names.key_from_text(ORIGIN))
    rows = [
        (ORIGIN, "SOA", f"ns1.provider.net. h.example.com. {serial} 7200 900 1209600 300"),
        (ORIGIN, "NS", "ns1.provider.net."),
        (ORIGIN, "NS", "ns.extra.org."),
        (ORIGIN, "CAA", '0 issue "ca.example"'),
        *((f"h{i}.{ORIGIN}", "A", f"192.0.2.{i + 1}") for i in range(hosts)),
    ]
    for owner, rtype, text in rows:
        builder.add(
            names.key_from_text(owner), dns.rdatatype.from_text(rtype), 300, wire(rtype, text)
        )
    return builder.build()


SNAP = build()
APEX = names.key_from_text(ORIGIN)


def same_as_served(
    keys: list[tuple[bytes, int]],
) -> dict[tuple[bytes, int], frozenset[bytes] | None]:
    return {key: drift.served_rrset(SNAP, key) for key in keys}


def kinds(answers: PeerAnswers, ignore: frozenset[int] = frozenset()) -> list[str]:
    return [f.kind for f in drift.compare(SNAP, answers, ignore)]


def test_questions_always_cover_the_apex_and_rotate_over_the_zone() -> None:
    first = drift.questions(SNAP, 0, 3)
    assert first[:4] == [(APEX, NS), (APEX, DNSKEY), (APEX, 59), (APEX, 60)]
    seen: set[tuple[bytes, int]] = set()
    for round_ in range(3):  # 7 owners (the apex, six hosts), 3 per round
        seen.update(drift.questions(SNAP, round_, 3)[4:])
    hosts = {(names.key_from_text(f"h{i}.{ORIGIN}"), A) for i in range(6)}
    assert seen == {(APEX, 6), (APEX, CAA), *hosts}
    assert drift.questions(SNAP, 5, 0) == first[:4]


def test_an_identical_peer_has_no_findings() -> None:
    keys = drift.questions(SNAP, 0, 10)
    assert kinds(PeerAnswers(10, same_as_served(keys))) == []


def test_serials_decide_before_contents() -> None:
    different = {(APEX, NS): frozenset({wire("NS", "other.net.")})}
    assert kinds(PeerAnswers(11, different)) == ["serial-ahead"]
    assert kinds(PeerAnswers(9, different)) == ["serial-behind"]
    assert kinds(PeerAnswers(None, {})) == ["unreachable"]


def test_content_differences_at_the_same_serial_are_classified() -> None:
    answers = same_as_served(drift.questions(SNAP, 0, 10))
    answers[(APEX, NS)] = frozenset({wire("NS", "ns1.provider.net.")})
    answers[(APEX, DNSKEY)] = frozenset({wire("DNSKEY", "257 3 13 AAAA")})
    h1 = names.key_from_text(f"h1.{ORIGIN}")
    answers[(h1, A)] = frozenset({wire("A", "198.51.100.1")})
    answers[(names.key_from_text(f"h2.{ORIGIN}"), A)] = None  # that question timed out
    assert sorted(kinds(PeerAnswers(10, answers))) == [
        "dnskey-differs",
        "ns-set-differs",
        "rrset-differs",
    ]


def test_ignored_types_and_name_case_do_not_count() -> None:
    answers = same_as_served(drift.questions(SNAP, 0, 10))
    answers[(APEX, CAA)] = frozenset()  # a provider that does not transfer CAA
    answers[(APEX, NS)] = frozenset({wire("NS", "NS1.Provider.NET."), wire("NS", "ns.EXTRA.org.")})
    assert kinds(PeerAnswers(10, answers)) == ["rrset-differs"]
    assert kinds(PeerAnswers(10, answers), frozenset({CAA})) == []


def test_a_peer_ahead_longer_than_refresh_plus_retry_is_lagging() -> None:
    history = [(0.0, False), (60.0, True), (120.0, True), (180.0, True)]
    assert not drift.lagging_since(history, 180.0, refresh=100, retry=50)
    assert drift.lagging_since(history, 211.0, refresh=100, retry=50)
    assert not drift.lagging_since([*history, (200.0, False)], 400.0, refresh=100, retry=50)
