"""The change guard's I/O (xfr/guarding.py): an IXFR is judged on the owners it touched and
the served version's RRset count (no walk of the zone); an AXFR by a full comparison; a
version that would be held carries its digest; Hold stores it durably, Load reads it back."""

from __future__ import annotations

from pathlib import Path

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from authd.clock import FakeClock
from authd.config import load_config
from authd.metrics import ControlPlaneStats
from authd.xfr import guarding
from authd.xfr.operations import Candidate
from authd.xfr.secondary import ZoneEntry, settings_for
from authd.xfr.stream import DiffStep, Kind
from authd.xfr.transfer import Outcome, TransferResult
from authd.zone import guard, heldstore, history, names
from authd.zone import lifecycle as lc
from authd.zone.snapshot import Record, Snapshot, SnapshotBuilder
from authd.zone.store import Store

ORIGIN = "g.example."
T0 = 1_700_000_000.0


def record(owner: str, rtype: str, text: str) -> Record:
    data = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text).to_wire()
    assert data is not None
    return (names.key_from_text(owner), dns.rdatatype.from_text(rtype), 300, data)


def version(serial: int, hosts: int) -> list[Record]:
    soa = f"ns1.g.example. host.g.example. {serial} 7200 900 1209600 300"
    return [
        record(ORIGIN, "SOA", soa),
        record(ORIGIN, "NS", "ns1.g.example."),
        *(record(f"h{i}.{ORIGIN}", "A", f"192.0.2.{i % 250 + 1}") for i in range(hosts)),
    ]


def build(records: list[Record]) -> Snapshot:
    builder = SnapshotBuilder(names.key_from_text(ORIGIN))
    builder.add_records(records)
    return builder.build()


class Host:
    def __init__(self, state_dir: Path, served: Snapshot) -> None:
        self.store = Store(state_dir)
        self.served = served
        self.stats = ControlPlaneStats()

    def served_snapshot(self, origin: bytes) -> Snapshot | None:
        return self.served


def entry_for(tmp_path: Path) -> ZoneEntry:
    path = tmp_path / "authd.toml"
    path.write_text(
        '[[remote]]\nid = "p"\naddresses = ["127.0.0.1@5301"]\n'
        f'[[zone]]\nname = "{ORIGIN}"\nprimaries = ["p"]\n'
    )
    config = load_config(path).zones[0]
    return ZoneEntry(config, lc.Zone(settings_for(config)))


def ixfr(old: Snapshot, new: Snapshot, deleted: list[Record]) -> Candidate:
    soa_old = [r for r in version(old.serial, 0) if r[1] == dns.rdatatype.SOA]
    soa_new = [r for r in version(new.serial, 0) if r[1] == dns.rdatatype.SOA]
    step = DiffStep(tuple(soa_old + deleted), tuple(soa_new), old.serial, new.serial)
    result = TransferResult(Outcome.UPDATED, ("127.0.0.1", 53), Kind.IXFR, new, (step,))
    return Candidate(result, "127.0.0.1@53", new, full=False)


async def test_an_ixfr_is_judged_on_its_owners_and_the_kept_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = build(version(1, 100)), build(version(2, 99))
    host = Host(tmp_path / "state", old)
    entry = entry_for(tmp_path)
    entry.rrsets = guarding.RrsetCount(old, 1000)  # as counted when `old` was published
    entry.candidate = ixfr(old, new, [record(f"h99.{ORIGIN}", "A", "192.0.2.100")])

    def walked(_: Snapshot) -> int:
        raise AssertionError("an IXFR must not count the whole zone")

    monkeypatch.setattr(guard, "count_rrsets", walked)
    event = await guarding.guard_verdict(host, entry, False, frozenset())  # type: ignore[arg-type]
    assert event == lc.Guarded(True)
    assert entry.candidate.rrsets == 999  # the kept count, minus the one RRset removed


async def test_an_axfr_that_removes_90_percent_is_held_with_its_digest(tmp_path: Path) -> None:
    old, new = build(version(1, 100)), build(version(2, 10))
    host = Host(tmp_path / "state", old)
    entry = entry_for(tmp_path)
    result = TransferResult(Outcome.UPDATED, ("127.0.0.1", 53), Kind.AXFR, new)
    entry.candidate = Candidate(result, "127.0.0.1@53", new, full=True)
    event = await guarding.guard_verdict(host, entry, False, frozenset())  # type: ignore[arg-type]
    assert isinstance(event, lc.Guarded) and not event.passed
    assert "rrsets-removed" in event.reason and "90 of 102 RRsets" in event.reason
    assert event.digest == history.digest_hex(new)
    # pinned: a version the rules pass is still reported (held by the machine), with digest
    entry.candidate = Candidate(result, "127.0.0.1@53", build(version(2, 100)), full=True)
    pinned = await guarding.guard_verdict(host, entry, True, frozenset())  # type: ignore[arg-type]
    assert isinstance(pinned, lc.Guarded) and not pinned.passed and pinned.digest


async def test_hold_stores_durably_and_load_reads_it_back(tmp_path: Path) -> None:
    old, new = build(version(1, 100)), build(version(2, 10))
    host = Host(tmp_path / "state", old)
    entry = entry_for(tmp_path)
    result = TransferResult(Outcome.UPDATED, ("127.0.0.1", 53), Kind.AXFR, new)
    entry.candidate = Candidate(result, "127.0.0.1@53", new, full=True)
    clock = FakeClock(now=T0)
    held = await guarding.hold(host, entry, lc.Hold(2, "why", "d"), clock)  # type: ignore[arg-type]
    assert held == lc.HeldStored(True, reason="why", digest="d")
    assert heldstore.held_serial(host.store, entry.origin) == 2
    entry.held = None  # as after a restart: read from disk
    loaded = await guarding.load(host, host, entry, lc.Load(2, held=True), clock)  # type: ignore[arg-type]
    assert isinstance(loaded, lc.Loaded) and loaded.candidate is not None
    assert loaded.candidate.serial == 2 and entry.candidate.release == "approval"
    assert history.digest_hex(entry.candidate.snapshot) == history.digest_hex(new)
    missing = await guarding.load(host, host, entry, lc.Load(3, held=True), clock)  # type: ignore[arg-type]
    assert missing == lc.Loaded(None, "held serial 3 is not stored")
    guarding.drop_held(host, entry)  # type: ignore[arg-type]
    assert heldstore.held_serial(host.store, entry.origin) is None
