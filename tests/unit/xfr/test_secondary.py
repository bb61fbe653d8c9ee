"""The lifecycle shell and its operations against the controllable test primary: real
sockets and store (the machine itself is tested in test_lifecycle.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dns.rdataset
import dns.zone
import pytest

from authd.clock import SystemClock
from authd.config import Config, load_config
from authd.horizon import earliest_signature_expiration
from authd.metrics import ControlPlaneStats
from authd.publish import DiffSteps
from authd.xfr.operations import Operations, Pacer
from authd.xfr.secondary import Secondaries, ZoneEntry
from authd.zone import lifecycle as lc
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
        self.expiry: tuple[float | None, float | None] = (None, None)
        self.served: dict[bytes, Snapshot] = {}
        self.metas: list[VersionMeta] = []

    @property
    def store(self) -> Store:
        return self._store

    def publish_version(
        self, origin: bytes, snapshot: Snapshot, meta: VersionMeta, steps: DiffSteps | None
    ) -> int | None:
        self.published.append((snapshot.serial, steps))
        self.metas.append(meta)
        self.served[origin] = snapshot
        return None

    def served_snapshot(self, origin: bytes) -> Snapshot | None:
        return self.served.get(origin)

    async def wait_published(self, seq: int | None) -> bool:
        return True

    def set_servfail(self, origin: bytes, servfail: bool, expired_at: float | None = None) -> None:
        self.servfail.append(servfail)

    def set_expiry(
        self, origin: bytes, expires_at: float | None, signatures_until: float | None
    ) -> None:
        self.expiry = (expires_at, signatures_until)


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


def served(host: FakeHost, zone: ZoneEntry) -> int | None:
    snapshot = host.served_snapshot(zone.origin)
    return snapshot.serial if snapshot is not None else None


def settled(host: FakeHost, zone: ZoneEntry, serial: int) -> bool:
    """The zone serves `serial` and its machine has processed everything about it."""
    record = zone.record
    return (
        served(host, zone) == serial
        and not record.busy
        and record.served is not None
        and record.served.serial == serial
        and not zone.events
    )


def idle(zone: ZoneEntry) -> bool:
    return not zone.record.busy and not zone.events


def shell(host: FakeHost, config: Config, validation: ValidationPool) -> Secondaries:
    clock = SystemClock()  # the test primary signs and answers in real time
    operations = Operations(host, Pacer(config.transfer), validation, config.transfer, clock)
    return Secondaries(host, operations, clock, rand=lambda: 0.0)


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
    secondaries = shell(host, config, validation)
    zone = secondaries.add(zone_config)
    try:
        # First load by AXFR, from the second primary after the first is dead.
        await _until(lambda: settled(host, zone, 10))
        assert zone.record.served is not None
        assert zone.record.served.source == f"127.0.0.1@{primary.endpoint[1]}"
        assert zone.record.state is lc.State.OK
        loaded = host.store.load(zone_config.origin)
        assert loaded is not None and loaded.snapshot.serial == 10  # durable before visible
        assert loaded.meta == host.metas[0]  # the same facts on disk and served (history)
        assert host.published[0][0] == 10
        # Nothing served yet: straight to AXFR, no SOA check (Knot); remote health counted.
        assert not host.stats.soa_checks
        assert set(host.stats.remote_last_failure) == {"dead"}
        assert set(host.stats.remote_last_success) == {"test"}
        await secondaries.writer.close()  # the batched timers write, now
        assert (host.store.load_timers(zone_config.origin) or {})["served_serial"] == 10

        # A new version by IXFR after a forced refresh; journaled, not rewritten.
        primary.versions.append(make_zone("example.test.", 11))
        secondaries.post(zone.origin, lc.ForceRefresh())
        await _until(lambda: settled(host, zone, 11))
        # Every SOA check attempt is counted per remote with its outcome.
        checks = host.stats.soa_checks
        assert checks[("example.test", "test", "ok")] == 1
        assert ("example.test", "dead", "ok") not in checks
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
        secondaries.post(zone.origin, lc.ForceRefresh())
        await _until(lambda: zone.last_rejection is not None and idle(zone))
        assert "cname-other-data" in (zone.last_rejection or "")
        assert served(host, zone) == 11
        assert (
            zone.record.outcome is lc.Outcome.REJECTED
            and "cname-other-data" in zone.record.last_error
        )
        assert host.store.load(zone_config.origin).snapshot.serial == 11  # type: ignore[union-attr]
        assert host.stats.rejections[("example.test", "cname-other-data")] == 1

        # The primary fixes it: picked up by the next refresh.
        primary.versions.append(make_zone("example.test.", 13))
        secondaries.post(zone.origin, lc.ForceRefresh())
        await _until(lambda: settled(host, zone, 13))
        assert zone.last_rejection is None
    finally:
        await secondaries.stop()
        await primary.stop()
        host.store.close()


async def test_cut_transfer_changes_nothing_then_recovers(
    tmp_path: Path, validation: ValidationPool
) -> None:
    primary = TestPrimary(versions=[make_zone("example.test.", 20)])
    await primary.start()
    config = load_config(_config(tmp_path, primary.endpoint[1]))
    host = FakeHost(tmp_path / "state")
    secondaries = shell(host, config, validation)
    zone = secondaries.add(config.zones[0])
    try:
        await _until(lambda: settled(host, zone, 20))
        primary.versions.append(make_zone("example.test.", 21))
        primary.behaviour = Behaviour(fault=Fault.CUT_BEFORE_CLOSING_SOA)
        secondaries.post(zone.origin, lc.ForceRetransfer())
        await _until(lambda: bool(zone.record.last_error) and idle(zone))
        assert served(host, zone) == 20
        error = zone.record.last_error
        assert "incomplete" in error or "cut" in error
        assert zone.record.outcome is lc.Outcome.TRANSFER_FAILED
        primary.behaviour = Behaviour()
        secondaries.post(zone.origin, lc.ForceRefresh())
        await _until(lambda: settled(host, zone, 21))
    finally:
        await secondaries.stop()
        await primary.stop()
        host.store.close()


def test_earliest_expiration_matches_the_validator() -> None:
    from authd.zone.dnssec import validate

    zone_file = Path(__file__).parents[1] / "zones" / "answer.nsec.zone"
    zone = dns.zone.from_file(str(zone_file), origin="example.", relativize=False)
    snapshot = snapshot_of(zone)
    now = time.time()
    assert earliest_signature_expiration(snapshot, now) == validate(snapshot, now).horizon


async def test_an_operation_that_raises_ends_in_a_failure_event(
    tmp_path: Path, validation: ValidationPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in an operation must not leave the zone waiting for a result forever."""
    config = load_config(_config(tmp_path, 1))
    host = FakeHost(tmp_path / "state")
    secondaries = shell(host, config, validation)

    async def broken(self: Operations, entry: ZoneEntry, *args: object) -> lc.Event:
        raise RuntimeError("boom")

    # Nothing served yet, so the refresh is a transfer (no SOA check first).
    monkeypatch.setattr(Operations, "transfer", broken)
    zone = secondaries.add(config.zones[0])
    try:
        secondaries.post(zone.origin, lc.ForceRefresh())
        await _until(lambda: zone.record.outcome is lc.Outcome.TRANSFER_FAILED and idle(zone))
        assert "internal error" in zone.record.last_error and "boom" in zone.record.last_error
        assert zone.operation is None
    finally:
        await secondaries.stop()
        host.store.close()


async def test_pacing_is_per_primary_address() -> None:
    from authd.config import TransferConfig

    pacer = Pacer(TransferConfig(max_concurrent=3, max_per_primary=1, max_soa_checks_in_flight=2))
    assert pacer.soa_checks("192.0.2.1") is pacer.soa_checks("192.0.2.1")
    inside: dict[str, int] = {"192.0.2.1": 0, "192.0.2.2": 0}
    peak: dict[str, int] = {"192.0.2.1": 0, "192.0.2.2": 0}
    gate = asyncio.Event()

    async def check(address: str) -> None:
        async with pacer.soa_checks(address):
            inside[address] += 1
            peak[address] = max(peak[address], inside[address])
            await gate.wait()
            inside[address] -= 1

    tasks = [asyncio.create_task(check(a)) for a in ("192.0.2.1", "192.0.2.2") * 5]
    await asyncio.sleep(0)
    assert inside == {"192.0.2.1": 2, "192.0.2.2": 2}  # each primary has its own slots
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == {"192.0.2.1": 2, "192.0.2.2": 2}
    assert pacer.primary("192.0.2.1") is not pacer.primary("192.0.2.2")
