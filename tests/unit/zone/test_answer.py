"""Tests of zone/answer.py: every lookup case, DO=0 and DO=1, NSEC and NSEC3.

The zones are tests/unit/zones/answer.zone and its pre-signed copies (see
make-signed.sh there). Proofs are checked for what they must prove (an NSEC
covers the name, an NSEC3 hash matches or covers, signatures verify) with
dnspython as an independent implementation; a final test compares every answer
with a real knotd serving the same zones.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import pytest

from authd.zone import names
from authd.zone.answer import NOERROR, NXDOMAIN, YXDOMAIN, Result, RRsetOut, lookup, nsec3_hash
from authd.zone.loader import load_zone_file
from authd.zone.snapshot import Nsec3Params, Snapshot, covered_type
from tests.support.system import free_port, require_binary

ZONES = Path(__file__).parents[1] / "zones"
VARIANT_FILES = {
    "plain": "answer.zone",
    "nsec": "answer.nsec.zone",
    "nsec3": "answer.nsec3.zone",
    "optout": "answer.nsec3-optout.zone",
}
SIGNED = ("nsec", "nsec3", "optout")
NSEC3_VARIANTS = ("nsec3", "optout")
T = dns.rdatatype.RdataType


@pytest.fixture(scope="module")
def zones() -> dict[str, Snapshot]:
    return {v: load_zone_file(ZONES / f, "example.") for v, f in VARIANT_FILES.items()}


def q(snap: Snapshot, name: str, qtype: str, do: bool = False) -> Result:
    return lookup(snap, names.key_from_text(name), T.make(dns.rdatatype.from_text(qtype)), do)


def owner(rrset: RRsetOut) -> str:
    return names.to_text(rrset.owner)


def shape(section: list[RRsetOut]) -> list[tuple[str, str]]:
    return [(owner(r), dns.rdatatype.to_text(T.make(r.rtype))) for r in section]


def texts(rrset: RRsetOut) -> list[str]:
    rdtype = T.make(rrset.rtype)
    return [dns.rdata.from_wire(1, rdtype, x, 0, len(x)).to_text() for x in rrset.rdatas]


def to_rrset(rrset: RRsetOut) -> dns.rrset.RRset:
    covers = covered_type(rrset.rdatas[0]) if rrset.rtype == int(T.RRSIG) else 0
    out = dns.rrset.RRset(
        names.to_name(rrset.owner), dns.rdataclass.IN, T.make(rrset.rtype), T.make(covers)
    )
    for wire in rrset.rdatas:
        out.add(dns.rdata.from_wire(1, T.make(rrset.rtype), wire, 0, len(wire)), rrset.ttl)
    return out


def sigs_rrset(rrset: RRsetOut) -> dns.rrset.RRset:
    assert rrset.sigs is not None
    ttl, wires = rrset.sigs
    out = dns.rrset.RRset(
        names.to_name(rrset.owner), dns.rdataclass.IN, T.RRSIG, T.make(rrset.rtype)
    )
    for wire in wires:
        out.add(dns.rdata.from_wire(1, T.RRSIG, wire, 0, len(wire)), ttl)
    return out


def all_sections(result: Result) -> Iterator[RRsetOut]:
    yield from result.answer
    yield from result.authority
    yield from result.additional


# -- plain zone: the lookup cases -------------------------------------------------------


def test_exact_match_is_authoritative_and_minimal(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "web.example.", "A")
    assert (r.rcode, r.aa) == (NOERROR, True)
    assert shape(r.answer) == [("web.example.", "A")]
    assert texts(r.answer[0]) == ["192.0.2.80"]
    assert r.authority == [] and r.additional == []  # no apex NS (minimal responses)


def test_nodata_has_soa_with_negative_ttl(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    r = q(snap, "web.example.", "MX")
    assert (r.rcode, r.answer) == (NOERROR, [])
    assert shape(r.authority) == [("example.", "SOA")]
    assert r.authority[0].ttl == min(snap.soa_ttl, snap.soa.minimum) == 600


def test_nxdomain(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "nope.example.", "A")
    assert (r.rcode, r.aa, r.answer) == (NXDOMAIN, True, [])
    assert shape(r.authority) == [("example.", "SOA")]


@pytest.mark.parametrize("name", ["ent.example.", "b.ent.example.", "ent2.wild.example."])
def test_empty_non_terminal_is_nodata(zones: dict[str, Snapshot], name: str) -> None:
    r = q(zones["plain"], name, "A")
    assert (r.rcode, r.answer) == (NOERROR, [])
    assert shape(r.authority) == [("example.", "SOA")]


def test_cname_chain_is_followed(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "chain1.example.", "A")
    assert r.rcode == NOERROR
    assert shape(r.answer) == [
        ("chain1.example.", "CNAME"),
        ("chain2.example.", "CNAME"),
        ("www.example.", "CNAME"),
        ("web.example.", "A"),
    ]
    assert r.additional == []  # CNAME targets get no additional processing


@pytest.mark.parametrize(
    ("name", "loop"),
    [
        ("loop1.example.", ["loop1", "loop2", "loop3"]),
        ("self.example.", ["self"]),
        ("foo.wcloop.example.", ["foo.wcloop", "a.wcloop"]),
    ],
)
def test_cname_loop_stops_with_each_cname_once(
    zones: dict[str, Snapshot], name: str, loop: list[str]
) -> None:
    r = q(zones["plain"], name, "A")
    assert r.rcode == NOERROR
    assert shape(r.answer) == [(f"{label}.example.", "CNAME") for label in loop]


def test_cname_out_of_zone_stops(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "outside.example.", "A")
    assert (r.rcode, shape(r.answer), r.authority) == (
        NOERROR,
        [("outside.example.", "CNAME")],
        [],
    )


def test_cname_to_nonexistent_name_is_nxdomain_with_chain(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "dangling.example.", "A")
    assert r.rcode == NXDOMAIN  # RFC 6604
    assert shape(r.answer) == [("dangling.example.", "CNAME")]
    assert shape(r.authority) == [("example.", "SOA")]


def test_cname_to_nodata_keeps_noerror(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "tonodata.example.", "MX")
    assert r.rcode == NOERROR
    assert shape(r.answer) == [("tonodata.example.", "CNAME")]
    assert shape(r.authority) == [("example.", "SOA")]


def test_cname_query_type_and_mixed_case_target(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    assert shape(q(snap, "www.example.", "CNAME").answer) == [("www.example.", "CNAME")]
    r = q(snap, "mixed.example.", "A")  # target written "WeB" in the zone file
    assert shape(r.answer) == [("mixed.example.", "CNAME"), ("web.example.", "A")]


def test_cname_into_delegation_gives_referral_after_chain(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "tosub.example.", "A")
    assert r.aa  # the first answer is ours
    assert shape(r.answer) == [("tosub.example.", "CNAME")]
    assert shape(r.authority) == [("sub.example.", "NS")]


def test_dname_synthesizes_cname(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "foo.dname.example.", "A")
    assert r.rcode == NOERROR
    assert shape(r.answer) == [("dname.example.", "DNAME"), ("foo.dname.example.", "CNAME")]
    dname, cname = r.answer
    assert texts(cname) == ["foo.example.net."]
    assert cname.ttl == dname.ttl
    assert cname.sigs is None


def test_dname_inside_zone_is_followed(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "a.indname.example.", "A")
    assert shape(r.answer) == [
        ("indname.example.", "DNAME"),
        ("a.indname.example.", "CNAME"),
        ("a.target.example.", "A"),
    ]
    nx = q(zones["plain"], "foo.indname.example.", "A")
    assert nx.rcode == NXDOMAIN and len(nx.answer) == 2


def test_dname_too_long_is_yxdomain(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    fits = q(snap, "x.longdn.example.", "A")
    assert fits.rcode == NOERROR and len(texts(fits.answer[1])[0]) <= 255
    r = q(snap, "aaaaaaaaaaaaaaaaaa.longdn.example.", "A")
    assert r.rcode == YXDOMAIN  # RFC 6672 2.2
    assert shape(r.answer) == [("longdn.example.", "DNAME")]


def test_dname_owner_itself(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    assert shape(q(snap, "dname.example.", "DNAME").answer) == [("dname.example.", "DNAME")]
    r = q(snap, "dname.example.", "A")
    assert r.answer == [] and shape(r.authority) == [("example.", "SOA")]


def test_wildcard_synthesis(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    r = q(snap, "foo.wild.example.", "A")
    assert (r.rcode, shape(r.answer)) == (NOERROR, [("foo.wild.example.", "A")])
    deep = q(snap, "a.b.foo.wild.example.", "A")
    assert shape(deep.answer) == [("a.b.foo.wild.example.", "A")]
    cname = q(snap, "x.wc.example.", "A")
    assert shape(cname.answer) == [("x.wc.example.", "CNAME"), ("web.example.", "A")]


def test_wildcard_nodata(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "foo.wild.example.", "TXT")
    assert (r.rcode, r.answer, shape(r.authority)) == (NOERROR, [], [("example.", "SOA")])


def test_wildcard_blocked_by_existing_name_and_ent(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    existing = q(snap, "exists.wild.example.", "A")
    assert existing.rcode == NOERROR and existing.answer == []
    below_ent = q(snap, "y.ent2.wild.example.", "A")
    assert below_ent.rcode == NXDOMAIN  # closest encloser is the ENT, which has no wildcard


def test_wildcard_does_not_apply_below_a_cut(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "foo.sub2.example.", "A")
    assert not r.aa and r.answer == []
    assert shape(r.authority) == [("sub2.example.", "NS")]


def test_referral_with_glue(zones: dict[str, Snapshot]) -> None:
    for name in ("sub.example.", "host.sub.example.", "ns.sub.example."):
        r = q(zones["plain"], name, "A")
        assert (r.rcode, r.aa, r.answer) == (NOERROR, False, [])
        assert shape(r.authority) == [("sub.example.", "NS")]
        # In-domain glue first and required; sibling glue and the in-zone server optional.
        assert shape(r.additional) == [
            ("ns.sub.example.", "A"),
            ("ns.sub.example.", "AAAA"),
            ("ns.sub2.example.", "A"),
            ("ns1.example.", "A"),
            ("ns1.example.", "AAAA"),
        ]
        assert r.required_additional == 2


def test_ns_query_at_cut_is_referral(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "sub.example.", "NS")
    assert not r.aa and r.answer == [] and shape(r.authority)[0] == ("sub.example.", "NS")


def test_ds_at_cut_is_answered_from_parent(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    present = q(snap, "secure.example.", "DS")
    assert present.aa and shape(present.answer) == [("secure.example.", "DS")]
    absent = q(snap, "sub.example.", "DS")
    assert absent.aa and absent.answer == [] and shape(absent.authority) == [("example.", "SOA")]
    below = q(snap, "host.sub.example.", "DS")
    assert not below.aa and shape(below.authority) == [("sub.example.", "NS")]


def test_apex_ns_soa_and_ds(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    ns = q(snap, "example.", "NS")
    assert ns.aa and shape(ns.answer) == [("example.", "NS")]
    assert shape(ns.additional) == [
        ("ns1.example.", "A"),
        ("ns1.example.", "AAAA"),
        ("ns2.example.", "A"),
    ]
    assert shape(q(snap, "example.", "SOA").answer) == [("example.", "SOA")]
    ds = q(snap, "example.", "DS")
    assert ds.aa and ds.answer == [] and shape(ds.authority) == [("example.", "SOA")]


def test_any_returns_one_rrset(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    assert shape(q(snap, "example.", "ANY").answer) == [("example.", "A")]  # lowest type
    assert shape(q(snap, "www.example.", "ANY").answer) == [("www.example.", "CNAME")]
    assert shape(q(snap, "foo.wild.example.", "ANY").answer) == [("foo.wild.example.", "A")]
    assert q(snap, "nope.example.", "ANY").rcode == NXDOMAIN


def test_additional_addresses_for_targets(zones: dict[str, Snapshot]) -> None:
    snap = zones["plain"]
    mx = q(snap, "example.", "MX")
    assert shape(mx.additional) == [("mail.example.", "A"), ("mail.example.", "AAAA")]
    srv = q(snap, "_sip._udp.example.", "SRV")
    assert shape(srv.additional) == [("sip.example.", "A")]
    for rtype in ("SVCB", "HTTPS"):
        svc = q(snap, "svc.example.", rtype)
        assert shape(svc.additional) == [("web.example.", "A"), ("web.example.", "AAAA")]
    wild = q(snap, "wmx.example.", "MX")  # target synthesized from *.wild
    assert shape(wild.additional) == [("host.wild.example.", "A")]
    assert mx.required_additional == 0


def test_rrsig_query_on_unsigned_zone_is_nodata(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "www.example.", "RRSIG")
    assert r.answer == [] and shape(r.authority) == [("example.", "SOA")]


def test_rdata_in_canonical_order(zones: dict[str, Snapshot]) -> None:
    r = q(zones["plain"], "sub.example.", "A")
    assert list(r.authority[0].rdatas) == sorted(r.authority[0].rdatas)


# -- signed zones -------------------------------------------------------------------------


def dnskeys(snap: Snapshot) -> dict[dns.name.Name, dns.rdataset.Rdataset]:
    r = lookup(snap, snap.origin, int(T.DNSKEY), False)
    rrset = to_rrset(r.answer[0])
    return {rrset.name: rrset.to_rdataset()}


def assert_signed(snap: Snapshot, result: Result) -> None:
    """Every RRset that carries signatures verifies with the zone's DNSKEY."""
    keys = dnskeys(snap)
    now = 2_000_000_000  # 2033, inside the signatures' validity window
    for rrset in all_sections(result):
        if rrset.rtype == int(T.RRSIG) or rrset.sigs is None:
            continue
        data = to_rrset(rrset)
        sigs = sigs_rrset(rrset)
        if rrset.rtype == int(T.CNAME) and rrset.owner != names.key_from_name(data.name):
            continue
        dns.dnssec.validate(data, sigs, keys, now=now)


@pytest.mark.parametrize("variant", SIGNED)
def test_do0_on_signed_zone_has_no_dnssec_records(zones: dict[str, Snapshot], variant: str) -> None:
    snap = zones[variant]
    for name, qtype in [("nope.example.", "A"), ("web.example.", "A"), ("sub.example.", "A")]:
        r = q(snap, name, qtype, do=False)
        assert all(x.sigs is None for x in all_sections(r))
        assert not {x.rtype for x in all_sections(r)} & {int(T.NSEC), int(T.NSEC3), int(T.DS)}


@pytest.mark.parametrize("variant", SIGNED)
def test_do1_signs_every_section(zones: dict[str, Snapshot], variant: str) -> None:
    snap = zones[variant]
    r = q(snap, "example.", "MX", do=True)
    assert r.answer[0].sigs is not None
    assert all(x.sigs is not None for x in r.additional)
    assert_signed(snap, r)
    neg = q(snap, "nope.example.", "A", do=True)
    assert all(x.sigs is not None for x in neg.authority)
    assert neg.authority[0].sigs is not None and neg.authority[0].sigs[0] == 600  # capped TTL
    assert_signed(snap, neg)


def nsec_covers(rrset: RRsetOut, name: str) -> bool:
    """owner < name < next in canonical order (RFC 4034 6.1), wrapping at the apex."""
    nsec = dns.rdata.from_wire(1, T.NSEC, rrset.rdatas[0], 0, len(rrset.rdatas[0]))
    lo, hi, key = names.to_name(rrset.owner), nsec.next, dns.name.from_text(name)
    if lo < hi:
        return lo < key < hi
    return key > lo or key < hi


def nsec_types(rrset: RRsetOut) -> set[str]:
    text = texts(rrset)[0].split()
    return set(text[1:])


def test_nsec_nxdomain_proof(zones: dict[str, Snapshot]) -> None:
    snap = zones["nsec"]
    r = q(snap, "nope.example.", "A", do=True)
    assert shape(r.authority)[0] == ("example.", "SOA")
    nsecs = r.authority[1:]
    assert all(x.rtype == int(T.NSEC) for x in nsecs)
    assert any(nsec_covers(x, "nope.example.") for x in nsecs)
    assert any(nsec_covers(x, "*.example.") for x in nsecs)
    assert_signed(snap, r)


def test_nsec_nodata_and_ent_proofs(zones: dict[str, Snapshot]) -> None:
    snap = zones["nsec"]
    r = q(snap, "web.example.", "MX", do=True)
    assert shape(r.authority) == [("example.", "SOA"), ("web.example.", "NSEC")]
    assert "MX" not in nsec_types(r.authority[1])
    ent = q(snap, "b.ent.example.", "A", do=True)
    assert ent.authority[1].rtype == int(T.NSEC) and nsec_covers(ent.authority[1], "b.ent.example.")
    ds_apex = q(snap, "example.", "DS", do=True)
    assert shape(ds_apex.authority) == [("example.", "SOA"), ("example.", "NSEC")]


def test_nsec_wildcard_proofs(zones: dict[str, Snapshot]) -> None:
    snap = zones["nsec"]
    answer = q(snap, "foo.wild.example.", "A", do=True)
    assert answer.answer[0].sigs is not None  # the wildcard's own signature
    assert len(answer.authority) == 1 and nsec_covers(answer.authority[0], "foo.wild.example.")
    assert_signed(snap, answer)
    nodata = q(snap, "foo.wild.example.", "TXT", do=True)
    assert shape(nodata.authority)[:2] == [("example.", "SOA"), ("*.wild.example.", "NSEC")]
    assert nsec_covers(nodata.authority[2], "foo.wild.example.")


def test_nsec_delegation_proofs(zones: dict[str, Snapshot]) -> None:
    snap = zones["nsec"]
    insecure = q(snap, "host.sub.example.", "A", do=True)
    assert shape(insecure.authority) == [("sub.example.", "NS"), ("sub.example.", "NSEC")]
    assert "DS" not in nsec_types(insecure.authority[1])
    assert insecure.authority[0].sigs is None  # delegation NS is not signed
    secure = q(snap, "secure.example.", "A", do=True)
    assert shape(secure.authority) == [("secure.example.", "NS"), ("secure.example.", "DS")]
    assert secure.authority[1].sigs is not None
    assert_signed(snap, secure)
    no_ds = q(snap, "sub.example.", "DS", do=True)
    assert no_ds.aa and shape(no_ds.authority) == [("example.", "SOA"), ("sub.example.", "NSEC")]


def test_any_and_rrsig_queries_on_signed_zone(zones: dict[str, Snapshot]) -> None:
    snap = zones["nsec"]
    web = q(snap, "web.example.", "ANY", do=True)
    assert shape(web.answer) == [("web.example.", "A")] and web.answer[0].sigs is not None
    # svc holds NSEC, SVCB, HTTPS and RRSIG: RRSIG (type 46) is the lowest, as in Knot.
    svc = q(snap, "svc.example.", "ANY")
    assert {x.rtype for x in svc.answer} == {int(T.RRSIG)}
    assert sorted(covered_type(x.rdatas[0]) for x in svc.answer) == [47, 64, 65]
    sig = q(snap, "example.", "RRSIG")
    assert len(sig.answer) == 1 and {covered_type(x) for x in sig.answer[0].rdatas} == {1}
    cname_sig = q(snap, "www.example.", "RRSIG")
    assert covered_type(cname_sig.answer[0].rdatas[0]) == int(T.CNAME)


def test_svcb_target_denial_in_additional(zones: dict[str, Snapshot]) -> None:
    for variant, proof in [("nsec", "NSEC"), ("nsec3", "NSEC3")]:
        r = q(zones[variant], "svc.example.", "SVCB", do=True)
        assert [t for _, t in shape(r.additional)] == ["A", "AAAA", proof]


# -- NSEC3 --------------------------------------------------------------------------------


def nsec3_params(snap: Snapshot) -> Nsec3Params:
    assert snap.nsec3_params is not None
    return snap.nsec3_params


def dnspython_hash(snap: Snapshot, name: str) -> str:
    p = nsec3_params(snap)
    return dns.dnssec.nsec3_hash(name, p.salt, p.iterations, p.algorithm).lower()


def nsec3_range(rrset: RRsetOut) -> tuple[str, str]:
    rd = dns.rdata.from_wire(1, T.NSEC3, rrset.rdatas[0], 0, len(rrset.rdatas[0]))
    nxt = base64.b32hexencode(rd.next).decode().lower().rstrip("=")
    return names.to_text(rrset.owner).split(".")[0], nxt


def matches(rrset: RRsetOut, hashed: str) -> bool:
    return nsec3_range(rrset)[0] == hashed


def covers(rrset: RRsetOut, hashed: str) -> bool:
    lo, hi = nsec3_range(rrset)
    return lo < hashed < hi if lo < hi else hashed > lo or hashed < hi


def test_nsec3_hash_matches_dnspython(zones: dict[str, Snapshot]) -> None:
    for variant in NSEC3_VARIANTS:
        snap = zones[variant]
        for name in ("example.", "web.example.", "*.wild.example.", "a.b.c.example."):
            ours = base64.b32hexencode(
                nsec3_hash(names.key_from_text(name), nsec3_params(snap))
            ).decode()
            assert ours.lower() == dnspython_hash(snap, name)


@pytest.mark.parametrize("variant", NSEC3_VARIANTS)
def test_nsec3_nxdomain_proof(zones: dict[str, Snapshot], variant: str) -> None:
    snap = zones[variant]
    r = q(snap, "deep.nope.example.", "A", do=True)
    assert r.rcode == NXDOMAIN
    proof = r.authority[1:]
    assert shape(r.authority)[0] == ("example.", "SOA") and len(proof) == 3
    # RFC 5155 7.2.2: closest encloser matched, next closer covered, wildcard covered.
    assert matches(proof[0], dnspython_hash(snap, "example."))
    assert covers(proof[1], dnspython_hash(snap, "nope.example."))
    assert covers(proof[2], dnspython_hash(snap, "*.example."))
    assert_signed(snap, r)


@pytest.mark.parametrize("variant", NSEC3_VARIANTS)
def test_nsec3_nodata_proofs(zones: dict[str, Snapshot], variant: str) -> None:
    snap = zones[variant]
    r = q(snap, "web.example.", "MX", do=True)
    assert len(r.authority) == 2 and matches(r.authority[1], dnspython_hash(snap, "web.example."))
    ent = q(snap, "b.ent.example.", "A", do=True)  # the ENT has its own NSEC3
    assert matches(ent.authority[1], dnspython_hash(snap, "b.ent.example."))


@pytest.mark.parametrize("variant", NSEC3_VARIANTS)
def test_nsec3_wildcard_proofs(zones: dict[str, Snapshot], variant: str) -> None:
    snap = zones[variant]
    answer = q(snap, "foo.wild.example.", "A", do=True)
    assert len(answer.authority) == 1
    assert covers(answer.authority[0], dnspython_hash(snap, "foo.wild.example."))
    nodata = q(snap, "foo.wild.example.", "TXT", do=True)
    proof = nodata.authority[1:]
    assert matches(proof[0], dnspython_hash(snap, "*.wild.example."))
    assert any(matches(x, dnspython_hash(snap, "wild.example.")) for x in proof)
    assert any(covers(x, dnspython_hash(snap, "foo.wild.example.")) for x in proof)


def test_nsec3_insecure_delegation(zones: dict[str, Snapshot]) -> None:
    plain = zones["nsec3"]
    r = q(plain, "host.sub.example.", "A", do=True)
    assert matches(r.authority[1], dnspython_hash(plain, "sub.example."))
    optout = zones["optout"]
    # Opt-out: d.ent3 has no NSEC3; prove the closest provable encloser (the nearest
    # ancestor with an NSEC3) and cover the next closer name below it.
    r = q(optout, "d.ent3.example.", "A", do=True)
    proof = r.authority[1:]
    assert len(proof) == 2
    hashed_owners = {names.to_text(k).split(".")[0] for k in optout.nsec3_owners}
    assert dnspython_hash(optout, "d.ent3.example.") not in hashed_owners
    encloser, next_closer = next(
        (a, b)
        for a, b in [("ent3.example.", "d.ent3.example."), ("example.", "ent3.example.")]
        if dnspython_hash(optout, a) in hashed_owners
    )
    assert matches(proof[0], dnspython_hash(optout, encloser))
    assert covers(proof[1], dnspython_hash(optout, next_closer))
    ds = q(optout, "d.ent3.example.", "DS", do=True)
    assert ds.aa and ds.answer == [] and len(ds.authority) == 3


def test_nsec3_owner_names_are_not_zone_names(zones: dict[str, Snapshot]) -> None:
    snap = zones["nsec3"]
    hashed = names.to_text(snap.nsec3_owners[0])
    assert q(snap, hashed, "NSEC3").rcode == NXDOMAIN


# -- against knotd --------------------------------------------------------------------------

L60 = "l" * 60
DIFF_QUERIES = """
example. SOA|example. NS|example. A|example. MX|example. ANY|example. RRSIG|example. DS
example. DNSKEY|example. NSEC|example. NSEC3PARAM|example. AAAA|ns1.example. A|ns1.example. TXT
web.example. ANY|www.example. A|www.example. CNAME|www.example. ANY|www.example. RRSIG
www.example. TXT|chain1.example. A|chain1.example. AAAA|loop1.example. A|self.example. A
dangling.example. A|tonodata.example. MX|toent.example. A|outside.example. A
todname.example. A|tosub.example. A|towild.example. A|towild.example. TXT
_sip._udp.example. SRV|svc.example. SVCB|svc.example. HTTPS|svc.example. ANY
svc.example. RRSIG|ent.example. A|b.ent.example. A|a.b.ent.example. TXT|c.b.ent.example. A
nope.example. A|deep.nope.example. A|foo.wild.example. A|foo.wild.example. MX
foo.wild.example. TXT|foo.wild.example. ANY|deep.foo.wild.example. A|exists.wild.example. A
exists.wild.example. TXT|ent2.wild.example. A|y.ent2.wild.example. A|x.ent2.wild.example. TXT
*.wild.example. A|*.wild.example. TXT|foo.wc.example. A|foo.wc.example. CNAME
foo.wcloop.example. A|dname.example. DNAME|dname.example. A|foo.dname.example. A
a.b.dname.example. TXT|foo.indname.example. A|a.indname.example. A|a.indname.example. TXT
x.longdn.example. A|aaaaaaaaaaaaaaaaaa.longdn.example. A|sub.example. A|sub.example. NS
sub.example. DS|sub.example. ANY|host.sub.example. A|host.sub.example. DS|ns.sub.example. A
sub2.example. A|sub2.example. DS|x.sub2.example. A|secure.example. A|secure.example. DS
secure.example. NS|x.secure.example. A|target.example. A|a.target.example. A|mail.example. MX
wmx.example. MX|mixed.example. A|ent3.example. A|d.ent3.example. A|d.ent3.example. DS
x.d.ent3.example. A|zz.ent3.example. A|foo.wild.example. RRSIG|example. NSEC3
nope.example. NSEC|foo.sub2.example. A
"""


def section_view(rrsets: list[dns.rrset.RRset]) -> list[tuple[object, ...]]:
    """RRsets in order, names case-folded, RDATA in canonical (digestable) form."""
    return [
        (r.name.canonicalize(), r.rdtype, r.covers, r.ttl, frozenset(x.to_digestable() for x in r))
        for r in rrsets
    ]


def ours_as_rrsets(section: list[RRsetOut]) -> list[dns.rrset.RRset]:
    """As the renderer writes them: data RRsets, then their signatures."""
    return [to_rrset(r) for r in section] + [sigs_rrset(r) for r in section if r.sigs is not None]


@pytest.fixture(scope="module")
def knotd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    binary = require_binary("knotd")
    ports: dict[str, int] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for variant, file in VARIANT_FILES.items():
            work = tmp_path_factory.mktemp(f"knot-{variant}")
            port = free_port()
            (work / "knot.conf").write_text(
                f"server:\n    listen: 127.0.0.1@{port}\n    rundir: {work}\n    nsid: test\n"
                f"database:\n    storage: {work}\n"
                f"zone:\n  - domain: example.\n    file: {ZONES / file}\n    storage: {work}\n"
                "    zonefile-sync: -1\n    journal-content: none\n    semantic-checks: off\n"
            )
            procs.append(
                subprocess.Popen(
                    [binary, "-c", str(work / "knot.conf")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports[variant] = port
        for port in ports.values():
            _wait_for_soa(port)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_soa(port: int) -> None:
    deadline = time.monotonic() + 10
    query = dns.message.make_query("example.", "SOA")
    while True:
        try:
            reply = dns.query.tcp(query, "127.0.0.1", port=port, timeout=0.5)
            if reply.answer:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"knotd on port {port} did not serve the zone in time")
        time.sleep(0.05)


@pytest.mark.interop
@pytest.mark.parametrize("variant", list(VARIANT_FILES))
def test_answers_match_knotd(
    zones: dict[str, Snapshot], knotd: dict[str, int], variant: str
) -> None:
    """Rcode, AA, answer and authority (in order) and additional (as a set) equal knotd's."""
    snap = zones[variant]
    queries = [
        tuple(item.replace("L60", L60).split())
        for line in DIFF_QUERIES.strip().splitlines()
        for item in line.split("|")
    ]
    differences: list[str] = []
    for name, qtype in queries:
        for do in (False, True):
            message = dns.message.make_query(name, qtype, want_dnssec=do, payload=1232)
            message.flags &= ~dns.flags.RD
            theirs = dns.query.tcp(message, "127.0.0.1", port=knotd[variant], timeout=2)
            ours = q(snap, name, qtype, do)
            got = (
                ours.rcode,
                ours.aa,
                section_view(ours_as_rrsets(ours.answer)),
                section_view(ours_as_rrsets(ours.authority)),
                set(section_view(ours_as_rrsets(ours.additional))),
            )
            want = (
                theirs.rcode(),
                bool(theirs.flags & dns.flags.AA),
                section_view(theirs.answer),
                section_view(theirs.authority),
                set(section_view(theirs.additional)),
            )
            if got != want:
                differences.append(f"{name} {qtype} DO={int(do)}:\n  knotd {want}\n  ours  {got}")
    assert not differences, "\n".join(differences)


def test_nsec3_optout_nxdomain_below_unproven_ent(zones: dict[str, Snapshot]) -> None:
    snap = zones["optout"]
    # ent3 exists (an ENT above an insecure delegation) but has no NSEC3 under opt-out:
    # the proof falls back to the apex, and denies the wildcard there.
    r = q(snap, "zz.ent3.example.", "A", do=True)
    assert r.rcode == NXDOMAIN
    proof = r.authority[1:]
    assert matches(proof[0], dnspython_hash(snap, "example."))
    assert covers(proof[1], dnspython_hash(snap, "ent3.example."))
    assert covers(proof[2], dnspython_hash(snap, "*.example."))
