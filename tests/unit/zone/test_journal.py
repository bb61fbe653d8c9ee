"""The journal format and the folding of many diffs into one (authd/zone/journal.py)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authd.zone import journal, names
from authd.zone.journal import Fold, VersionMeta
from authd.zone.snapshot import RRSIG, SOA, Record, Snapshot, SnapshotBuilder, ZoneError

ORIGIN = names.key_from_text("example.test.")
META = VersionMeta("IXFR", 1700000000.5, "192.0.2.1@53")
A, TXT = 1, 16


def soa(serial: int) -> bytes:
    return (
        names.key_from_text("ns1.example.test.")
        + names.key_from_text("hostmaster.example.test.")
        + struct.pack(">IIIII", serial, 3600, 600, 86400, 300)
    )


def owner(label: str) -> bytes:
    return names.key_from_text(f"{label}.example.test.")


def zone(serial: int = 1, hosts: int = 5) -> Snapshot:
    builder = SnapshotBuilder(ORIGIN)
    builder.add(ORIGIN, SOA, 3600, soa(serial))
    builder.add(ORIGIN, 2, 3600, names.key_from_text("ns1.example.test."))
    for i in range(hosts):
        builder.add(owner(f"h{i}"), A, 300, bytes([192, 0, 2, i]))
    return builder.build()


def soa_step(old: int, new: int) -> tuple[list[Record], list[Record]]:
    return [(ORIGIN, SOA, 3600, soa(old))], [(ORIGIN, SOA, 3600, soa(new))]


def journal_bytes(
    generation: int, base: int, diffs: list[tuple[int, int, list[Record], list[Record]]]
) -> bytes:
    out = journal.encode_header(generation, base)
    for from_serial, to_serial, deleted, added in diffs:
        out += journal.encode_entry(from_serial, to_serial, deleted, added, META)
    return out


def three_diffs() -> list[tuple[int, int, list[Record], list[Record]]]:
    diffs = []
    for serial in (1, 2, 3):
        deleted, added = soa_step(serial, serial + 1)
        added.append((owner(f"new{serial}"), A, 60, bytes([10, 0, 0, serial])))
        diffs.append((serial, serial + 1, deleted, added))
    return diffs


# -- format ---------------------------------------------------------------------------


def test_scan_round_trip_finds_every_entry_and_decodes_it() -> None:
    data = journal_bytes(42, 1, three_diffs())
    scanned = journal.scan(data)
    assert scanned.header == journal.JournalHeader(42, 1)
    assert [(e.from_serial, e.to_serial) for e in scanned.entries] == [(1, 2), (2, 3), (3, 4)]
    assert scanned.valid_end == len(data)
    assert scanned.problem is None and scanned.torn_bytes == 0
    assert scanned.tip_serial == 4
    deleted, added, meta = journal.decode_entry(data, scanned.entries[1])
    assert deleted == ((ORIGIN, SOA, 3600, soa(2)),)
    assert added[1] == (owner("new2"), A, 60, bytes([10, 0, 0, 2]))
    assert meta == META


def test_empty_journal_has_its_base_serial_as_tip() -> None:
    scanned = journal.scan(journal.encode_header(7, 99))
    assert scanned.entries == () and scanned.tip_serial == 99 and scanned.problem is None


@pytest.mark.parametrize("cut", [1, 5, 19, 20, 21, 40])
def test_torn_tail_is_cut_at_the_last_complete_entry(cut: int) -> None:
    data = journal_bytes(1, 1, three_diffs())
    scanned_full = journal.scan(data)
    last = scanned_full.entries[-1]
    torn = data[: last.end - cut] if cut < last.end - last.offset else data[: last.offset + 1]
    scanned = journal.scan(torn)
    assert scanned.problem is None
    assert len(scanned.entries) == 2
    assert scanned.valid_end == last.offset
    assert scanned.torn_bytes == len(torn) - last.offset


def test_zero_filled_tail_after_a_crash_is_a_torn_tail() -> None:
    data = journal_bytes(1, 1, three_diffs())
    scanned = journal.scan(data + bytes(4096))
    assert scanned.problem is None and scanned.torn_bytes == 4096
    assert len(scanned.entries) == 3


def test_last_entry_with_bad_checksum_is_a_torn_tail() -> None:
    data = bytearray(journal_bytes(1, 1, three_diffs()))
    data[-3] ^= 0xFF
    scanned = journal.scan(bytes(data))
    assert scanned.problem is None
    assert len(scanned.entries) == 2 and scanned.torn_bytes > 0


def test_bad_checksum_in_the_middle_makes_the_rest_unusable() -> None:
    data = bytearray(journal_bytes(1, 1, three_diffs()))
    second = journal.scan(bytes(data)).entries[1]
    data[second.end - 2] ^= 0x01
    scanned = journal.scan(bytes(data))
    assert len(scanned.entries) == 1
    assert scanned.valid_end == second.offset
    assert scanned.problem is not None
    assert "entry 2" in scanned.problem and "checksum" in scanned.problem


def test_broken_serial_chain_stops_the_journal() -> None:
    diffs = three_diffs()
    diffs[2] = (9, 10, *diffs[2][2:])
    scanned = journal.scan(journal_bytes(1, 1, diffs))
    assert len(scanned.entries) == 2
    assert scanned.problem is not None and "chain broken" in scanned.problem


def test_damaged_header_makes_the_whole_journal_unusable() -> None:
    data = bytearray(journal_bytes(1, 1, three_diffs()))
    data[12] ^= 0x40
    scanned = journal.scan(bytes(data))
    assert scanned.header is None and scanned.entries == ()
    assert scanned.problem is not None and "header checksum" in scanned.problem


def test_meta_rejects_malformed_tuples() -> None:
    with pytest.raises(ValueError):
        VersionMeta.from_tuple(("AXFR", "yesterday", None))
    assert VersionMeta.from_tuple(("file", 3, None)) == VersionMeta("file", 3.0, None)


# -- fold ---------------------------------------------------------------------------


def test_fold_of_many_steps_equals_applying_them_in_turn() -> None:
    base = zone(1)
    sequential = base
    fold = Fold(base)
    for serial in range(1, 30):
        deleted, added = soa_step(serial, serial + 1)
        host = owner(f"h{serial % 5}")
        old = sequential.node(host)
        assert old is not None
        deleted.append((host, A, 300, old[A][1][0]))
        added.append((host, A, 300 + serial, bytes([198, 51, 100, serial])))
        added.append(
            (owner(f"x{serial % 3}"), TXT, 10, bytes([2]) + b"v" + bytes([48 + serial % 10]))
        )
        sequential = sequential.apply_diff(deleted, added)
        fold.apply(deleted, added, serial + 1)
    folded = base.apply_diff(*fold.net_diff())
    assert list(folded.records()) == list(sequential.records())
    assert folded.record_count == sequential.record_count
    assert folded.order == sequential.order and folded.ents == sequential.ents


def test_fold_rejects_a_diff_that_does_not_apply_and_keeps_earlier_ones() -> None:
    base = zone(1)
    fold = Fold(base)
    fold.apply(*soa_step(1, 2), 2)
    bad_deleted, bad_added = soa_step(2, 3)
    bad_deleted.append((owner("nosuch"), A, 300, bytes(4)))
    with pytest.raises(ValueError, match="absent"):
        fold.apply(bad_deleted, bad_added, 3)
    assert base.apply_diff(*fold.net_diff()).serial == 2


def test_fold_checks_the_serial_the_entry_claims() -> None:
    fold = Fold(zone(1))
    with pytest.raises(ValueError, match="leaves serial 2"):
        fold.apply(*soa_step(1, 2), 5)


def test_fold_rejects_owners_outside_the_zone() -> None:
    deleted, added = soa_step(1, 2)
    added.append((names.key_from_text("other.test."), A, 1, bytes(4)))
    with pytest.raises(ValueError, match="outside"):
        Fold(zone(1)).apply(deleted, added, 2)


# Random diffs over a small universe of records: the fold must agree with
# sequential application on every sequence that applies, and fail where it fails.
_UNIVERSE: list[Record] = [
    (owner(label), rtype, ttl, rdata)
    for label in ("a", "b.a", "c")
    for rtype, rdata in ((A, bytes([1, 1, 1, 1])), (A, bytes([2, 2, 2, 2])), (TXT, b"\x01t"))
    for ttl in (60, 120)
] + [(owner("a"), RRSIG, 60, struct.pack(">HBBI", A, 8, 3, 60) + bytes(20))]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(_UNIVERSE), max_size=3),
            st.lists(st.sampled_from(_UNIVERSE), max_size=4),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_fold_matches_sequential_apply_diff(steps: list[tuple[list[Record], list[Record]]]) -> None:
    base = zone(1, hosts=1)
    sequential = base
    fold = Fold(base)
    serial = 1
    for deleted, added in steps:
        full_deleted = [(ORIGIN, SOA, 3600, soa(serial)), *deleted]
        full_added = [(ORIGIN, SOA, 3600, soa(serial + 1)), *added]
        try:
            expected = sequential.apply_diff(full_deleted, full_added)
        except ZoneError:
            with pytest.raises(ValueError):
                fold.apply(full_deleted, full_added, serial + 1)
            continue
        fold.apply(full_deleted, full_added, serial + 1)
        sequential = expected
        serial += 1
    folded = base.apply_diff(*fold.net_diff())
    assert list(folded.records()) == list(sequential.records())
    assert folded.record_count == sequential.record_count
    assert (folded.ents, folded.cuts, folded.order) == (
        sequential.ents,
        sequential.cuts,
        sequential.order,
    )
