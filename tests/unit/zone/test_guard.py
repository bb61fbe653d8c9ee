"""Tests of zone/guard.py: each rule fires on its accident and stays quiet on ordinary edits."""

from __future__ import annotations

import dataclasses

import dns.rdata
import dns.rdataclass
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st

from authd.zone import guard, names
from authd.zone.guard import GuardPolicy
from authd.zone.snapshot import Record, Snapshot, SnapshotBuilder

ORIGIN = "example.com."
KSK = (
    "257 3 13 "
    "mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+Gq"
    "JxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ=="
)
KSK2 = (
    "257 3 13 "
    "oJMRESz5E4gYzS/q6XDrvU1qMPYIjCWzJaOau8XNEZeq"
    "CYKD5ar0IRd8KqXXFJkqmVfRvMGPmM1x8fGAa2XhSA=="
)
ZSK = (
    "256 3 13 "
    "OG9a0Hq2QjwzE7fMzDsjSBqLwZ6xDfXkjsJPQNDJY8e3"
    "CwaAB1DN8d4jgMmdW7yEuXbXyMsZbbG6lDqGbU4C0A=="
)


def wire(rtype: str, text: str) -> bytes:
    data = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text).to_wire()
    assert data is not None
    return data


def record(owner: str, rtype: str, text: str) -> Record:
    return (names.key_from_text(owner), dns.rdatatype.from_text(rtype), 300, wire(rtype, text))


def apex(
    serial: int = 1, ns: tuple[str, ...] = ("ns1.provider.net.", "ns.extra.org.")
) -> list[Record]:
    soa = f"ns1.provider.net. host.example.com. {serial} 7200 900 1209600 300"
    return [record(ORIGIN, "SOA", soa), *(record(ORIGIN, "NS", n) for n in ns)]


def hosts(count: int, start: int = 0) -> list[Record]:
    return [record(f"h{i}.{ORIGIN}", "A", f"192.0.2.{i % 250 + 1}") for i in range(start, count)]


def delegations(count: int) -> list[Record]:
    return [record(f"d{i}.{ORIGIN}", "NS", f"ns.d{i}.net.") for i in range(count)]


def build(records: list[Record]) -> Snapshot:
    builder = SnapshotBuilder(names.key_from_text(ORIGIN))
    builder.add_records(records)
    return builder.build()


OWN = frozenset({names.key_from_text("ns.extra.org.")})
POLICY = GuardPolicy()


def rules(old: Snapshot, new: Snapshot, policy: GuardPolicy = POLICY) -> list[str]:
    return [f.rule for f in guard.check(old, new, policy, own_ns=OWN).findings]


def test_an_ordinary_change_passes_and_is_counted() -> None:
    old = build(apex(1) + hosts(100))
    new = build(apex(2) + hosts(95) + hosts(103, 100))
    verdict = guard.check(old, new, POLICY, own_ns=OWN)
    assert not verdict.held
    # SOA rdata changed but the SOA RRset stays: RRsets are owner and type.
    assert verdict.summary == guard.ChangeSummary(102, 100, 5, 3, 0)
    assert "passed" in verdict.describe()


def test_a_pipeline_accident_removing_90_percent_is_held() -> None:
    old = build(apex(1) + hosts(100))
    new = build(apex(2) + hosts(10))
    verdict = guard.check(old, new, POLICY, own_ns=OWN)
    assert [f.rule for f in verdict.findings] == ["rrsets-removed"]
    assert "90 of 102 RRsets (88%)" in verdict.findings[0].detail
    assert verdict.describe().startswith("held by the change guard: rrsets-removed")


def test_the_share_rule_has_a_boundary_and_spares_small_zones() -> None:
    old = build(apex(1) + hosts(98))  # 100 RRsets
    assert rules(old, build(apex(2) + hosts(48))) == []  # exactly 50% removed: allowed
    assert rules(old, build(apex(2) + hosts(47))) == ["rrsets-removed"]
    small = build(apex(1) + hosts(18))  # 20 RRsets: not "over 20"
    assert rules(small, build(apex(2))) == []
    off = dataclasses.replace(POLICY, max_removed_share=None)
    assert rules(old, build(apex(2) + hosts(1)), off) == []


def test_apex_ns_replaced_entirely_or_losing_our_name() -> None:
    old = build(apex(1) + hosts(5))
    assert rules(old, build(apex(2, ("ns1.provider.net.",)) + hosts(5))) == ["own-ns-removed"]
    assert (
        rules(old, build(apex(2, ("ns1.provider.net.", "ns.extra.org.", "x.net.")) + hosts(5)))
        == []
    )
    hijack = build(apex(2, ("ns1.evil.example.", "ns2.evil.example.")) + hosts(5))
    assert rules(old, hijack) == ["ns-replaced", "own-ns-removed"]
    lenient = dataclasses.replace(POLICY, ns_replaced=False, own_ns_removed=False)
    assert rules(old, hijack, lenient) == []


def test_apex_dnskey_vanishing_is_held() -> None:
    old = build([*apex(1), record(ORIGIN, "DNSKEY", KSK)])
    assert rules(old, build(apex(2))) == ["apex-missing"]


def test_a_ksk_rollover_done_wrong_is_held_and_a_right_one_passes() -> None:
    old = build([*apex(1), record(ORIGIN, "DNSKEY", KSK), record(ORIGIN, "DNSKEY", ZSK)])
    wrong = build([*apex(2), record(ORIGIN, "DNSKEY", KSK2), record(ORIGIN, "DNSKEY", ZSK)])
    assert rules(old, wrong) == ["dnskey-replaced"]
    double = build(
        apex(2)
        + [record(ORIGIN, "DNSKEY", k) for k in (KSK, KSK2, ZSK)]  # new KSK published beside
    )
    assert rules(old, double) == []
    zsk_only = build([*apex(2), record(ORIGIN, "DNSKEY", KSK)])
    assert rules(old, zsk_only) == []
    revoked = KSK.replace("257", "385", 1)  # the same key with REVOKE set is still the key
    assert rules(old, build([*apex(2), record(ORIGIN, "DNSKEY", revoked)])) == []


def test_trust_anchor_keys_decide_which_keys_matter() -> None:
    old = build([*apex(1), record(ORIGIN, "DNSKEY", KSK), record(ORIGIN, "DNSKEY", ZSK)])
    new = build([*apex(2), record(ORIGIN, "DNSKEY", KSK2), record(ORIGIN, "DNSKEY", ZSK)])
    anchor = frozenset({wire("DNSKEY", ZSK)})  # the anchor names the 256 key: it remains
    assert guard.check(old, new, POLICY, anchor_keys=anchor).findings == ()


def test_many_delegations_disappearing_is_held() -> None:
    old = build(apex(1) + hosts(200) + delegations(40))
    assert rules(old, build(apex(2) + hosts(200) + delegations(15))) == []  # 25 removed
    assert rules(old, build(apex(2) + hosts(200) + delegations(14))) == ["delegations-removed"]


def test_a_disabled_guard_holds_nothing_but_still_counts() -> None:
    old = build(apex(1) + hosts(100))
    verdict = guard.check(old, build(apex(2)), dataclasses.replace(POLICY, enabled=False))
    assert not verdict.held and verdict.summary.rrsets_removed == 100


OWNERS = [f"h{i}.{ORIGIN}" for i in range(12)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(OWNERS), st.sampled_from(["A", "TXT"])), max_size=12),
    st.lists(
        st.tuples(st.sampled_from(OWNERS), st.sampled_from(["A", "TXT", "AAAA"])), max_size=12
    ),
)
def test_counting_only_the_touched_owners_equals_a_full_comparison(
    remove: list[tuple[str, str]], add: list[tuple[str, str]]
) -> None:
    base = apex(1) + [record(o, "A", "192.0.2.1") for o in OWNERS[:8]]
    base += [record(o, "TXT", '"t"') for o in OWNERS[4:10]]
    old = build(base)
    present = {(r[0], r[1]) for r in base}
    deleted = [
        r for r in base if (names.display(r[0]) + ".", dns.rdatatype.to_text(r[1])) in set(remove)
    ]
    texts = {"A": "192.0.2.9", "TXT": '"new"', "AAAA": "2001:db8::1"}
    added = [
        record(o, t, texts[t])
        for o, t in dict.fromkeys(add)
        if (names.key_from_text(o), dns.rdatatype.from_text(t)) not in present
        or (o, t) in set(remove)
    ]
    new = old.apply_diff(deleted, added)
    touched = {r[0] for r in deleted} | {r[0] for r in added}
    incremental = guard.summarize(old, new, touched=touched, rrsets_before=guard.count_rrsets(old))
    assert incremental == guard.summarize(old, new)
    assert incremental.rrsets_after == guard.count_rrsets(new)
