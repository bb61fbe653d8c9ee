"""Version history (issue 14): retired store segments, rebuilding old versions, the history
index, the recorder's ledger hook, the digest against dnspython, diff lines, and export."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path

import dns.rdatatype
import dns.zone
import dns.zonetypes
import pytest

from authd.export import Exporter, export_text, export_zone
from authd.recorder import VersionRecorder
from authd.versions import VersionsError, ZoneVersions, parse_serial
from authd.zone import ledger, names
from authd.zone.history import (
    HistoryIndex,
    VersionRecord,
    diff_lines,
    digest_hex,
    find,
    source_of,
)
from authd.zone.loader import load_zone_file
from authd.zone.snapshot import SOA, Record, Snapshot, SnapshotBuilder
from authd.zone.store import HISTORY_DIR, Store, VersionMeta

ORIGIN = names.key_from_text("example.test.")
A, NS, TXT = 1, 2, 16
ZONES = Path(__file__).parents[1] / "zones"


def soa(serial: int) -> bytes:
    return (
        b"\x03ns1"
        + ORIGIN
        + b"\x0ahostmaster"
        + ORIGIN
        + struct.pack(">IIIII", serial, 3600, 600, 86400, 300)
    )


def host(i: int) -> bytes:
    label = f"h{i}".encode()
    return bytes([len(label)]) + label + ORIGIN


def build_zone(serial: int = 1, hosts: int = 20) -> Snapshot:
    builder = SnapshotBuilder(ORIGIN)
    builder.add(ORIGIN, SOA, 3600, soa(serial))
    builder.add(ORIGIN, NS, 3600, b"\x03ns1" + ORIGIN)
    for i in range(hosts):
        builder.add(host(i), A, 300, struct.pack(">I", i))
    return builder.build()


def step(snapshot: Snapshot) -> tuple[list[Record], list[Record], Snapshot]:
    """One IXFR step: next serial, host (serial % 20) gets a new address."""
    serial = snapshot.serial
    i = serial % 20
    node = snapshot.node(host(i))
    assert node is not None
    deleted: list[Record] = [(ORIGIN, SOA, 3600, soa(serial)), (host(i), A, 300, node[A][1][0])]
    added: list[Record] = [
        (ORIGIN, SOA, 3600, soa(serial + 1)),
        (host(i), A, 300, struct.pack(">I", 1_000_000 + serial)),
    ]
    return deleted, added, snapshot.apply_diff(deleted, added)


def meta(serial: int, transfer: str = "IXFR") -> VersionMeta:
    return VersionMeta(transfer, 1_765_000_000.0 + serial, "192.0.2.53@53")


def records(snapshot: Snapshot) -> list[Record]:
    return sorted(snapshot.records())


def ixfr_chain(store: Store, count: int) -> list[Snapshot]:
    """serial 1 by AXFR, then serials 2..count by IXFR (compacting as the store decides)."""
    versions = [build_zone(1)]
    store.save_full(versions[0], meta(1, "AXFR"))
    for _ in range(count - 1):
        deleted, added, new = step(versions[-1])
        store.append_diff(
            ORIGIN, versions[-1].serial, new.serial, deleted, added, meta(new.serial), snapshot=new
        )
        versions.append(new)
    return versions


# -- the store: retired segments and load_version ------------------------------------------


def test_every_version_of_the_journal_and_of_retired_segments_rebuilds(tmp_path: Path) -> None:
    with Store(tmp_path, compact_max_entries=3) as store:
        versions = ixfr_chain(store, 10)
        # an AXFR replaces the copy: what came before is still rebuildable
        axfr = build_zone(11, hosts=5)
        store.save_full(axfr, meta(11, "AXFR"))
        versions.append(axfr)
        segments = store.history_segments(ORIGIN)
        assert len(segments) > 2  # compactions and the AXFR each retired the live pair
        for version in versions:
            found = store.load_version(ORIGIN, version.serial)
            assert found is not None, version.serial
            snapshot, version_meta = found
            assert records(snapshot) == records(version)
            assert version_meta.received_at == meta(version.serial).received_at
        assert store.load_version(ORIGIN, 99) is None
    # a reader (another process) rebuilds the same
    with Store(tmp_path, lock=False) as reader:
        found = reader.load_version(ORIGIN, 2)
        assert found is not None and records(found[0]) == records(versions[1])


def test_pruning_drops_only_segments_holding_no_wanted_serial(tmp_path: Path) -> None:
    with Store(tmp_path, compact_max_entries=3) as store:
        ixfr_chain(store, 10)
        history = store.zone_dir(ORIGIN) / HISTORY_DIR
        before = sorted(os.listdir(history))
        removed = store.prune_history(ORIGIN, [8, 9, 10])
        assert removed >= 1
        after = sorted(os.listdir(history))
        assert len(after) < len(before)
        for serial in (8, 9, 10):
            assert store.load_version(ORIGIN, serial) is not None
        assert store.load_version(ORIGIN, 1) is None
        store.prune_history(ORIGIN, [])
        assert os.listdir(history) == []
        assert store.load_version(ORIGIN, 10) is not None  # the live pair is never pruned


def test_a_retirement_interrupted_by_a_crash_is_not_linked_twice(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        ixfr_chain(store, 3)
        zone_dir = store.zone_dir(ORIGIN)
        store._retire(zone_dir)  # links made, then the "crash": the full copy not replaced
        store._retire(zone_dir)
        assert len(store.history_segments(ORIGIN)) == 2  # one retired segment + the live pair
        store.save_full(build_zone(4), meta(4, "AXFR"))
        assert len(store.history_segments(ORIGIN)) == 2
        assert store.load_version(ORIGIN, 3) is not None


def test_removing_a_zone_removes_its_history(tmp_path: Path) -> None:
    with Store(tmp_path, compact_max_entries=2) as store:
        ixfr_chain(store, 5)
        assert (store.zone_dir(ORIGIN) / HISTORY_DIR).is_dir()
        store.remove(ORIGIN)
        assert not store.zone_dir(ORIGIN).exists()


# -- the index ------------------------------------------------------------------------------


def entry(serial: int) -> VersionRecord:
    return VersionRecord(serial, 1_765_000_000.0 + serial, "IXFR from x", 10, f"{serial:096x}")


def test_the_index_keeps_the_last_versions_and_stays_bounded(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    for serial in range(1, 26):
        kept = index.append(entry(serial), keep=4)
        assert [r.serial for r in kept] == list(range(max(1, serial - 3), serial + 1))
        assert len(index.read()) <= 8
    assert [r.serial for r in index.read()][-4:] == [22, 23, 24, 25]


def test_a_torn_index_line_is_skipped(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    index.append(entry(1), keep=5)
    index.append(entry(2), keep=5)
    with index.path.open("ab") as handle:
        handle.write(b'{"serial": 3, "ti')
    assert [r.serial for r in index.read()] == [1, 2]
    assert find(index.read(), 2) == entry(2)
    assert find(index.read(), 3) is None


def test_source_names_the_transfer_and_primary() -> None:
    assert source_of(VersionMeta("IXFR", 1.0, "192.0.2.53@53")) == "IXFR from 192.0.2.53@53"
    assert source_of(VersionMeta("file", 1.0, None)) == "file"


# -- digest and diff ------------------------------------------------------------------------


@pytest.mark.parametrize("zone_file", ["answer.zone", "answer.nsec3.zone"])
def test_digest_equals_dnspythons_zonemd_digest(zone_file: str) -> None:
    path = ZONES / zone_file
    snapshot = load_zone_file(path, "example")
    zone = dns.zone.from_file(str(path), "example.", relativize=False)
    expected = zone.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384)
    assert digest_hex(snapshot) == expected.digest.hex()


def test_diff_lines_show_soa_and_changed_records() -> None:
    old = build_zone(1)
    _deleted, _added, new = step(old)
    removed, added = diff_lines(old, new)
    assert removed == sorted(
        [
            "example.test. 3600 IN SOA ns1.example.test. hostmaster.example.test. "
            "1 3600 600 86400 300",
            "h1.example.test. 300 IN A 0.0.0.1",
        ]
    )
    assert "h1.example.test. 300 IN A 0.15.66.65" in added
    assert any(" SOA " in line and " 2 3600 " in line for line in added)
    assert diff_lines(new, new) == ([], [])


# -- the recorder: index, pruning and the ledger after each publish ------------------------


def test_recorder_writes_index_and_ledger_and_prunes(tmp_path: Path) -> None:
    now = [1_765_100_000.0]
    with Store(tmp_path, compact_max_entries=2) as store:
        recorder = VersionRecorder(store, lambda: now[0])
        versions = ixfr_chain(store, 8)
        for version in versions:
            recorder.published(ORIGIN, version, meta(version.serial), keep=3)
            now[0] += 1
        recorder.flush()
        index = recorder.index(ORIGIN).read()
        assert [r.serial for r in index][-3:] == [6, 7, 8]
        assert index[-1].digest == digest_hex(versions[-1])
        assert index[-1].records == versions[-1].record_count
        # only what the last 3 need is left in history
        for serial in (6, 7, 8):
            assert store.load_version(ORIGIN, serial) is not None
        assert store.load_version(ORIGIN, 1) is None
        # a restart publishes the stored version again: not a new version
        recorder.published(ORIGIN, versions[-1], meta(8), keep=3)
        recorder.flush()
        assert len(recorder.index(ORIGIN).read()) == len(index)
        path = recorder.ledger_path(ORIGIN)
        assert path.name == "example.test.ledger"
        entries = [e for _, _, e in ledger.read(path)]
        assert [(e.event, e.serial) for e in entries] == [("published", s) for s in range(1, 9)]
        assert entries[-1].digest == digest_hex(versions[-1])
        assert entries[-1].source == "IXFR from 192.0.2.53@53"
        assert ledger.verify(path).ok
        recorder.close()


def test_a_file_zone_read_again_unchanged_is_not_recorded(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        recorder = VersionRecorder(store, lambda: 1_765_100_000.0)
        version = build_zone(5)
        for received in (1.0, 2.0):
            recorder.published(ORIGIN, version, VersionMeta("file", received, None), keep=20)
        _d, _a, changed = step(version)
        recorder.published(ORIGIN, changed, VersionMeta("file", 3.0, None), keep=20)
        recorder.flush()
        assert [(r.serial, r.source) for r in recorder.index(ORIGIN).read()] == [
            (5, "file"),
            (6, "file"),
        ]
        recorder.close()


# -- the control commands' logic ------------------------------------------------------------


def versions_of(tmp_path: Path, store: Store, served: Snapshot) -> ZoneVersions:
    from authd.config import load_config

    config_path = tmp_path / "authd.toml"
    config_path.write_text(
        '[[remote]]\nid = "p"\naddresses = ["127.0.0.1@5400"]\n'
        '[[zone]]\nname = "example.test"\nprimaries = ["p"]\nhistory-versions = 4\n'
    )
    config = load_config(config_path)
    recorder = VersionRecorder(store, lambda: 1_765_100_000.0)
    return ZoneVersions("example.test", config.zones[0], served, recorder, tmp_path, lambda: 0.0)


def test_diff_and_load_between_kept_versions_and_errors_beyond(tmp_path: Path) -> None:
    with Store(tmp_path / "state", compact_max_entries=2) as store:
        versions = ixfr_chain(store, 6)
        zone = versions_of(tmp_path, store, versions[-1])
        for version in versions:
            zone.recorder.published(ORIGIN, version, meta(version.serial), keep=4)

        async def run() -> None:
            result = await zone.diff("3", None)
            assert (result["from"], result["to"]) == (3, 6)
            removed, added = diff_lines(versions[2], versions[5])
            assert (result["removed"], result["added"]) == (removed, added)
            assert records(await zone.load(4)) == records(versions[3])
            with pytest.raises(VersionsError, match="serial 1 is not in the history"):
                await zone.load(1)
            with pytest.raises(VersionsError, match="not in the history; kept: 3, 4, 5, 6"):
                await zone.diff("2", "6")
            with pytest.raises(VersionsError, match="SERIAL_A: not a serial"):
                await zone.diff("x2", None)
            history = await zone.history()
            assert [v["serial"] for v in history["versions"]] == [3, 4, 5, 6]
            assert history["served"] == 6
            checked = await zone.ledger(True)
            assert checked["ok"] and checked["checked"] == 6
            # a whole last entry cut away: no chain can show it, the writer's head does
            path = zone.recorder.ledger_path(ORIGIN)
            lines = path.read_bytes().splitlines(keepends=True)
            path.write_bytes(b"".join(lines[:-1]))
            checked = await zone.ledger(True)
            assert not checked["ok"]
            assert "ends at entry 5, but entry 6 was written" in checked["problem"]

        asyncio.run(run())
        zone.recorder.close()


def test_a_stored_copy_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "state") as store:
        versions = ixfr_chain(store, 3)
        zone = versions_of(tmp_path, store, versions[-1])
        for version in versions:
            zone.recorder.published(ORIGIN, version, meta(version.serial), keep=4)
        zone.recorder.flush()
        index = zone.recorder.index(ORIGIN)
        lines = index.path.read_text().splitlines()
        first = json.loads(lines[0])
        first["digest"] = "00" * 48
        lines[0] = json.dumps(first)
        index.path.write_text("\n".join(lines) + "\n")
        with pytest.raises(
            VersionsError, match="no stored copy of serial 1 matches its recorded digest"
        ):
            asyncio.run(zone.load(1))
        zone.recorder.close()


def test_serials_are_parsed_strictly() -> None:
    assert parse_serial("2026120701", "SERIAL_A") == 2026120701
    for bad in ("", "-1", "4294967296", "1e3", True):
        with pytest.raises(VersionsError):
            parse_serial(bad, "SERIAL_A")


# -- export -----------------------------------------------------------------------------------


def test_an_export_loads_back_with_the_same_serial_and_digest(tmp_path: Path) -> None:
    snapshot = load_zone_file(ZONES / "answer.nsec3.zone", "example")
    done = export_zone("example", snapshot, tmp_path / "out", 1_765_100_000.0)
    assert done.path == tmp_path / "out" / "example.zone"
    text = done.path.read_text()
    assert text.startswith("; zone example. serial 2026010101")
    assert f"; sha384 {done.digest} " in text
    assert done.digest_path.read_text() == f"{done.digest} example. serial 2026010101\n"
    again = load_zone_file(done.path, "example")
    assert again.serial == snapshot.serial and digest_hex(again) == done.digest
    zone = dns.zone.from_file(str(done.path), "example.", relativize=False)
    digest = zone.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384).digest.hex()
    assert digest == done.digest
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp left


def test_exporter_writes_changed_zones_only_and_at_most_a_batch_per_tick(tmp_path: Path) -> None:
    served: dict[str, Snapshot | None] = {f"z{i}.test": None for i in range(5)}

    def zone_of(name: str, serial: int) -> Snapshot:
        origin = names.key_from_text(name + ".")
        builder = SnapshotBuilder(origin)
        builder.add(origin, SOA, 60, b"\x00\x00" + struct.pack(">IIIII", serial, 1, 1, 1, 1))
        return builder.build()

    for i in range(4):
        served[f"z{i}.test"] = zone_of(f"z{i}.test", 1)
    exporter = Exporter(tmp_path, 3600, lambda: list(served.items()), lambda: 0.0, batch=3)

    async def run() -> None:
        assert await exporter.tick() == 3
        assert await exporter.tick() == 1  # the fourth; z4 serves nothing yet
        assert await exporter.tick() == 0
        served["z1.test"] = zone_of("z1.test", 2)
        assert await exporter.tick() == 1

    asyncio.run(run())
    assert sorted(p.name for p in tmp_path.glob("*.zone")) == [f"z{i}.test.zone" for i in range(4)]
    assert "serial 2" in (tmp_path / "z1.test.zone.sha384").read_text()
    assert exporter.exports == 5


def test_export_text_names_the_zone_serial_and_digest() -> None:
    snapshot = build_zone(7)
    text = export_text("example.test", snapshot, "ab" * 48, 0.0)
    first, second, origin = text.splitlines()[:3]
    assert first.startswith("; zone example.test. serial 7, exported by authd at 1970-01-01T")
    assert second == f"; sha384 {'ab' * 48} (RFC 8976 SIMPLE digest of the canonical zone)"
    assert origin == "$ORIGIN example.test."
    assert dns.rdatatype.SOA.name in text.splitlines()[3]


def test_a_serial_that_came_back_with_other_contents_is_found_by_its_digest(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "state") as store:
        first = build_zone(5)
        store.save_full(first, meta(5, "AXFR"))
        store.save_full(build_zone(5, hosts=3), meta(6, "AXFR"))  # same serial, other records
        found = store.load_version(ORIGIN, 5)
        assert found is not None and found[0].record_count == build_zone(5, hosts=3).record_count
        wanted = digest_hex(first)
        found = store.load_version(ORIGIN, 5, lambda s: digest_hex(s) == wanted)
        assert found is not None and records(found[0]) == records(first)
        assert store.load_version(ORIGIN, 5, lambda s: False) is None


def test_promote_spells_out_the_config_change(tmp_path: Path) -> None:
    from authd.export import promote_config_change

    text = promote_config_change(
        "example.com", Path("/s/promoted/example.com.zone"), "provider", Path("/etc/authd.toml")
    )
    assert 'In the [[zone]] with name = "example.com" in /etc/authd.toml:' in text
    assert 'file = "/s/promoted/example.com.zone"' in text
    assert 'template "provider"' in text and "primaries" in text
    assert "authd check-config -c /etc/authd.toml && authd reload -c /etc/authd.toml" in text
    assert "template" not in promote_config_change("a.test", Path("/x"), None)
