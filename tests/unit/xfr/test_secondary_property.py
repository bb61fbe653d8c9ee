"""Machine + shell under random event sequences, with a fake clock and fake operations.

Checks, for every step of every zone: each action the machine emitted was carried out
by the shell (I/O started, wake-up scheduled at that time, record persisted, SERVFAIL
set, candidate dropped), at most one operation per zone is in flight, and a loaded
zone expires exactly at `expires_at` whatever its refresh and retry are (the one
scheduler wakes it then, even while an operation is in flight).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authd.clock import FakeClock
from authd.config import ZoneConfig, load_config
from authd.metrics import ControlPlaneStats
from authd.publish import DiffSteps
from authd.xfr.secondary import Secondaries, ZoneEntry
from authd.xfr.timers import SoaTimers
from authd.zone import lifecycle as lc
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import Snapshot
from authd.zone.store import StoreError
from authd.zone.timerstore import TimerValue
from authd.zone.timerwriter import TimerWriter
from tests.support.fakeloop import FakeLoop

T0 = 1_700_000_000.0
EPSILON = 1e-6


class FakeStore:
    def load_timers(self, zone: bytes) -> None:
        return None

    def zone_dir(self, zone: bytes) -> Path:
        return Path("/nonexistent/authd-test")  # no held version on disk


@dataclass(frozen=True)
class FakeSoa:
    serial: int
    refresh: int
    retry: int
    expire: int


@dataclass(frozen=True)
class FakeSnapshot:
    """A stored copy as far as the shell looks at one at start: its SOA, its apex."""

    soa: FakeSoa
    origin: bytes = b""

    def node(self, owner: bytes) -> dict[int, object]:
        return {}


class FakeHost:
    def __init__(self, stored: FakeSnapshot | None) -> None:
        self.stats = ControlPlaneStats()
        self._store = FakeStore()
        self.servfail: dict[bytes, tuple[bool, float | None]] = {}
        self.expiry: dict[bytes, float | None] = {}
        self.stored = stored
        self.records: list[tuple[bytes, str, int | None]] = []

    def record_event(
        self, origin: bytes, event: str, serial: int | None, digest: str, reason: str
    ) -> None:
        self.records.append((origin, event, serial))

    async def load_version(self, origin: bytes, serial: int) -> Snapshot:
        raise AssertionError("the fake operations load nothing")

    @property
    def store(self) -> FakeStore:
        return self._store

    def served_snapshot(self, origin: bytes) -> Snapshot | None:
        return self.stored  # type: ignore[return-value]

    def publish_version(
        self, origin: bytes, snapshot: Snapshot, meta: VersionMeta, steps: DiffSteps | None
    ) -> int | None:
        raise AssertionError("the fake operations publish nothing")

    async def wait_published(self, seq: int | None) -> bool:
        return True

    def set_servfail(self, origin: bytes, servfail: bool, expired_at: float | None = None) -> None:
        self.servfail[origin] = (servfail, expired_at)

    def set_expiry(
        self, origin: bytes, expires_at: float | None, signatures_until: float | None
    ) -> None:
        self.expiry[origin] = expires_at


@dataclass
class Pending:
    entry: ZoneEntry
    action: lc.Action
    done: Callable[[lc.Event], None]


@dataclass
class FakeIo:
    pending: list[Pending] = field(default_factory=list)
    started: list[tuple[bytes, lc.Action]] = field(default_factory=list)

    def start(self, entry: ZoneEntry, action: lc.Action, done: Callable[[lc.Event], None]) -> None:
        assert not any(p.entry is entry for p in self.pending), "two operations in flight"
        self.pending.append(Pending(entry, action, done))
        self.started.append((entry.origin, action))

    def cancel(self, entry: ZoneEntry) -> None:
        self.pending = [p for p in self.pending if p.entry is not entry]

    def loaded(self, entry: ZoneEntry, snapshot: Snapshot) -> None:
        pass

    dropped: list[bytes] = field(default_factory=list)

    def drop_held(self, entry: ZoneEntry) -> None:
        self.dropped.append(entry.origin)


@dataclass
class FakeWriter:
    marked: dict[bytes, Mapping[str, TimerValue]] = field(default_factory=dict)

    def mark(self, zone: bytes, record: Mapping[str, TimerValue]) -> None:
        self.marked[zone] = record

    def forget(self, zone: bytes) -> None:
        self.marked.pop(zone, None)

    async def flush(self) -> None:
        pass

    async def idle(self) -> None:
        pass

    async def close(self) -> None:
        pass


@functools.cache
def zone_config(index: int, servfail: bool) -> ZoneConfig:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "authd.toml"
        path.write_text(
            f"""
[[remote]]
id = "p"
addresses = ["127.0.0.1@1"]
[[zone]]
name = "z{index}.test"
primaries = ["p"]
refresh-min = 1
retry-min = 1
expire-min = 1
on-expire = "{"servfail" if servfail else "serve-stale"}"
"""
        )
        return load_config(path).zones[0]


soa_values = st.integers(min_value=1, max_value=600)
operations = st.one_of(
    st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=900.0)),
    st.tuples(st.just("complete"), st.integers(min_value=0, max_value=2**16)),
    st.tuples(st.just("complete"), st.integers(min_value=0, max_value=2**16)),
    st.tuples(st.just("complete"), st.integers(min_value=0, max_value=2**16)),
    st.tuples(st.just("complete"), st.integers(min_value=0, max_value=2**16)),
    st.tuples(st.just("notify"), st.integers(min_value=0, max_value=2)),
    st.tuples(st.just("refresh"), st.integers(min_value=0, max_value=2)),
    st.tuples(st.just("retransfer"), st.integers(min_value=0, max_value=2)),
    st.tuples(st.just("command"), st.integers(min_value=0, max_value=11)),  # approve, ...
)
COMMANDS = ("approve", "reject", "rollback", "unpin")


def result_for(action: lc.Action, choice: int, serial: int, soa: SoaTimers) -> lc.Event:
    ok = choice % 4 != 0
    # Now and then the primary is a secondary itself: its EDNS EXPIRE (RFC 7314), 0..600 s.
    expire = (choice // 7) % 601 if choice % 3 == 0 else None
    match action:
        case lc.QuerySoa():
            if not ok:
                return lc.SoaChecked(None, "down", "p")
            return lc.SoaChecked(serial + choice % 2, primary="p", expire=expire)
        case lc.Transfer(axfr):
            if not ok:
                return lc.Transferred(False, None, not axfr, "cut")
            if choice % 5 == 1:  # up to date
                return lc.Transferred(True, None, not axfr, primary="p", expire=expire)
            new = SoaTimers(serial + 1, soa.refresh, soa.retry, soa.expire)
            return lc.Transferred(True, new, not axfr, primary="p", expire=expire)
        case lc.Verify():
            return lc.Verified(ok, "" if ok else "cname-other-data: x")
        case lc.Store():
            return lc.Stored(ok, "" if ok else "disk full")
        case lc.Publish():
            return lc.Published(ok)
        case lc.Guard():
            return lc.Guarded(choice % 3 != 0, "rrsets-removed: 9 of 10", f"{choice % 2}" * 96)
        case lc.Hold(_, reason, digest):
            return lc.HeldStored(ok, "" if ok else "disk full", reason, digest)
        case lc.Load(wanted):
            return lc.Loaded(SoaTimers(wanted, soa.refresh, soa.retry, soa.expire) if ok else None)
    raise AssertionError(action)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zones=st.integers(min_value=1, max_value=3),
    refresh=soa_values,
    retry=soa_values,
    expire=soa_values,
    servfail=st.booleans(),
    stored=st.booleans(),
    steps=st.lists(operations, min_size=1, max_size=60),
)
@example(  # the reproduction: SOA 1 3600 3600 8 60, the primary stops answering
    zones=1,
    refresh=3600,
    retry=3600,
    expire=8,
    servfail=True,
    stored=True,
    steps=[("advance", 3.0), ("complete", 2), ("advance", 5.0), ("advance", 60.0)],
)
@example(  # a primary's EDNS EXPIRE that runs out while the version is verified and guarded
    zones=1,
    refresh=1,
    retry=1,
    expire=51,
    servfail=False,
    stored=True,
    steps=[
        ("advance", 1.0),
        ("complete", 1),
        ("complete", 339),
        ("advance", 49.0),
        ("complete", 1),
        ("complete", 0),
        ("complete", 1),
    ],
)
@example(  # expiry while a transfer is in flight
    zones=2,
    refresh=3600,
    retry=3600,
    expire=8,
    servfail=False,
    stored=True,
    steps=[("advance", 3.0), ("complete", 1), ("advance", 30.0)],
)
@example(  # hold, approve, rollback (pin), a held version while pinned, reject, unpin
    zones=1,
    refresh=600,
    retry=600,
    expire=600,
    servfail=False,
    stored=True,
    steps=[
        ("refresh", 0),
        *[("complete", c) for c in (1, 2, 2, 3, 3)],  # SOA, IXFR, verified, tripped, held
        ("command", 0),  # approve
        *[("complete", 1)] * 3,  # loaded, stored, published
        ("command", 2),  # rollback
        *[("complete", 1)] * 3,
        ("refresh", 0),
        *[("complete", c) for c in (1, 2, 2, 3, 3)],  # held: pinned
        ("command", 1),  # reject
        ("command", 3),  # unpin
        *[("complete", c) for c in (1, 2, 2, 1, 1, 1)],
    ],
)
def test_every_action_is_performed_and_expiry_is_on_time(
    zones: int,
    refresh: int,
    retry: int,
    expire: int,
    servfail: bool,
    stored: bool,
    steps: list[tuple[str, float]],
) -> None:
    lines = LogLines()
    logger = logging.getLogger("authd.xfr")
    logger.addHandler(lines)
    # setLevel, not an assignment: it also clears the logger's isEnabledFor cache, which an
    # earlier test may have filled while the level was WARNING.
    logger.propagate = False  # captured here, not printed
    logger.setLevel(logging.INFO)
    try:
        drive(zones, refresh, retry, expire, servfail, stored, steps, lines)
    finally:
        logger.removeHandler(lines)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def drive(
    zones: int,
    refresh: int,
    retry: int,
    expire: int,
    servfail: bool,
    stored: bool,
    steps: list[tuple[str, float]],
    lines: LogLines,
) -> None:
    clock = FakeClock(now=T0)
    loop = FakeLoop(clock)
    soa = SoaTimers(1, refresh, retry, expire)
    copy = FakeSnapshot(FakeSoa(1, refresh, retry, expire)) if stored else None
    host, io, writer = FakeHost(copy), FakeIo(), FakeWriter()
    problems: list[str] = []
    expiries: list[tuple[float, float]] = []

    def observe(entry: ZoneEntry, event: lc.Event, actions: list[lc.Action]) -> None:
        record, origin = entry.record, entry.origin
        wakes = [a for a in actions if isinstance(a, lc.Wake)]
        if len(wakes) != 1:
            problems.append(f"{len(wakes)} wake-ups in one step")
        elif shell.scheduler.heap.get(origin) != wakes[0].at:
            problems.append(f"wake-up at {wakes[0].at} not scheduled")
        logged, lines.messages = lines.messages, []
        for action in actions:
            if isinstance(action, lc.Log) and f"zone {entry.name}: {action.message}" not in logged:
                problems.append(f"log line not written: {action.message}")
            if isinstance(action, lc.IO_ACTIONS) and (origin, action) not in io.started[-1:]:
                problems.append(f"{action} not started")
            if isinstance(action, lc.Persist) and writer.marked.get(origin) != lc.persisted(record):
                problems.append("Persist did not reach the writer with the current record")
            if isinstance(action, lc.SetServing) and host.servfail.get(origin) != (
                action.servfail,
                action.expired_at,
            ):
                problems.append("SetServing not applied")
            if isinstance(action, lc.SetExpiry) and host.expiry.get(origin) != action.expires_at:
                problems.append("SetExpiry not applied")
            if isinstance(action, lc.Discard) and entry.candidate is not None:
                problems.append("candidate not dropped")
            if isinstance(action, lc.DropHeld) and io.dropped[-1:] != [origin]:
                problems.append("held version not dropped")
        entries = [(origin, a.event, a.serial) for a in actions if isinstance(a, lc.Record)]
        if entries and host.records[-len(entries) :] != entries:
            problems.append(f"ledger entries {entries} not recorded")
        if isinstance(event, lc.HeldStored) and event.ok and record.held is None:
            problems.append("a stored hold is not held")
        dropped = any(isinstance(a, lc.DropHeld) for a in actions)
        if before_held.get(origin) and record.held is None and not dropped:
            problems.append("a hold ended without DropHeld")
        before_held[origin] = record.held is not None
        if record.expires_at != deadlines.get(origin, (None, 0.0))[0]:
            deadlines[origin] = (record.expires_at, clock.now())
        if record.state is lc.State.EXPIRED and before_state.get(origin) in (
            lc.State.OK,
            lc.State.REFRESHING,
        ):
            assert record.expires_at is not None
            # Due at expires_at, or at once when the deadline was learned already past (a
            # primary's EDNS EXPIRE that ran out while the version was verified and guarded).
            expiries.append((clock.now(), max(record.expires_at, deadlines[origin][1])))
        before_state[origin] = record.state

    before_state: dict[bytes, lc.State] = {}
    before_held: dict[bytes, bool] = {}
    deadlines: dict[bytes, tuple[float | None, float]] = {}  # expires_at, and when it was set
    shell = Secondaries(
        host,  # type: ignore[arg-type]
        io,
        clock,
        rand=lambda: 0.5,
        writer=writer,
        call_later=loop.call_later,
        observer=observe,
    )
    origins = []
    for index in range(zones):
        config = zone_config(index, servfail)
        shell.add(config, spread=5.0)
        origins.append(config.origin)

    for kind, value in steps:
        if kind == "advance":
            loop.run_until(clock.now() + value)
        elif kind == "complete" and io.pending:
            pending = io.pending.pop(int(value) % len(io.pending))
            served = pending.entry.record.served
            serial = served.serial if served is not None else 1
            result = result_for(pending.action, int(value), serial, soa)
            # As the real operations do: a transfer or a load leaves the candidate, publish
            # takes it.
            if (isinstance(result, lc.Transferred) and result.candidate is not None) or (
                isinstance(result, lc.Loaded) and result.candidate is not None
            ):
                pending.entry.candidate = object()  # type: ignore[assignment]
            if isinstance(result, lc.Published):
                pending.entry.candidate = None
            pending.done(result)
        elif kind == "notify":
            shell.post(origins[int(value) % zones], lc.NotifyReceived(None, "127.0.0.1"))
        elif kind == "refresh":
            shell.post(origins[int(value) % zones], lc.ForceRefresh())
        elif kind == "retransfer":
            shell.post(origins[int(value) % zones], lc.ForceRetransfer())
        elif kind == "command":
            origin = origins[int(value) // 4 % zones]
            held = shell.zones[origin].record.held
            command = COMMANDS[int(value) % 4]
            if command == "approve":
                shell.post(origin, lc.Approve(held.serial if held else None))
            elif command == "reject":
                shell.post(origin, lc.Reject(held.serial if held else 7))
            elif command == "rollback":
                shell.post(origin, lc.Rollback(1))
            else:
                shell.post(origin, lc.Unpin())
        assert not problems, problems
        for origin in origins:
            record = shell.zones[origin].record
            # Never late: a loaded zone past expires_at has been expired by its wake-up.
            if record.state in (lc.State.OK, lc.State.REFRESHING):
                assert record.expires_at is None or record.expires_at > clock.now() - EPSILON
            # Never later than a full SOA expire after the last success (RFC 7314 4).
            if record.expires_at is not None and record.last_success is not None:
                assert record.expires_at <= record.last_success + record.expire + EPSILON
            busy = [p for p in io.pending if p.entry.origin == origin]
            assert len(busy) == (1 if record.busy else 0)
            candidate = shell.zones[origin].candidate
            assert candidate is None or record.downloaded is not None
            if record.phase in (lc.Phase.VERIFY, lc.Phase.STORE):
                assert candidate is not None
    for at, expires_at in expiries:
        assert abs(at - expires_at) < EPSILON, (at, expires_at)


async def test_a_removed_zone_stops_and_its_late_results_are_dropped() -> None:
    clock = FakeClock(now=T0)
    loop = FakeLoop(clock)
    host, io, writer = FakeHost(None), FakeIo(), FakeWriter()
    shell = Secondaries(host, io, clock, writer=writer, call_later=loop.call_later)  # type: ignore[arg-type]
    config = zone_config(0, False)
    shell.add(config)
    shell.post(config.origin, lc.ForceRefresh())
    (pending,) = io.pending
    assert shell.scheduler.heap.get(config.origin) is None  # busy, never loaded: no expiry
    writer.marked[config.origin] = {}
    await shell.remove(config.origin)
    assert io.pending == [] and config.origin not in writer.marked
    pending.done(lc.SoaChecked(5, primary="p"))  # the answer arrives after the removal
    assert config.origin not in shell.zones and len(io.started) == 1
    loop.run_until(T0 + 7200)
    assert len(io.started) == 1  # no wake-up left behind for it


async def test_a_zone_added_again_while_its_removal_waits_is_kept() -> None:
    """A catalog member removed and listed again at once (or a reload): the removal forgets
    the old entry when it is asked for, so finishing it never drops the new one."""
    clock = FakeClock(now=T0)
    loop = FakeLoop(clock)
    host, io, writer = FakeHost(None), FakeIo(), FakeWriter()
    shell = Secondaries(host, io, clock, writer=writer, call_later=loop.call_later)  # type: ignore[arg-type]
    config = zone_config(0, False)
    old = shell.add(config)
    removal = shell.remove(config.origin)  # not awaited yet, as in a background task
    new = shell.add(config)
    await removal
    assert shell.zones[config.origin] is new and new is not old


async def test_other_wake_ups_share_the_one_scheduler() -> None:
    """A per-zone wake-up of another kind (the drift rounds) sits in the same heap and timer
    as the zones' machines, and goes to its own handler, never to the machine."""
    clock = FakeClock(now=T0)
    loop = FakeLoop(clock)
    host, io, writer = FakeHost(None), FakeIo(), FakeWriter()
    shell = Secondaries(host, io, clock, writer=writer, call_later=loop.call_later)  # type: ignore[arg-type]
    config = zone_config(0, False)
    shell.add(config)
    woken: list[tuple[bytes, float]] = []
    set_drift = shell.schedule("drift", lambda origin: woken.append((origin, clock.now())))
    set_drift(config.origin, T0 + 30)
    set_drift(b"\x05other\x00", T0 + 20)
    set_drift(b"\x05other\x00", None)  # unset
    assert len(loop.live()) == 1  # one timer for everything
    loop.run_until(T0 + 31)
    assert woken == [(config.origin, T0 + 30)]
    assert shell.scheduler.heap.get(("drift", config.origin)) is None
    # the machine's own wake-up (due at start: no copy) started its one SOA query; the
    # drift wake-up started nothing more
    assert len(io.started) == 1


async def test_a_step_that_raises_does_not_wedge_the_zone() -> None:
    """A bug in one step (here: the observer) while another event waits in the zone's queue:
    the waiting event is still stepped, and so are later ones."""
    clock = FakeClock(now=T0)
    loop = FakeLoop(clock)
    host, io, writer = FakeHost(None), FakeIo(), FakeWriter()
    failures = [lc.Start]

    def observe(entry: ZoneEntry, event: lc.Event, actions: list[lc.Action]) -> None:
        if failures and isinstance(event, failures[0]):
            failures.pop()
            shell.post(entry.origin, lc.ForceRefresh())  # queued behind this step
            raise RuntimeError("a bug in this step")

    shell = Secondaries(
        host,
        io,  # type: ignore[arg-type]
        clock,
        writer=writer,
        call_later=loop.call_later,
        observer=observe,
    )
    config = zone_config(0, False)
    shell.add(config)
    assert not failures and shell.zones[config.origin].events == deque()
    # The queued refresh: nothing served yet, so straight to the AXFR (no SOA query).
    assert [type(action) for _, action in io.started] == [lc.Transfer]
    io.pending.pop().done(lc.Transferred(False, error="refused"))
    shell.post(config.origin, lc.ForceRefresh())  # later events are stepped too
    assert [type(action) for _, action in io.started] == [lc.Transfer, lc.Transfer]


async def test_a_removal_waits_for_the_timers_batch_holding_its_record() -> None:
    """The zone's last record may be in a batch being written when it is removed: the
    removal ends after that write (which recreates the zone's directory), so a catalog
    member's data is set aside or purged only afterwards."""
    clock = FakeClock(now=T0)
    loop = FakeLoop(clock)
    host, io = FakeHost(None), FakeIo()
    entered, release = threading.Event(), threading.Event()

    def save(batch: Mapping[bytes, Mapping[str, TimerValue]]) -> dict[bytes, StoreError]:
        entered.set()
        release.wait(5)
        return {}

    writer = TimerWriter(save, lambda zone, error: None, delay=0.0)
    shell = Secondaries(host, io, clock, writer=writer, call_later=loop.call_later)  # type: ignore[arg-type]
    config = zone_config(0, False)
    shell.add(config)  # Start persists the record
    for _ in range(500):
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    assert entered.is_set()
    removal = asyncio.ensure_future(shell.remove(config.origin))
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert not removal.done()
    release.set()
    await asyncio.wait_for(removal, 5)
    await writer.close()
