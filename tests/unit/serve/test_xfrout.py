"""Tests of serve/xfrout.py: AXFR and IXFR answers decode (dnspython) to exactly the version."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from authd.serve import xfrout
from authd.zone.snapshot import Record
from tests.support.outbound import (
    ORIGIN,
    QKEY,
    QUESTION_AXFR,
    as_records,
    build,
    decode,
    rec,
    soa,
    zone,
)


def test_axfr_is_soa_every_record_soa_over_several_messages() -> None:
    snapshot = zone(hosts=400)
    messages = xfrout.axfr(snapshot, 4242, 0, QUESTION_AXFR, QKEY, budget=2000)
    assert len(messages) > 5 and all(len(m) <= 2000 for m in messages)
    records = decode(messages)
    assert records[0][1] == records[-1][1] == 6
    assert records[0] == records[-1]
    assert sorted(records[1:-1]) == sorted(r for r in as_records(snapshot) if r[1] != 6)


def test_an_rrset_larger_than_a_message_is_split_between_records() -> None:
    snapshot = zone(hosts=2, big_txt=120)  # ~7 KiB of TXT at one owner
    messages = xfrout.axfr(snapshot, 4242, 0, QUESTION_AXFR, QKEY, budget=1500)
    assert all(len(m) <= 1500 for m in messages)
    records = decode(messages)
    assert sum(1 for r in records if r[1] == 16) == 120
    assert sorted(records[1:-1]) == sorted(r for r in as_records(snapshot) if r[1] != 6)


def test_ixfr_current_client_gets_one_soa() -> None:
    snapshot = zone(serial=7)
    records = decode(xfrout.ixfr(snapshot, [], 4242, 0, QUESTION_AXFR, QKEY))
    assert [r[1] for r in records] == [6]


def test_ixfr_sequence_applies_to_the_new_version() -> None:
    old = zone(serial=1, hosts=50)
    new = old.apply_diff(
        [soa(1), rec(f"h3.{ORIGIN}", "A", "198.51.100.3")],
        [
            soa(2),
            rec(f"h3.{ORIGIN}", "A", "203.0.113.3"),
            rec(f"new.{ORIGIN}", "AAAA", "2001:db8::1"),
        ],
    )
    deleted, added = xfrout.diff(old, new)
    step = xfrout.IxfrStep(old.soa_rdata, new.soa_rdata, deleted, added)
    records = decode(xfrout.ixfr(new, [step], 4242, 0, QUESTION_AXFR, QKEY, budget=600))
    serials = [
        dns.rdata.from_wire(dns.rdataclass.IN, 6, r[3], 0, len(r[3])).serial
        for r in records
        if r[1] == 6
    ]  # type: ignore[attr-defined]
    assert serials == [2, 1, 2, 2]  # newest, step from, step to, newest
    assert len(records) == 4 + len(deleted) + len(added) == 7


OWNERS = [f"n{i}.{ORIGIN}" for i in range(8)]
CHANGE = st.tuples(
    st.sampled_from(OWNERS),
    st.sampled_from(["A", "TXT"]),
    st.integers(0, 3),
    st.sampled_from([300, 600]),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(CHANGE, max_size=10), st.lists(CHANGE, max_size=10))
def test_diff_takes_the_old_version_to_the_new(
    before: list[tuple[str, str, int, int]], after: list[tuple[str, str, int, int]]
) -> None:
    def records(rows: list[tuple[str, str, int, int]], serial: int) -> list[Record]:
        ttls: dict[tuple[str, str], int] = {}
        out = [soa(serial), rec(ORIGIN, "NS", "ns1.example.com.")]
        for owner, rtype, value, ttl in rows:
            ttl = ttls.setdefault((owner, rtype), ttl)  # one TTL per RRset
            out.append(
                rec(owner, rtype, f"192.0.2.{value}" if rtype == "A" else f'"v{value}"', ttl)
            )
        return list(dict.fromkeys(out))

    old, new = build(records(before, 1)), build(records(after, 2))
    deleted, added = xfrout.diff(old, new)
    rebuilt = old.apply_diff([soa(1), *deleted], [soa(2), *added])
    assert sorted(rebuilt.records()) == sorted(new.records())


def test_a_record_larger_than_the_message_budget_gets_a_message_of_its_own() -> None:
    """Outbound messages are small (8 KiB), but a record may hold up to 64 KiB of RDATA."""
    strings = " ".join(['"' + "y" * 250 + '"'] * 60)  # ~15 KB of TXT RDATA in one record
    rows = [soa(1), rec(ORIGIN, "NS", "ns1.example.com."), rec(f"big.{ORIGIN}", "TXT", strings)]
    rows += [rec(f"h{i}.{ORIGIN}", "A", f"198.51.100.{i}") for i in range(20)]
    snapshot = build(rows)
    for budget in (200, 1000):
        messages = xfrout.axfr(snapshot, 4242, 0, QUESTION_AXFR, QKEY, budget=budget)
        assert max(len(m) for m in messages) > 15000
        records = decode(messages)
        assert sorted(records[1:-1]) == sorted(r for r in as_records(snapshot) if r[1] != 6)
