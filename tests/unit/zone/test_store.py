"""The zone store: full copies, the journal, compaction, timers, damage (authd/zone/store.py).

Run as a script to measure save/load times of synthetic zones:
    .venv/bin/python tests/unit/zone/test_store.py 100000 1000000
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

if __name__ == "__main__":  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from authd.zone import journal, names, store
from authd.zone.snapshot import NSEC3, NSEC3PARAM, SOA, Record, Snapshot, SnapshotBuilder
from authd.zone.store import (
    LoadedZone,
    Store,
    StoreError,
    Unusable,
    VersionMeta,
    encode_full,
    zone_dir_name,
    zone_from_dir_name,
)

ORIGIN = names.key_from_text("example.test.")
A, NS, TXT = 1, 2, 16
AXFR = VersionMeta("AXFR", 1700000000.0, "192.0.2.1@53")


def ixfr_meta(serial: int) -> VersionMeta:
    return VersionMeta("IXFR", 1700000000.0 + serial, "192.0.2.2@53")


def soa(serial: int, origin: bytes = ORIGIN) -> bytes:
    return (
        b"\x03ns1"
        + origin
        + b"\x0ahostmaster"
        + origin
        + struct.pack(">IIIII", serial, 3600, 600, 86400, 300)
    )


def host(i: int, origin: bytes = ORIGIN) -> bytes:
    label = f"h{i}".encode()
    return bytes([len(label)]) + label + origin


def build_zone(serial: int = 1, hosts: int = 50, origin: bytes = ORIGIN) -> Snapshot:
    builder = SnapshotBuilder(origin)
    builder.add(origin, SOA, 3600, soa(serial, origin))
    builder.add(origin, NS, 3600, b"\x03ns1" + origin)
    builder.add(b"\x03sub\x01a" + origin, NS, 3600, b"\x02ns" + origin)  # a cut under an ENT
    for i in range(hosts):
        builder.add(host(i, origin), A, 300, struct.pack(">I", i))
    return builder.build()


def step(snapshot: Snapshot, i: int) -> tuple[list[Record], list[Record], Snapshot]:
    """One IXFR step: new SOA serial, host i's address changed, a TXT added."""
    serial = snapshot.serial
    deleted: list[Record] = [(ORIGIN, SOA, 3600, soa(serial))]
    added: list[Record] = [(ORIGIN, SOA, 3600, soa(serial + 1))]
    node = snapshot.node(host(i))
    assert node is not None
    deleted.append((host(i), A, 300, node[A][1][0]))
    added.append((host(i), A, 300, struct.pack(">I", 1_000_000 + serial)))
    added.append((b"\x03txt" + ORIGIN, TXT, 60, b"\x05s" + str(serial).zfill(4).encode()))
    return deleted, added, snapshot.apply_diff(deleted, added)


def same_zone(a: Snapshot, b: Snapshot) -> None:
    assert list(a.records()) == list(b.records())
    assert (a.order, a.ents, a.cuts, a.dnames) == (b.order, b.ents, b.cuts, b.dnames)
    assert (a.nsec3_hashes, a.nsec3_owners, a.record_count) == (
        b.nsec3_hashes,
        b.nsec3_owners,
        b.record_count,
    )


def loaded(result: LoadedZone | Unusable | None) -> LoadedZone:
    assert isinstance(result, LoadedZone), result
    return result


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def opened(state_dir: Path) -> Iterator[Store]:
    with Store(state_dir) as s:
        yield s


def reopen(state_dir: Path, **kwargs: float) -> Store:
    return Store(state_dir, **kwargs)  # type: ignore[arg-type]


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com.", "example.com.zstate"),
        ("Ex-Ample.COM.", "ex-ample.com.zstate"),
        (".", "_root.zstate"),
        ("a\\.b.c.", "a_2eb.c.zstate"),
        ("_tcp.x.", "_5ftcp.x.zstate"),
        ("a/\\.\\./b.", "a_2f_2e_2e_2fb.zstate"),
    ],
)
def test_zone_dir_names_are_escaped_and_reversible(text: str, expected: str) -> None:
    origin = names.key_from_text(text)
    assert zone_dir_name(origin) == expected
    assert zone_from_dir_name(expected) == origin


def test_over_long_zone_names_stay_short_and_distinct() -> None:
    first = names.key_from_text(".".join(["\\000" * 60] * 4) + ".")
    second = names.key_from_text(".".join(["\\001" * 60] * 4) + ".")
    a, b = zone_dir_name(first), zone_dir_name(second)
    assert len(a) < 255 and len(b) < 255 and a != b
    assert zone_from_dir_name(a) is None  # the origin is read from the full copy instead


# -- full copies -----------------------------------------------------------------------


def test_full_copy_round_trip_keeps_records_indexes_and_meta(state_dir: Path) -> None:
    snapshot = build_zone(7)
    with Store(state_dir) as s:
        s.save_full(snapshot, AXFR)
    with Store(state_dir) as s:
        result = loaded(s.try_load(ORIGIN))
    same_zone(result.snapshot, snapshot)
    assert result.meta == AXFR
    assert (result.base_serial, result.journal_entries, result.warnings) == (7, 0, ())
    assert s.stored_zones() == [ORIGIN]


def test_full_copy_keeps_the_nsec3_index(opened: Store) -> None:
    builder = SnapshotBuilder(ORIGIN)
    builder.add(ORIGIN, SOA, 3600, soa(1))
    builder.add(ORIGIN, NSEC3PARAM, 0, b"\x01\x00\x00\x00\x00")
    for label in (b"0p9mhaveqvm6t7vbl5lop2u3t2rp3tom", b"35mthgpgcu1qg68fab165klnsnk3dpvl"):
        next_hash = bytes(20)
        builder.add(
            bytes([32]) + label + ORIGIN, NSEC3, 300, b"\x01\x00\x00\x00\x00\x14" + next_hash
        )
    snapshot = builder.build()
    assert len(snapshot.nsec3_hashes) == 2
    opened.save_full(snapshot, AXFR)
    same_zone(loaded(opened.try_load(ORIGIN)).snapshot, snapshot)


def test_nothing_stored_loads_as_none(opened: Store) -> None:
    assert opened.try_load(ORIGIN) is None
    assert opened.load(ORIGIN) is None


def test_a_new_full_copy_replaces_the_old_one_and_its_journal(state_dir: Path) -> None:
    with Store(state_dir) as s:
        first = build_zone(1)
        s.save_full(first, AXFR)
        deleted, added, _ = step(first, 3)
        s.append_diff(ORIGIN, 1, 2, deleted, added, ixfr_meta(2))
        s.save_full(build_zone(100, hosts=3), AXFR)
        assert not (s.zone_dir(ORIGIN) / store.JOURNAL_NAME).exists()
    with Store(state_dir) as s:
        result = loaded(s.try_load(ORIGIN))
    assert result.snapshot.serial == 100 and len(result.snapshot) == 5
    assert result.warnings == ()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "payload checksum mismatch"),
        (lambda d: d[:9] + b"\xff" + d[10:], "header checksum mismatch"),
        (lambda d: b"garbage!" + d[8:], "bad magic"),
        (lambda d: b"", "header truncated"),
    ],
)
def test_a_damaged_full_copy_is_ignored_with_its_reason(
    state_dir: Path, damage: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(state_dir) as s:
        s.save_full(build_zone(5), AXFR)
        path = s.zone_dir(ORIGIN) / store.FULL_NAME
    assert callable(damage)
    path.write_bytes(damage(path.read_bytes()))
    with Store(state_dir) as s:
        result = s.try_load(ORIGIN)
        assert isinstance(result, Unusable)
        assert reason in result.reason and result.path == str(path)
        assert s.load(ORIGIN) is None
        assert reason in caplog.text
        # A fresh transfer stores a good copy again.
        s.save_full(build_zone(6), AXFR)
        assert loaded(s.try_load(ORIGIN)).snapshot.serial == 6


def test_a_full_copy_of_another_zone_is_refused(state_dir: Path) -> None:
    other = names.key_from_text("other.test.")
    with Store(state_dir) as s:
        s.save_full(build_zone(1, origin=other), AXFR)
        src = s.zone_dir(other) / store.FULL_NAME
        s.zone_dir(ORIGIN).mkdir()
        shutil.copy(src, s.zone_dir(ORIGIN) / store.FULL_NAME)
        result = s.try_load(ORIGIN)
    assert isinstance(result, Unusable) and "other.test" in result.reason


# -- journal ---------------------------------------------------------------------------


def test_journal_of_several_diffs_replays_to_the_latest_version(state_dir: Path) -> None:
    current = build_zone(1)
    with Store(state_dir) as s:
        s.save_full(current, AXFR)
        for i in range(12):
            deleted, added, current = step(current, i % 5)
            result = s.append_diff(
                ORIGIN, current.serial - 1, current.serial, deleted, added, ixfr_meta(i)
            )
            assert not result.compacted and result.journal_entries == i + 1
        full_size = (s.zone_dir(ORIGIN) / store.FULL_NAME).stat().st_size
    with Store(state_dir) as s:
        result_zone = loaded(s.try_load(ORIGIN))
        assert (s.zone_dir(ORIGIN) / store.FULL_NAME).stat().st_size == full_size
    same_zone(result_zone.snapshot, current)
    assert result_zone.meta == ixfr_meta(11)
    assert (result_zone.base_serial, result_zone.journal_entries) == (1, 12)


def test_appends_continue_after_a_restart(state_dir: Path) -> None:
    current = build_zone(1)
    with Store(state_dir) as s:
        s.save_full(current, AXFR)
        deleted, added, current = step(current, 1)
        s.append_diff(ORIGIN, 1, 2, deleted, added, ixfr_meta(2))
    with Store(state_dir) as s:  # no load(): the store reads the journal state itself
        deleted, added, current = step(current, 2)
        s.append_diff(ORIGIN, 2, 3, deleted, added, ixfr_meta(3))
    with Store(state_dir) as s:
        same_zone(loaded(s.try_load(ORIGIN)).snapshot, current)


def test_a_diff_that_does_not_start_at_the_stored_serial_is_refused(opened: Store) -> None:
    current = build_zone(1)
    opened.save_full(current, AXFR)
    deleted, added, _ = step(current, 1)
    with pytest.raises(StoreError, match="serial 1, the diff starts at 7"):
        opened.append_diff(ORIGIN, 7, 8, deleted, added, ixfr_meta(8))
    with pytest.raises(StoreError, match="no full copy"):
        opened.append_diff(names.key_from_text("nothing.test."), 1, 2, [], [], ixfr_meta(2))


def test_compaction_writes_a_new_full_copy_and_empties_the_journal(state_dir: Path) -> None:
    current = build_zone(1)
    compactions = 0
    with Store(state_dir, compact_max_entries=4) as s:
        s.save_full(current, AXFR)
        for i in range(10):
            deleted, added, current = step(current, i)
            result = s.append_diff(
                ORIGIN,
                current.serial - 1,
                current.serial,
                deleted,
                added,
                ixfr_meta(i),
                snapshot=current,
            )
            compactions += result.compacted
            journal_path = s.zone_dir(ORIGIN) / store.JOURNAL_NAME
            assert result.compacted != journal_path.exists()
    assert compactions == 2  # the 4th and 8th diffs hit the limit
    with Store(state_dir) as s:
        result_zone = loaded(s.try_load(ORIGIN))
    same_zone(result_zone.snapshot, current)
    assert (result_zone.base_serial, result_zone.journal_entries) == (9, 2)
    assert result_zone.meta == ixfr_meta(9)


def test_compaction_by_size_relative_to_the_full_copy(state_dir: Path) -> None:
    current = build_zone(1, hosts=10)
    with Store(state_dir, compact_min_bytes=0, compact_ratio=1.0) as s:
        full = s.save_full(current, AXFR)
        compacted_at = None
        for i in range(40):
            deleted, added, current = step(current, i % 10)
            if s.append_diff(
                ORIGIN,
                current.serial - 1,
                current.serial,
                deleted,
                added,
                ixfr_meta(i),
                snapshot=current,
            ).compacted:
                compacted_at = i
                break
    entry_size = len(journal.encode_entry(1, 2, deleted, added, ixfr_meta(i)))
    assert compacted_at is not None
    # Compacted on the first append that would take the journal past the full copy's size.
    assert (compacted_at + 1) * entry_size > full - 2 * entry_size


def test_interrupted_compaction_leaves_a_stale_journal_that_is_skipped(state_dir: Path) -> None:
    current = build_zone(1)
    with Store(state_dir) as s:
        s.save_full(current, AXFR)
        for i in range(3):
            deleted, added, current = step(current, i)
            s.append_diff(ORIGIN, current.serial - 1, current.serial, deleted, added, ixfr_meta(i))
        journal_path = s.zone_dir(ORIGIN) / store.JOURNAL_NAME
        old_journal = journal_path.read_bytes()
        s.compact(current, ixfr_meta(2))
    # As if the crash came after the new full copy's rename, before the journal's unlink.
    journal_path.write_bytes(old_journal)
    with Store(state_dir) as s:
        result = loaded(s.try_load(ORIGIN))
        same_zone(result.snapshot, current)
        assert result.journal_entries == 0
        assert any("stale" in w for w in result.warnings)
        assert not journal_path.exists()
        deleted, added, current = step(current, 4)
        s.append_diff(ORIGIN, 4, 5, deleted, added, ixfr_meta(5))
    with Store(state_dir) as s:
        same_zone(loaded(s.try_load(ORIGIN)).snapshot, current)


def three_appends(state_dir: Path) -> tuple[list[Snapshot], Path]:
    versions = [build_zone(1)]
    with Store(state_dir) as s:
        s.save_full(versions[0], AXFR)
        for i in range(3):
            deleted, added, new = step(versions[-1], i)
            s.append_diff(ORIGIN, new.serial - 1, new.serial, deleted, added, ixfr_meta(i))
            versions.append(new)
        return versions, s.zone_dir(ORIGIN) / store.JOURNAL_NAME


def test_torn_tail_is_cut_at_load_and_appends_go_after_the_good_part(state_dir: Path) -> None:
    versions, journal_path = three_appends(state_dir)
    data = journal_path.read_bytes()
    journal_path.write_bytes(data[:-7])
    with Store(state_dir) as s:
        result = loaded(s.try_load(ORIGIN))
        same_zone(result.snapshot, versions[2])
        assert any("torn" in w for w in result.warnings)
        entries = journal.scan(data).entries
        assert journal_path.stat().st_size == entries[-1].offset
        deleted, added, new = step(versions[2], 4)
        s.append_diff(ORIGIN, 3, 4, deleted, added, ixfr_meta(4))
    with Store(state_dir) as s:
        result = loaded(s.try_load(ORIGIN))
    same_zone(result.snapshot, new)
    assert result.warnings == ()


def test_corruption_in_the_middle_loads_what_precedes_and_says_so(state_dir: Path) -> None:
    versions, journal_path = three_appends(state_dir)
    data = bytearray(journal_path.read_bytes())
    second = journal.scan(bytes(data)).entries[1]
    data[second.offset + 30] ^= 0x10
    journal_path.write_bytes(bytes(data))
    with Store(state_dir) as s:
        result = loaded(s.try_load(ORIGIN))
    same_zone(result.snapshot, versions[1])
    assert result.journal_entries == 1
    assert any("entry 2" in w and "checksum" in w and "unusable" in w for w in result.warnings)


def test_damaged_journal_header_falls_back_to_the_full_copy(state_dir: Path) -> None:
    versions, journal_path = three_appends(state_dir)
    data = bytearray(journal_path.read_bytes())
    data[3] ^= 0xFF
    journal_path.write_bytes(bytes(data))
    with Store(state_dir) as s:
        result = loaded(s.try_load(ORIGIN))
        same_zone(result.snapshot, versions[0])
        assert any("bad magic" in w for w in result.warnings)
        deleted, added, new = step(versions[0], 9)
        s.append_diff(ORIGIN, 1, 2, deleted, added, ixfr_meta(2))  # replaces the bad journal
    with Store(state_dir) as s:
        same_zone(loaded(s.try_load(ORIGIN)).snapshot, new)


# -- disk full (injected; tests/fault has the real tmpfs version) --------------------------


def fail_after(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's writes hit ENOSPC past `limit` bytes in flight; a failed write's
    bytes count as freed again (the store removes or cuts what it wrote)."""
    real = store._write_all
    budget = [limit]

    def write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
        if len(data) > budget[0]:
            real(fd, memoryview(data)[: budget[0]], offset)
            budget[0] = limit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(data)
        real(fd, data, offset)

    monkeypatch.setattr(store, "_write_all", write_all)


def test_disk_full_during_a_full_copy_keeps_the_old_copy(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = build_zone(1)
    with Store(state_dir) as s:
        s.save_full(old, AXFR)
        fail_after(100, monkeypatch)
        with pytest.raises(StoreError) as caught:
            s.save_full(build_zone(2, hosts=500), AXFR)
        assert caught.value.disk_full and "ENOSPC" in str(caught.value)
        assert "unchanged" in str(caught.value)
        assert not list(s.zone_dir(ORIGIN).glob("*" + store.TEMP_SUFFIX))
        same_zone(loaded(s.try_load(ORIGIN)).snapshot, old)
        monkeypatch.undo()
        s.save_full(build_zone(2, hosts=500), AXFR)
        assert loaded(s.try_load(ORIGIN)).snapshot.serial == 2


def test_disk_full_during_an_append_keeps_the_journal_at_the_previous_version(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = build_zone(1)
    with Store(state_dir) as s:
        s.save_full(current, AXFR)
        deleted, added, current = step(current, 1)
        s.append_diff(ORIGIN, 1, 2, deleted, added, ixfr_meta(2))
        size = (s.zone_dir(ORIGIN) / store.JOURNAL_NAME).stat().st_size
        deleted, added, failed = step(current, 2)
        fail_after(10, monkeypatch)
        with pytest.raises(StoreError) as caught:
            s.append_diff(ORIGIN, 2, 3, deleted, added, ixfr_meta(3))
        assert caught.value.disk_full
        assert (s.zone_dir(ORIGIN) / store.JOURNAL_NAME).stat().st_size == size
        monkeypatch.undo()
        s.append_diff(ORIGIN, 2, 3, deleted, added, ixfr_meta(3))
    with Store(state_dir) as s:
        result = loaded(s.try_load(ORIGIN))
    same_zone(result.snapshot, failed)
    assert result.warnings == ()


def test_failed_compaction_journals_the_diff_instead(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = build_zone(1, hosts=300)
    with Store(state_dir, compact_max_entries=1) as s:
        s.save_full(current, AXFR)
        deleted, added, current = step(current, 1)
        fail_after(2000, monkeypatch)  # enough for a journal entry, not a full copy
        result = s.append_diff(ORIGIN, 1, 2, deleted, added, ixfr_meta(2), snapshot=current)
    assert not result.compacted and result.warning is not None and "ENOSPC" in result.warning
    monkeypatch.undo()
    with Store(state_dir) as s:
        same_zone(loaded(s.try_load(ORIGIN)).snapshot, current)


# -- timers, temp files, lock -------------------------------------------------------------


def test_timers_round_trip_and_replace(opened: Store) -> None:
    timers: dict[str, int | float | str | None] = {
        "serial": 2024010101,
        "last_success": 1700000000.25,
        "expires_at": None,
        "last_error": "timeout from 192.0.2.1@53",
    }
    assert opened.load_timers(ORIGIN) is None
    opened.save_timers(ORIGIN, timers)
    assert opened.load_timers(ORIGIN) == timers
    opened.save_timers(ORIGIN, {**timers, "serial": 5})
    assert opened.load_timers(ORIGIN) == {**timers, "serial": 5}
    assert not list(opened.zone_dir(ORIGIN).glob("*" + store.TEMP_SUFFIX))


def test_timers_never_touch_the_zone_files(opened: Store) -> None:
    opened.save_full(build_zone(1), AXFR)
    full = opened.zone_dir(ORIGIN) / store.FULL_NAME
    before = full.stat().st_mtime_ns, full.stat().st_ino
    opened.save_timers(ORIGIN, {"serial": 1})
    assert (full.stat().st_mtime_ns, full.stat().st_ino) == before


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"format": 1, "zone": "example.test.", "timers": {"a": 1}, "crc32": 5}'],
)
def test_damaged_timers_are_ignored(
    opened: Store, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    opened.save_timers(ORIGIN, {"a": 1})
    (opened.zone_dir(ORIGIN) / store.TIMERS_NAME).write_bytes(content)
    assert opened.load_timers(ORIGIN) is None
    assert "timers ignored" in caplog.text


def test_unstorable_timer_values_are_refused(opened: Store) -> None:
    with pytest.raises(StoreError, match="finite"):
        opened.save_timers(ORIGIN, {"next": float("inf")})


def test_stale_temp_files_are_removed_at_open(state_dir: Path) -> None:
    with Store(state_dir) as s:
        s.save_full(build_zone(1), AXFR)
        zone_dir = s.zone_dir(ORIGIN)
    for name in (store.FULL_NAME, store.JOURNAL_NAME, store.TIMERS_NAME):
        (zone_dir / (name + store.TEMP_SUFFIX)).write_bytes(b"half written")
    (state_dir / "operator-file.zone.authd-tmp").write_bytes(b"not in a zone dir: kept")
    with Store(state_dir) as s:
        assert len(s.removed_temp_files) == 3
        assert not list(zone_dir.glob("*" + store.TEMP_SUFFIX))
        assert loaded(s.try_load(ORIGIN)).snapshot.serial == 1
    assert (state_dir / "operator-file.zone.authd-tmp").exists()


def test_one_process_owns_a_state_dir(state_dir: Path) -> None:
    with Store(state_dir), pytest.raises(StoreError, match="another process"):
        Store(state_dir)
    Store(state_dir).close()  # released on close


def test_a_reader_loads_but_never_writes_cuts_or_cleans(state_dir: Path) -> None:
    versions, journal_path = three_appends(state_dir)
    torn = journal_path.read_bytes()[:-5]  # as seen while the owner is mid-append
    journal_path.write_bytes(torn)
    temp = journal_path.with_name(store.FULL_NAME + store.TEMP_SUFFIX)
    temp.write_bytes(b"the owner is writing this")
    reader = Store(state_dir, lock=False)  # a serving worker, next to the owner
    assert temp.exists() and reader.removed_temp_files == []
    result = loaded(reader.try_load(ORIGIN))
    same_zone(result.snapshot, versions[2])
    assert journal_path.read_bytes() == torn
    with pytest.raises(StoreError, match="reader"):
        reader.save_full(versions[0], AXFR)
    with pytest.raises(StoreError, match="reader"):
        reader.save_timers(ORIGIN, {"serial": 1})
    with Store(state_dir) as owner:
        assert owner.removed_temp_files == [str(temp)]
        loaded(owner.try_load(ORIGIN))
        assert journal_path.read_bytes() != torn  # the owner cuts the torn tail


def test_remove_forgets_a_zone(opened: Store) -> None:
    opened.save_full(build_zone(1), AXFR)
    opened.save_timers(ORIGIN, {"serial": 1})
    opened.remove(ORIGIN)
    assert opened.try_load(ORIGIN) is None and opened.load_timers(ORIGIN) is None
    assert not opened.zone_dir(ORIGIN).exists()


# -- measurement (not a test) -----------------------------------------------------------


def synthetic_zone(records: int) -> Snapshot:
    """`records` records: an apex plus one A per owner, owners spread under 16 ENT-free labels."""
    origin = names.key_from_text("bench.test.")
    builder = SnapshotBuilder(origin)
    builder.add(origin, SOA, 3600, soa(1, origin))
    builder.add(origin, NS, 3600, b"\x03ns1" + origin)
    for i in range(records - 2):
        builder.add(host(i, origin), A, 300, struct.pack(">I", i))
    return builder.build()


def measure(records: int, directory: Path) -> None:
    started = time.perf_counter()
    snapshot = synthetic_zone(records)
    built = time.perf_counter() - started
    with Store(directory) as s:
        started = time.perf_counter()
        size = s.save_full(snapshot, AXFR)
        saved = time.perf_counter() - started
        started = time.perf_counter()
        encode_full(snapshot, AXFR, 1)
        encoded = time.perf_counter() - started
        origin = snapshot.origin
        appended = 0.0
        for i in range(100):
            serial = snapshot.serial + i
            deleted = [(origin, SOA, 3600, soa(serial, origin))]
            added = [(origin, SOA, 3600, soa(serial + 1, origin))]
            added.append((host(i, origin), A, 300, struct.pack(">I", 7)))
            started = time.perf_counter()
            s.append_diff(origin, serial, serial + 1, deleted, added, ixfr_meta(serial))
            appended += (time.perf_counter() - started) / 100
    del snapshot
    with Store(directory) as s:
        started = time.perf_counter()
        result = loaded(s.try_load(origin))
        load_time = time.perf_counter() - started
    print(
        f"{records} records: build {built:.2f} s, save_full {saved:.3f} s ({size / 1e6:.1f} MB; "
        f"encoding alone {encoded:.3f} s), "
        f"append_diff {appended * 1000:.2f} ms each, "
        f"load (full + 100-diff journal) {load_time:.3f} s -> serial {result.snapshot.serial}"
    )


if __name__ == "__main__":
    import tempfile

    for count in [int(arg) for arg in sys.argv[1:]] or [100_000]:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
            measure(count, Path(tmp))
