"""The secondary orchestrator against the controllable test primary: real sockets and store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dns.rdataset
import dns.zone
import pytest

from authd.config import load_config
from authd.metrics import ControlPlaneStats
from authd.publish import DiffSteps
from authd.xfr import timers as machine
from authd.xfr.secondary import Pacer, SecondaryZone, earliest_expiration
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import Snapshot
from authd.zone.store import Store
from authd.zone.verify import ValidationPool
from tests.support.dnssec import snapshot_of
from tests.support.primary import Behaviour, Fault, TestPrimary, make_zone


class FakeHost:
    """The application side: a real store, recorded publishes."""

    def __init__(self, state_dir: Path) -> None:
        self._store = Store(state_dir)
        self.stats = ControlPlaneStats()
        self.published: list[tuple[int, object]] = []
        self.servfail: list[bool] = []

    @property
    def store(self) -> Store:
        return self._store

    def publish_version(
        self, origin: bytes, snapshot: Snapshot, meta: VersionMeta, steps: DiffSteps | None
    ) -> int | None:
        self.published.append((snapshot.serial, steps))
        return None

    async def wait_published(self, seq: int | None) -> bool:
        return True

    def set_servfail(self, origin: bytes, servfail: bool, expired_at: float | None = None) -> None:
        self.servfail.append(servfail)


def _config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "authd.toml"
    path.write_text(
        f"""
[server]
listen = ["127.0.0.1@5399"]
state-dir = "state"
[[remote]]
id = "dead"
addresses = ["127.0.0.1@1"]
[[remote]]
id = "test"
addresses = ["127.0.0.1@{port}"]
[[zone]]
name = "example.test"
primaries = ["dead", "test"]
refresh-min = 1
retry-min = 1
expire-min = 3
"""
    )
    return path


async def _until(condition: object, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def settled(zone: SecondaryZone, serial: int) -> bool:
    """The zone serves `serial` and its machine has processed everything about it."""
    return (
        zone.current is not None
        and zone.current.serial == serial
        and zone.timers.in_flight is machine.InFlight.NONE
        and zone.timers.served_serial == serial
        and not zone.events
    )


def idle(zone: SecondaryZone) -> bool:
    return zone.timers.in_flight is machine.InFlight.NONE and not zone.events


@pytest.fixture
def validation() -> ValidationPool:
    pool = ValidationPool(1, 0)
    yield pool  # type: ignore[misc]
    pool.close()


async def test_first_load_ixfr_failover_and_rejection(
    tmp_path: Path, validation: ValidationPool
) -> None:
    primary = TestPrimary(versions=[make_zone("example.test.", 10)])
    await primary.start()
    config = load_config(_config(tmp_path, primary.endpoint[1]))
    zone_config = config.zones[0]
    host = FakeHost(tmp_path / "state")
    zone = SecondaryZone(
        zone_config,
        host,
        Pacer(config.transfer),
        validation,
        config.transfer,
        current=None,
        rand=lambda: 0.0,
    )
    zone.start()
    try:
        # First load by AXFR, from the second primary after the first is dead.
        await _until(lambda: settled(zone, 10))
        assert zone.last_primary == f"127.0.0.1@{primary.endpoint[1]}"
        assert zone.timers.state is machine.State.OK
        loaded = host.store.load(zone_config.origin)
        assert loaded is not None and loaded.snapshot.serial == 10  # durable before visible
        assert host.published[0][0] == 10
        assert (host.store.load_timers(zone_config.origin) or {})["served_serial"] == 10

        # A new version by IXFR after a forced refresh; journaled, not rewritten.
        primary.versions.append(make_zone("example.test.", 11))
        zone.post(machine.ForceRefresh())
        await _until(lambda: settled(zone, 11))
        stored = host.store.load(zone_config.origin)
        assert stored is not None and stored.journal_entries == 1
        assert any(k[1] == "IXFR" and k[2] == "updated" for k in host.stats.transfers)

        # A version the checks refuse (CNAME beside other data) is not stored or served.
        bad = make_zone("example.test.", 12)
        bad.replace_rdataset(  # dnspython keeps both only through a raw node edit
            "h1", dns.rdataset.from_text("IN", "TXT", 300, '"x"')
        )
        bad.find_node("h1").rdatasets.append(
            dns.rdataset.from_text("IN", "CNAME", 300, "ns1.example.test.")
        )
        primary.versions.append(bad)
        zone.post(machine.ForceRefresh())
        await _until(lambda: zone.last_rejection is not None and idle(zone))
        assert "cname-other-data" in (zone.last_rejection or "")
        assert zone.current.serial == 11
        assert host.store.load(zone_config.origin).snapshot.serial == 11  # type: ignore[union-attr]
        assert host.stats.rejections[("example.test", "cname-other-data")] == 1

        # The primary fixes it: picked up by the next refresh.
        primary.versions.append(make_zone("example.test.", 13))
        zone.post(machine.ForceRefresh())
        await _until(lambda: settled(zone, 13))
        assert zone.last_rejection is None
    finally:
        await zone.stop()
        await primary.stop()
        host.store.close()


async def test_cut_transfer_changes_nothing_then_recovers(
    tmp_path: Path, validation: ValidationPool
) -> None:
    primary = TestPrimary(versions=[make_zone("example.test.", 20)])
    await primary.start()
    config = load_config(_config(tmp_path, primary.endpoint[1]))
    host = FakeHost(tmp_path / "state")
    zone = SecondaryZone(
        config.zones[0],
        host,
        Pacer(config.transfer),
        validation,
        config.transfer,
        current=None,
        rand=lambda: 0.0,
    )
    zone.start()
    try:
        await _until(lambda: settled(zone, 20))
        primary.versions.append(make_zone("example.test.", 21))
        primary.behaviour = Behaviour(fault=Fault.CUT_BEFORE_CLOSING_SOA)
        zone.post(machine.ForceRetransfer())
        await _until(lambda: bool(zone.timers.last_error) and idle(zone))
        assert zone.current.serial == 20  # type: ignore[union-attr]
        assert "incomplete" in zone.timers.last_error or "cut" in zone.timers.last_error
        primary.behaviour = Behaviour()
        zone.post(machine.ForceRefresh())
        await _until(lambda: settled(zone, 21))
    finally:
        await zone.stop()
        await primary.stop()
        host.store.close()


def test_earliest_expiration_matches_the_validator() -> None:
    from authd.zone.dnssec import validate

    zone_file = Path(__file__).parent / "zones" / "answer.nsec.zone"
    zone = dns.zone.from_file(str(zone_file), origin="example.", relativize=False)
    snapshot = snapshot_of(zone)
    now = time.time()
    assert earliest_expiration(snapshot, now) == validate(snapshot, now).horizon
