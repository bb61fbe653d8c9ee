"""The shell around the zone lifecycle machine (authd/zone/lifecycle.py), for every zone.

It performs every action the machine emits and feeds each result back as an event:

    QuerySoa, Transfer, Verify, Store, Publish -> Operations (asyncio; one task while busy)
                                                  -> SoaChecked / Transferred / Verified /
                                                     Stored / Published
    Wake(at)       -> the one Scheduler for all zones (a heap, one asyncio timer) -> TimerFired
    Persist        -> the TimerWriter (batched, off the event loop)
    SetServing     -> the Publisher port (authd/publish.py)
    SetExpiry      -> the Publisher port, with the zone's signature horizon
    Discard        -> the candidate version is dropped
    Log            -> one log line, prefixed with the zone

An idle zone is one record and one heap entry: no task, coroutine or timer. A zone
with an operation in flight has exactly one task (waiting for a pacing slot or on
the network), which never spins.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from authd.clock import Clock
from authd.config import ZoneConfig
from authd.metrics import ControlPlaneStats
from authd.publish import Publisher
from authd.xfr import serial as serials
from authd.xfr.guarding import RrsetCount
from authd.xfr.operations import (
    Candidate,
    Operations,
    Pacer,
    is_signed,
    remove_stale_candidates,
    soa_of,
)
from authd.xfr.scheduler import CallLater, Scheduler
from authd.xfr.timers import Settings
from authd.zone import heldstore
from authd.zone import lifecycle as lc
from authd.zone.snapshot import Snapshot
from authd.zone.store import Store, StoreError
from authd.zone.timerstore import TimerValue
from authd.zone.timerwriter import TimerWriter

__all__ = [
    "Host",
    "Operations",
    "Pacer",
    "Secondaries",
    "ZoneEntry",
    "remove_stale_candidates",
    "settings_for",
    "startup_spread",
]

log = logging.getLogger("authd.xfr")

WakeKey = bytes | tuple[str, bytes]  # a zone's machine, or (kind, zone) of other work
WakeSetter = Callable[[bytes, float | None], None]


class Host(Publisher, Protocol):
    """What the secondaries need from the application: the Publisher port, stats, store."""

    stats: ControlPlaneStats

    @property
    def store(self) -> Store: ...

    def served_snapshot(self, origin: bytes) -> Snapshot | None:
        """The version serving answers from (the base of an IXFR)."""
        ...

    async def load_version(self, origin: bytes, serial: int) -> Snapshot:
        """A version from the zone's history (a rollback's Load)."""
        ...

    def record_event(
        self, origin: bytes, event: str, serial: int | None, digest: str, reason: str
    ) -> None:
        """One ledger entry (held, approved, rejected, pinned, unpinned)."""
        ...


def settings_for(zone: ZoneConfig, startup_spread: float = 0.0) -> Settings:
    """The machine's settings for a zone's config."""
    bounds = zone.timers
    return Settings(
        startup_spread=startup_spread,
        refresh_min=bounds.refresh_min,
        refresh_max=bounds.refresh_max,
        retry_min=bounds.retry_min,
        retry_max=bounds.retry_max,
        expire_min=bounds.expire_min,
        expire_max=bounds.expire_max,
        servfail_on_expire=zone.on_expire == "servfail",
        rollback_after=zone.serial_rollback_after,
    )


def startup_spread(secondaries: int) -> float:
    """First checks after start spread over ~1 ms per zone (at most 10 s): never a burst.
    The pacer bounds what runs at once; 20 ms per zone made a 1,000-zone first load take
    at least 10 s (knotd: 2.4 s)."""
    return min(10.0, 0.001 * secondaries)


@dataclass
class ZoneEntry:
    """One zone in the shell: its record (the truth) and the handles of what is in flight."""

    config: ZoneConfig
    record: lc.Zone
    candidate: Candidate | None = None  # exists exactly while record.downloaded is set
    operation: asyncio.Task[Any] | None = None  # the one task while an action is in flight
    background: asyncio.Task[Any] | None = None  # the horizon scan of a stored copy
    preferred: int = 0  # index into the primaries: the last one that worked
    horizon: int | None = None  # earliest RRSIG expiration of the served version
    signed: bool = False
    last_rejection: str | None = None
    held: Candidate | None = None  # the held version in memory (also on disk)
    staged: Snapshot | None = None  # a rollback's version, loaded by the control command
    rrsets: RrsetCount | None = None  # the served version's RRset count (change guard)
    events: deque[lc.Event] = field(default_factory=deque)
    # Control commands waiting for the record to reach a state (approve, rollback).
    waiters: list[tuple[Callable[[lc.Zone], bool], asyncio.Future[None]]] = field(
        default_factory=list
    )

    async def until(self, condition: Callable[[lc.Zone], bool], timeout: float) -> bool:
        """Wait (at most `timeout` s) until a step leaves the record satisfying `condition`."""
        if condition(self.record):
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (condition, future)
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def _woken(self) -> None:
        for condition, future in list(self.waiters):
            if not future.done() and condition(self.record):
                future.set_result(None)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def origin(self) -> bytes:
        return self.config.origin

    def status(self) -> dict[str, object]:
        z = self.record
        return {
            "state": z.state.value,
            "serial": z.served.serial if z.served is not None else None,
            "primary_serial": z.primary.serial if z.primary is not None else None,
            "primary": z.primary.source if z.primary is not None else None,
            "downloaded_serial": z.downloaded.serial if z.downloaded is not None else None,
            "notified_serial": z.notified.serial if z.notified is not None else None,
            "notified_at": z.notified.at if z.notified is not None else None,
            "last_attempt": z.last_attempt,
            "last_success": z.last_success,
            "next_refresh": z.next_refresh,
            "expires_at": z.expires_at,
            "last_outcome": z.outcome.value,
            "last_error": z.last_error or None,
            "last_rejection": self.last_rejection,
            "signature_horizon": self.horizon,
            "in_flight": z.phase.value,
            "held_serial": z.held.serial if z.held is not None else None,
            "held_reason": z.held_reason if z.held is not None else None,
            "held_at": z.held.at if z.held is not None else None,
            "held_until": z.held_until,
            "pinned": z.pinned,
            "edns_expire": z.edns_expire,
            "edns_expire_received_at": z.edns_expire_at,
        }


class IoActions(Protocol):
    """Starts an I/O action; its result comes back through `done` exactly once."""

    def start(
        self, entry: ZoneEntry, action: lc.Action, done: Callable[[lc.Event], None]
    ) -> None: ...

    def cancel(self, entry: ZoneEntry) -> None: ...

    def drop_held(self, entry: ZoneEntry) -> None:
        """Remove the zone's held version (from disk and memory)."""
        ...

    def loaded(self, entry: ZoneEntry, snapshot: Snapshot) -> None:
        """The zone starts from a stored copy (scan it for the signature horizon)."""
        ...


class Persister(Protocol):
    """Where Persist goes (TimerWriter: batched, off the loop)."""

    def mark(self, zone: bytes, record: Mapping[str, TimerValue]) -> None: ...

    def forget(self, zone: bytes) -> None: ...

    async def flush(self) -> None:
        """Write what is marked now (a control command answers after it is durable)."""
        ...

    async def idle(self) -> None:
        """Return once no batch is being written."""
        ...

    async def close(self) -> None: ...


class Secondaries:
    """Every secondary zone: machine steps, the one scheduler, the operations."""

    def __init__(
        self,
        host: Host,
        io: IoActions,
        clock: Clock,
        *,
        rand: Callable[[], float] = random.random,
        writer: Persister | None = None,
        call_later: CallLater | None = None,
        observer: Callable[[ZoneEntry, lc.Event, list[lc.Action]], None] | None = None,
    ) -> None:
        self.host = host
        self.io = io
        self.clock = clock
        self.rand = rand
        self.zones: dict[bytes, ZoneEntry] = {}
        # Other periodic work per zone shares the one scheduler: keys (kind, origin).
        self.wakers: dict[str, Callable[[bytes], None]] = {}
        self.scheduler: Scheduler[WakeKey] = (
            Scheduler(clock, self._wake, call_later)
            if call_later is not None
            else Scheduler(clock, self._wake)
        )
        self.writer: Persister = writer or TimerWriter(
            host.store.save_timers_batch, self._persist_failed
        )
        self.observer = observer  # sees every step (tests check that actions are performed)

    # -- zones --------------------------------------------------------------------------

    def add(self, config: ZoneConfig, *, spread: float = 0.0) -> ZoneEntry:
        served = self.host.served_snapshot(config.origin)
        record = lc.Zone(settings_for(config, spread), hold_timeout=config.guard.hold_timeout)
        entry = ZoneEntry(config, record)
        self.zones[config.origin] = entry
        if served is not None:
            entry.signed = is_signed(served)
            self.io.loaded(entry, served)
        stored = self.host.store.load_timers(config.origin)
        if served is not None:
            stored = self._held_on_disk(config, served.soa.serial, stored)
        self.post(config.origin, lc.Start(soa_of(served) if served else None, stored))
        return entry

    def _held_on_disk(
        self, config: ZoneConfig, served: int, stored: dict[str, TimerValue] | None
    ) -> dict[str, TimerValue] | None:
        """The held version file is the truth (it is durable before the record says held):
        a record naming a held version that is gone forgets it; a held version newer than
        the served one that the record (written up to 0.2 s later) missed is adopted."""
        on_disk = heldstore.held_serial(self.host.store, config.origin)
        record = dict(stored or {})
        if record.get("held_serial") is not None and on_disk != record["held_serial"]:
            log.warning("zone %s: the held version is gone from disk: not held", config.name)
            return {k: v for k, v in record.items() if not k.startswith("held_")}
        if record.get("held_serial") is None and on_disk is not None:
            if not serials.is_newer(on_disk, served):
                return stored  # approved and published just before a crash
            log.warning("zone %s: serial %d is held (found on disk)", config.name, on_disk)
            record.update(
                held_serial=on_disk,
                held_at=self.clock.now(),
                held_source="",
                held_reason="held before a restart (the reason was not saved)",
            )
            return record
        return stored

    def remove(self, origin: bytes) -> Coroutine[Any, Any, None]:
        """Forget the zone now (a zone added again right after is a new entry, never the
        one being removed); the returned coroutine waits for its operations to end."""
        entry = self.zones.pop(origin, None)
        if entry is None:
            return _wait_cancelled(())
        self.scheduler.discard(origin)
        self.writer.forget(origin)
        self.io.cancel(entry)
        return _removed(self.writer, [entry.operation, entry.background])

    def post(self, origin: bytes, event: lc.Event) -> None:
        """Step the zone's machine with one event now (events queue while a step runs)."""
        entry = self.zones.get(origin)
        if entry is None:
            return  # removed meanwhile: late results are dropped with it
        entry.events.append(event)
        if len(entry.events) > 1:
            return  # the step below is draining the queue
        while entry.events:
            # A bug in one step must not wedge the queue: an exception leaving this loop
            # would strand the events queued behind it, and every later post() would
            # only queue behind them. Log it and go on with the next event.
            try:
                self._step(entry, entry.events[0])
            except Exception:
                log.exception("zone %s: step failed on %r", entry.name, entry.events[0])
            finally:
                entry.events.popleft()

    def schedule(self, kind: str, handler: Callable[[bytes], None]) -> WakeSetter:
        """A per-zone wake-up of another kind in the one scheduler: `handler(origin)` is
        called when due; set it with the returned `set(origin, at)` (None: unset)."""
        self.wakers[kind] = handler
        return lambda origin, at: self.scheduler.set((kind, origin), at)

    def _wake(self, due: list[WakeKey]) -> None:
        for key in due:
            try:
                if isinstance(key, tuple):
                    self.wakers[key[0]](key[1])
                else:
                    self.post(key, lc.TimerFired())
            except Exception:  # one zone's bug must not stop the others' wake-ups
                log.exception("zone %r: step failed", key)

    # -- one step ---------------------------------------------------------------------------

    def _step(self, entry: ZoneEntry, event: lc.Event) -> None:
        before = entry.record
        entry.record, actions = lc.step(before, event, self.clock.now(), rand=self.rand)
        if entry.record.state is not before.state:
            served = entry.record.served.serial if entry.record.served else None
            log.info(
                "zone %s: %s -> %s (serial %s)",
                entry.name,
                before.state.value,
                entry.record.state.value,
                served,
                extra={"zone": entry.name, "serial": served},
            )
        for action in actions:
            self._perform(entry, action)
        if self.observer is not None:
            self.observer(entry, event, actions)
        if entry.waiters:
            entry._woken()

    def _perform(self, entry: ZoneEntry, action: lc.Action) -> None:
        origin = entry.origin
        match action:
            case (
                lc.QuerySoa()
                | lc.Transfer()
                | lc.Verify()
                | lc.Guard()
                | lc.Hold()
                | lc.Load()
                | lc.Store()
                | lc.Publish()
            ):
                self.io.start(entry, action, lambda event: self.post(origin, event))
            case lc.DropHeld():
                self.io.drop_held(entry)
            case lc.Record(event, serial, digest, reason):
                self.host.record_event(origin, event, serial, digest, reason)
            case lc.Wake(at):
                self.scheduler.set(origin, at)
            case lc.Persist():
                self.writer.mark(origin, lc.persisted(entry.record))
            case lc.SetServing(servfail, expired_at):
                self.host.set_servfail(origin, servfail, expired_at)
            case lc.SetExpiry(expires_at):
                self.host.set_expiry(origin, expires_at, entry.horizon)
            case lc.Discard():
                entry.candidate = None
            case lc.Log(level, message):
                log.log(
                    logging.getLevelName(level.upper()),
                    "zone %s: %s",
                    entry.name,
                    message,
                    extra={"zone": entry.name},
                )
            case _:
                raise TypeError(f"no performer for {action!r}")

    def _persist_failed(self, origin: bytes, error: StoreError) -> None:
        entry = self.zones.get(origin)
        name = entry.name if entry is not None else origin.decode(errors="replace")
        self.host.stats.store_failures[name] += 1
        log.error("zone %s: timers not saved: %s", name, error)

    # -- shutdown -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Cancel every operation at once (SIGTERM must not wait zone by zone), save timers."""
        self.scheduler.close()
        for entry in self.zones.values():
            self.io.cancel(entry)
        await _wait_cancelled(
            task for entry in self.zones.values() for task in (entry.operation, entry.background)
        )
        await self.writer.close()


async def _removed(writer: Persister, tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """A removed zone's operations have ended, and no timers batch still writes its record
    (it would recreate the zone's directory after the catalog set it aside or purged it)."""
    await _wait_cancelled(tasks)
    await writer.idle()


async def _wait_cancelled(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    pending = [task for task in tasks if task is not None and not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=5.0)
