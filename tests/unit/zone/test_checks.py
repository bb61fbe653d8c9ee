"""Tests of zone/checks.py: each structural rule, severities and messages."""

from __future__ import annotations

from collections.abc import Iterator

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from authd.zone import checks, names
from authd.zone.checks import Problem, Severity, check_structure, rejections
from authd.zone.snapshot import Node, Snapshot, SnapshotBuilder, pack_node

ORIGIN = "example.com."
BASE = [
    ("example.com.", "SOA", "ns1.example.com. host.example.com. 1 7200 900 1209600 300"),
    ("example.com.", "NS", "ns1.example.com."),
    ("ns1.example.com.", "A", "192.0.2.1"),
]


def wire(rtype: str, text: str) -> bytes:
    rdtype = dns.rdatatype.from_text(rtype)
    data = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text).to_wire()
    assert data is not None
    return data


def build(*records: tuple[str, str, str], base: bool = True) -> Snapshot:
    builder = SnapshotBuilder(names.key_from_text(ORIGIN))
    for owner, rtype, text in [*(BASE if base else []), *records]:
        builder.add(
            names.key_from_text(owner), dns.rdatatype.from_text(rtype), 300, wire(rtype, text)
        )
    return builder.build()


def rules(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.rule, p.severity.value) for p in problems]


def test_clean_zone_has_no_problems() -> None:
    snap = build(
        ("www.example.com.", "CNAME", "web.example.com."),
        ("web.example.com.", "A", "192.0.2.2"),
        ("sub.example.com.", "NS", "ns.sub.example.com."),
        ("sub.example.com.", "NS", "ns.other.net."),
        ("ns.sub.example.com.", "A", "192.0.2.3"),
    )
    assert check_structure(snap) == []


def test_cname_beside_other_data_is_rejected_with_owner_and_rule() -> None:
    snap = build(
        ("www.example.com.", "CNAME", "web.example.com."), ("www.example.com.", "A", "192.0.2.2")
    )
    problems = check_structure(snap)
    assert rules(problems) == [("cname-other-data", "reject")]
    assert problems[0].message == "www.example.com/CNAME: CNAME beside other data"
    assert problems[0].owner == names.key_from_text("www.example.com.")
    assert rejections(problems) == problems


def test_cname_may_coexist_with_dnssec_records() -> None:
    snap = build(
        ("www.example.com.", "CNAME", "web.example.com."),
        ("www.example.com.", "NSEC", "zz.example.com. CNAME RRSIG NSEC"),
        (
            "www.example.com.",
            "RRSIG",
            "CNAME 13 3 300 20400101000000 20260101000000 1 example.com. AAAA",
        ),
    )
    assert check_structure(snap) == []


def test_two_cnames_are_rejected() -> None:
    snap = build(
        ("www.example.com.", "CNAME", "a.example.com."),
        ("www.example.com.", "CNAME", "b.example.com."),
    )
    assert rules(check_structure(snap)) == [("cname-multiple", "reject")]


def test_missing_apex_ns_is_rejected() -> None:
    snap = build(BASE[0], base=False)
    problems = check_structure(snap)
    assert rules(problems) == [("apex-ns", "reject")]
    assert problems[0].message == "example.com/NS: the apex has no NS records"


def _snapshot_with_blobs(nodes: dict[str, Node]) -> Snapshot:
    """A Snapshot made directly, as a transfer bug could, bypassing the builder's checks."""
    blobs = {names.key_from_text(k): pack_node(v) for k, v in nodes.items()}
    return Snapshot(
        names.key_from_text(ORIGIN),
        blobs,
        cuts=frozenset(),
        dnames=frozenset(),
        ents=frozenset(),
        order=sorted(names.canonical_key(k) for k in blobs),
        nsec3_hashes=[],
        nsec3_owners=[],
        record_count=len(blobs),
    )


def test_data_outside_the_zone_and_misplaced_soa_are_rejected() -> None:
    soa = (300, (wire("SOA", BASE[0][2]),))
    snap = _snapshot_with_blobs(
        {
            ORIGIN: {6: soa, 2: (300, (wire("NS", "ns1.example.com."),))},
            "www.example.org.": {1: (300, (wire("A", "192.0.2.9"),))},
            "inner.example.com.": {6: soa},
        }
    )
    problems = check_structure(snap)
    assert sorted(rules(problems)) == [("out-of-zone", "reject"), ("soa-not-apex", "reject")]
    out = next(p for p in problems if p.rule == "out-of-zone")
    assert out.message == "www.example.org: outside the zone example.com."


def test_dname_with_descendants_warns() -> None:
    snap = build(
        ("d.example.com.", "DNAME", "example.net."), ("x.d.example.com.", "A", "192.0.2.5")
    )
    problems = check_structure(snap)
    assert rules(problems) == [("dname-descendants", "warn")]
    assert rejections(problems) == []


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        # in-domain target without an address
        ([("sub.example.com.", "NS", "ns.sub.example.com.")], [("missing-glue", "warn")]),
        # sibling target under another cut, without an address
        (
            [
                ("a.example.com.", "NS", "ns.b.example.com."),
                ("b.example.com.", "NS", "ns.elsewhere.net."),
            ],
            [("missing-glue", "warn")],
        ),
        # glue present, or target outside the zone, or authoritative in-zone name
        (
            [
                ("sub.example.com.", "NS", "ns.sub.example.com."),
                ("ns.sub.example.com.", "AAAA", "2001:db8::1"),
            ],
            [],
        ),
        ([("sub.example.com.", "NS", "ns.elsewhere.net.")], []),
        ([("sub.example.com.", "NS", "ns1.example.com.")], []),
    ],
)
def test_missing_glue_warns(
    records: list[tuple[str, str, str]], expected: list[tuple[str, str]]
) -> None:
    assert rules(check_structure(build(*records))) == expected


def test_every_problem_is_reported() -> None:
    snap = build(
        ("a.example.com.", "CNAME", "x.example.com."),
        ("a.example.com.", "TXT", "t"),
        ("b.example.com.", "CNAME", "x.example.com."),
        ("b.example.com.", "MX", "10 x.example.com."),
        ("sub.example.com.", "NS", "ns.sub.example.com."),
    )
    assert sorted(rules(check_structure(snap))) == [
        ("cname-other-data", "reject"),
        ("cname-other-data", "reject"),
        ("missing-glue", "warn"),
    ]


def test_registries_take_new_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    def too_many_txt(snapshot: Snapshot, owner: bytes, node: Node) -> Iterator[Problem]:
        entry = node.get(16)
        if entry is not None and len(entry[1]) > 1:
            yield checks.reject(owner, 16, "txt-limit", "too many TXT records")

    monkeypatch.setattr(checks, "NODE_CHECKS", [*checks.NODE_CHECKS, too_many_txt])
    snap = build(("t.example.com.", "TXT", "one"), ("t.example.com.", "TXT", "two"))
    problems = check_structure(snap)
    assert rules(problems) == [("txt-limit", "reject")]
    assert problems[0].severity is Severity.REJECT
    assert str(problems[0]) == "t.example.com/TXT: too many TXT records"


def test_unterminated_ns_target_is_rejected_not_raised() -> None:
    """A corrupted version (the NS target's root label flipped) is a rejection, not a crash."""
    soa = (300, (wire("SOA", BASE[0][2]),))
    broken = wire("NS", "ns.sub.example.com.")[:-1] + b"\x05"
    snap = _snapshot_with_blobs(
        {
            ORIGIN: {6: soa, 2: (300, (wire("NS", "ns1.example.com."),))},
            "sub.example.com.": {2: (300, (broken,))},
        }
    )
    problems = check_structure(snap)
    assert ("malformed-rdata", "reject") in rules(problems)
    bad = next(p for p in problems if p.rule == "malformed-rdata")
    assert bad.message == "sub.example.com/NS: NS target is not a domain name"
