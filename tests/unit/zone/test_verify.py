"""The verify step: structure, limits, DNSSEC policy, incremental IXFR checks, the pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authd.zone import names
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import Snapshot, SnapshotBuilder
from authd.zone.store import encode_full
from authd.zone.verify import (
    LARGE_DIFF_OWNERS,
    LARGE_DIFF_SHARE,
    Limits,
    Policy,
    ValidationPool,
    needs_full_check,
    touched_owners,
    verify,
)
from tests.support.dnssec import NOW, sign_example_zone, snapshot_of

ORIGIN = names.key_from_text("example.test")
SOA = names.key_from_text("ns.example.test") + names.key_from_text("h.example.test") + bytes(20)


def small_zone(*extra: tuple[str, int, bytes]) -> Snapshot:
    builder = SnapshotBuilder(ORIGIN)
    builder.add(ORIGIN, 6, 300, SOA[:-20] + (5).to_bytes(4, "big") + bytes(16))
    builder.add(ORIGIN, 2, 300, names.key_from_text("ns.example.test"))
    builder.add(names.key_from_text("ns.example.test"), 1, 300, b"\xc0\x00\x02\x01")
    for owner, rtype, rdata in extra:
        builder.add(names.key_from_text(owner), rtype, 300, rdata)
    return builder.build()


def test_plain_zone_passes() -> None:
    verdict = verify(small_zone(), Policy(), NOW)
    assert verdict.ok and not verdict.signed


def test_structure_rejection_names_owner_and_rule() -> None:
    snap = small_zone(
        ("www.example.test", 5, names.key_from_text("ns.example.test")),
        ("www.example.test", 1, b"\x01\x02\x03\x04"),
    )
    verdict = verify(snap, Policy(), NOW)
    assert not verdict.ok
    assert verdict.check == "cname-other-data"
    assert "www.example.test/CNAME" in verdict.reason


@pytest.mark.parametrize(
    ("limits", "check"),
    [
        (Limits(max_records=2), "limit-records"),
        (Limits(max_rrset_records=2), "limit-rrset-records"),
        (Limits(max_types_per_name=1), "limit-types-per-name"),
        (Limits(max_bytes=50), "limit-bytes"),
    ],
)
def test_each_limit(limits: Limits, check: str) -> None:
    snap = small_zone(*[("txt.example.test", 16, bytes([1, 65 + i])) for i in range(3)])
    verdict = verify(snap, Policy(limits=limits), NOW)
    assert (verdict.ok, verdict.check) == (False, check)


def test_unsigned_version_of_signed_zone(tmp_path: Path) -> None:
    unsigned = small_zone()
    assert verify(unsigned, Policy(), NOW, was_signed=False).ok
    verdict = verify(unsigned, Policy(), NOW, was_signed=True)
    assert verdict.check == "unsigned" and "retransfer" in verdict.reason
    assert verify(unsigned, Policy(), NOW, was_signed=True, forced=True).ok
    assert verify(unsigned, Policy(dnssec="required"), NOW).check == "unsigned"
    assert verify(unsigned, Policy(dnssec="off"), NOW, was_signed=True).ok


def test_zonemd_required_even_with_dnssec_off() -> None:
    verdict = verify(small_zone(), Policy(dnssec="off", zonemd="required"), NOW)
    assert verdict.check == "zonemd-missing"


def _signed_snapshot(tmp_path: Path) -> Snapshot:
    import dns.zone

    path, _, _ = sign_example_zone(tmp_path, "ECDSAP256SHA256")
    return snapshot_of(dns.zone.from_file(str(path), origin="example.test.", relativize=False))


def test_incremental_check_sees_only_touched_owners(tmp_path: Path) -> None:
    snap = _signed_snapshot(tmp_path)
    assert verify(snap, Policy(), NOW).ok
    web = names.key_from_text("web.example.test")
    a_rdata = snap.node(web)[1][1][0]  # type: ignore[index]
    changed = snap.apply_diff([(web, 1, 3600, a_rdata)], [(web, 1, 3600, b"\xc0\x00\x02\x63")])
    touched = touched_owners([([(web, 1, 3600, a_rdata)], [(web, 1, 3600, b"\xc0\x00\x02\x63")])])
    assert touched == [web]
    verdict = verify(changed, Policy(), NOW, touched=touched)
    assert (verdict.ok, verdict.check) == (False, "rrsig-invalid")
    # A change elsewhere is not seen by an incremental check of an untouched owner...
    mail = names.key_from_text("mail.example.test")
    assert verify(changed, Policy(), NOW, touched=[mail]).ok
    # ...but a full check finds it.
    assert verify(changed, Policy(), NOW).check == "rrsig-invalid"


async def test_pool_verifies_a_candidate_file(tmp_path: Path) -> None:
    snap = _signed_snapshot(tmp_path)
    header, payload = encode_full(snap, VersionMeta("AXFR", NOW, "192.0.2.1@53"), 1)
    path = tmp_path / "candidate"
    path.write_bytes(header + payload)
    pool = ValidationPool(processes=1, nice=5)
    try:
        verdict = await pool.verify_file(path, ORIGIN, Policy(), NOW, False, False)
        assert verdict.ok and verdict.signed and verdict.rrsets_checked > 10
        bad = Policy(dnssec="auto", limits=Limits(max_records=3))
        verdict = await pool.verify_file(path, ORIGIN, bad, NOW, False, False)
        assert verdict.check == "limit-records"
    finally:
        pool.close()


# -- the one-pass structure and limits walk agrees with the rules applied one by one -----

_OWNERS = (
    "example.test",
    "a.example.test",
    "b.a.example.test",
    "c.example.test",
    "ns.c.example.test",
)
_RDATA = {
    1: [b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"],
    28: [bytes(16)],
    5: [names.key_from_text("a.example.test"), names.key_from_text("c.example.test")],
    39: [names.key_from_text("other.test")],
    2: [names.key_from_text("ns.c.example.test"), names.key_from_text("ns.example.test")],
    16: [b"\x03abc", b"\x03def"],
    6: [SOA[:-20] + (7).to_bytes(4, "big") + bytes(16)],
}


def _reference_verdict(snapshot: Snapshot, limits: Limits) -> tuple[str, str] | None:
    """The rejection the checks give when run separately: structure first, then limits."""
    from authd.zone.checks import check_structure, rejections
    from authd.zone.verify import check_limits

    rejected = rejections(check_structure(snapshot))
    if rejected:
        return rejected[0].rule, rejected[0].message
    over = check_limits(snapshot, snapshot.owners(), limits)
    return None if over is None else (over.check, over.reason)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.sampled_from(_OWNERS), st.sampled_from(sorted(_RDATA)), st.integers(0, 1)),
        max_size=12,
    ),
    max_rrset=st.integers(1, 3),
    max_types=st.integers(1, 4),
    max_bytes=st.sampled_from([60, 200, 2**30]),
    max_records=st.sampled_from([4, 10, 10_000]),
)
def test_one_pass_agrees_with_separate_checks(
    records: list[tuple[str, int, int]],
    max_rrset: int,
    max_types: int,
    max_bytes: int,
    max_records: int,
) -> None:
    # A second apex SOA cannot even be built; an SOA below the apex can.
    kept = [(o, t, i) for o, t, i in records if not (t == 6 and o == "example.test")]
    snapshot = small_zone(*((o, t, _RDATA[t][i % len(_RDATA[t])]) for o, t, i in kept))
    limits = Limits(max_records, max_bytes, max_rrset, max_types)
    verdict = verify(snapshot, Policy(dnssec="off", zonemd="off", limits=limits), NOW)
    expected = _reference_verdict(snapshot, limits)
    assert (None if verdict.ok else (verdict.check, verdict.reason)) == expected


def test_a_diff_touching_much_of_the_zone_is_verified_whole() -> None:
    owners = LARGE_DIFF_OWNERS * LARGE_DIFF_SHARE * 2
    zone = small_zone(*((f"h{i}.example.test", 1, b"\xc0\x00\x02\x01") for i in range(owners)))
    keys = [names.key_from_text(f"h{i}.example.test") for i in range(owners)]
    share = len(zone) // LARGE_DIFF_SHARE
    assert not needs_full_check(zone, keys[:share], previous=zone)
    assert needs_full_check(zone, keys[: share + 1], previous=zone)
    # a small zone: up to LARGE_DIFF_OWNERS owners stay incremental whatever the share
    small = small_zone(*((f"h{i}.example.test", 1, b"\xc0\x00\x02\x01") for i in range(10)))
    assert not needs_full_check(small, [names.key_from_text("h1.example.test")] * 10, small)
