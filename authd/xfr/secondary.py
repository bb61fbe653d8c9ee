"""One task per secondary zone: timers -> SOA check -> transfer -> verify -> store -> publish.

The decisions are the pure state machine in timers.py; this module runs its actions
(SOA queries, transfers, persisting the timers) and feeds the results back as events.
Everything a transfer produces goes through, in this order:

    transfer (several primaries, the last good one first)
      -> verify (structure, limits, DNSSEC, ZONEMD; full checks in the validation pool)
      -> store (full copy for AXFR, journal append for IXFR; durable before visible)
      -> publish (the main's table, then every worker, acknowledged)

A failure at any step leaves the served version and the stored copy as they were, and
says why: a log line, a metric and `authd zone status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import dns.tsig

from authd.config import Remote, TransferConfig, ZoneConfig
from authd.metrics import ControlPlaneStats
from authd.publish import Publisher
from authd.xfr import timers as machine
from authd.xfr.policy import policy_for
from authd.xfr.stream import Kind, TransferLimits
from authd.xfr.transfer import Outcome, TransferResult, query_soa, transfer
from authd.zone import names
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import DNSKEY, Snapshot, SoaFields, is_sig_type, unpack_node
from authd.zone.store import Store, StoreError, encode_full
from authd.zone.verify import ValidationPool, Verdict, needs_full_check, touched_owners, verify

log = logging.getLogger("authd.xfr")

DNSKEY_TYPE, ZONEMD_TYPE = 48, 63
FULL_CHECK_INLINE_RECORDS = 20_000  # smaller versions are verified in a thread, not the pool


def _needs_crypto(snapshot: Snapshot) -> bool:
    """The version carries keys or a ZONEMD, so a full check hashes or verifies signatures."""
    apex = snapshot.node(snapshot.origin) or {}
    return DNSKEY_TYPE in apex or ZONEMD_TYPE in apex


class Host(Publisher, Protocol):
    """What a secondary zone needs from the application: the Publisher port, stats, store."""

    stats: ControlPlaneStats

    @property
    def store(self) -> Store: ...


@dataclass
class Pacer:
    """Caps on transfers in total and per primary, and on SOA checks in flight."""

    config: TransferConfig
    transfers: asyncio.Semaphore = field(init=False)
    soa_checks: asyncio.Semaphore = field(init=False)
    per_primary: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.transfers = asyncio.Semaphore(self.config.max_concurrent)
        self.soa_checks = asyncio.Semaphore(self.config.max_soa_checks_in_flight)

    def primary(self, address: str) -> asyncio.Semaphore:
        semaphore = self.per_primary.get(address)
        if semaphore is None:
            semaphore = self.per_primary[address] = asyncio.Semaphore(self.config.max_per_primary)
        return semaphore


def settings_for(zone: ZoneConfig, zone_count: int = 1) -> machine.Settings:
    """The machine's settings; first checks after start spread over ~20 ms per zone (max 10 s)."""
    bounds = zone.timers
    return machine.Settings(
        startup_spread=min(10.0, 0.02 * zone_count),
        refresh_min=bounds.refresh_min,
        refresh_max=bounds.refresh_max,
        retry_min=bounds.retry_min,
        retry_max=bounds.retry_max,
        expire_min=bounds.expire_min,
        expire_max=bounds.expire_max,
        servfail_on_expire=zone.on_expire == "servfail",
        rollback_after=zone.serial_rollback_after,
    )


def soa_timers(soa: SoaFields) -> machine.SoaTimers:
    return machine.SoaTimers(soa.serial, soa.refresh, soa.retry, soa.expire)


_PERSISTED = (
    "served_serial",
    "served_at",
    "primary_serial",
    "primary_seen_at",
    "notified_serial",
    "notified_at",
    "last_attempt",
    "last_success",
    "next_refresh",
    "expires_at",
    "last_error",
)


def timers_record(timers: machine.ZoneTimers) -> dict[str, int | float | str | None]:
    record: dict[str, int | float | str | None] = {n: getattr(timers, n) for n in _PERSISTED}
    record["state"] = timers.state.value
    return record


@dataclass
class Candidate:
    """A transferred version on its way to being served."""

    result: TransferResult
    primary: str
    snapshot: Snapshot
    full: bool  # replaces the zone (AXFR or AXFR-style IXFR), else IXFR steps


class SecondaryZone:
    def __init__(
        self,
        config: ZoneConfig,
        host: Host,
        pacer: Pacer,
        validation: ValidationPool,
        transfer_config: TransferConfig,
        *,
        current: Snapshot | None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        zone_count: int = 1,
    ) -> None:
        self.config = config
        self.host = host
        self.pacer = pacer
        self.validation = validation
        self.transfer_config = transfer_config
        self.current = current
        self.clock = clock
        self.rand = rand
        self.timers = machine.ZoneTimers(settings_for(config, zone_count))
        self.events: deque[machine.Event] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.operation: asyncio.Task[None] | None = None
        self.horizon_task: asyncio.Task[None] | None = None
        self.preferred = 0  # index into the primaries: the last one that worked
        self.last_primary: str | None = None
        self.last_rejection: str | None = None
        self.horizon: int | None = None
        self.signed = current is not None and _is_signed(current)

    @property
    def name(self) -> str:
        return self.config.name

    # -- the event loop of one zone -------------------------------------------------------

    def start(self) -> None:
        stored = self.host.store.load_timers(self.config.origin) or {}
        served = soa_timers(self.current.soa) if self.current is not None else None
        self.post(
            machine.Start(
                served,
                _float(stored.get("last_success")) if served else None,
                _float(stored.get("next_refresh")) if served else None,
            )
        )
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run(), name=f"zone {self.name}")
        if self.current is not None and self.signed:
            self.horizon_task = loop.create_task(self._restore_horizon(self.current))

    async def _restore_horizon(self, snapshot: Snapshot) -> None:
        """The signature horizon of a version loaded from disk (no crypto: a scan)."""
        horizon = await asyncio.to_thread(earliest_expiration, snapshot, self.clock())
        if self.current is snapshot:
            self.horizon = horizon
            self._warn_horizon()

    async def stop(self) -> None:
        for task in (self.operation, self.task, self.horizon_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def post(self, event: machine.Event) -> None:
        self.events.append(event)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            while self.events:
                self._step(self.events.popleft())
            delay = max(0.0, self.timers.next_refresh - self.clock())
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=min(delay, 3600.0))
            if not self.events and self.clock() >= self.timers.next_refresh:
                self._step(machine.TimerFired())

    def _step(self, event: machine.Event) -> None:
        previous = self.timers.state
        self.timers, actions = machine.step(self.timers, event, self.clock(), rand=self.rand)
        if self.timers.state is not previous:
            log.info(
                "zone %s: %s -> %s (serial %s)",
                self.name,
                previous.value,
                self.timers.state.value,
                self.timers.served_serial,
                extra={"zone": self.name, "serial": self.timers.served_serial},
            )
        for action in actions:
            self._run_action(action)

    def _run_action(self, action: machine.Action) -> None:
        match action:
            case machine.QuerySoa():
                self._begin(self._check_soa())
            case machine.Transfer(axfr, forced):
                self._begin(self._transfer(axfr, forced))
            case machine.SetExpired(expired, servfail):
                level = logging.ERROR if expired else logging.INFO
                log.log(
                    level,
                    "zone %s: %s",
                    self.name,
                    "EXPIRED: no successful refresh for SOA expire; "
                    + ("answering SERVFAIL" if servfail else "still serving the last good copy")
                    if expired
                    else "no longer expired",
                    extra={"zone": self.name, "serial": self.timers.served_serial},
                )
                expired_at = self.timers.expires_at if expired else None
                self.host.set_servfail(self.config.origin, servfail, expired_at)
            case machine.Persist():
                self._persist()
            case machine.Log(level, message):
                log.log(logging.getLevelName(level.upper()), "zone %s: %s", self.name, message)
            case machine.Schedule() | machine.Publish():
                pass  # the loop sleeps until next_refresh; publishing happened in the operation

    def _begin(self, operation: Coroutine[None, None, None]) -> None:
        self.operation = asyncio.get_running_loop().create_task(operation)
        self.operation.add_done_callback(self._operation_ended)

    def _operation_ended(self, task: asyncio.Task[None]) -> None:
        """A bug in an operation must not leave the machine waiting for it forever."""
        if task.cancelled() or task.exception() is None:
            return
        error = f"internal error: {task.exception()!r}"
        log.error("zone %s: %s", self.name, error, exc_info=task.exception())
        if self.timers.in_flight is machine.InFlight.SOA_QUERY:
            self.post(machine.SoaAnswer(None, error=error))
        elif self.timers.in_flight is machine.InFlight.TRANSFER:
            self.post(machine.TransferDone(False, None, False, error))

    def _persist(self) -> None:
        try:
            self.host.store.save_timers(self.config.origin, timers_record(self.timers))
        except StoreError as exc:
            self.host.stats.store_failures[self.name] += 1
            log.error("zone %s: timers not saved: %s", self.name, exc)

    # -- primaries ------------------------------------------------------------------------

    def _endpoints(self) -> list[tuple[Remote, tuple[str, int]]]:
        """Every primary address, starting with the remote that worked last."""
        remotes = list(self.config.primaries)
        ordered = remotes[self.preferred :] + remotes[: self.preferred]
        return [(remote, (a.host, a.port)) for remote in ordered for a in remote.addresses]

    def _remember(self, remote: Remote) -> None:
        self.preferred = list(self.config.primaries).index(remote)

    @staticmethod
    def _key(remote: Remote) -> dns.tsig.Key | None:
        return remote.key.to_dnspython() if remote.key is not None else None

    @staticmethod
    def _source(remote: Remote) -> str | None:
        return remote.source.host if remote.source is not None else None

    # -- operations -----------------------------------------------------------------------

    async def _check_soa(self) -> None:
        errors = []
        for remote, address in self._endpoints():
            label = f"{address[0]}@{address[1]}"
            async with self.pacer.soa_checks:
                result = await query_soa(
                    address,
                    self.config.origin,
                    self._key(remote),
                    self._source(remote),
                    clock=self.clock,
                    tls=remote.tls,
                )
            if result.outcome is Outcome.OK and result.serial is not None:
                self._remember(remote)
                self.last_primary = label
                self.post(machine.SoaAnswer(result.serial, primary=label))
                return
            if result.outcome is Outcome.BAD_TSIG:
                self.host.stats.tsig_failures[result.reason.split(":")[0]] += 1
            errors.append(f"{label}: {result.outcome.value}: {result.reason}")
            log.warning(
                "zone %s: SOA query to %s failed: %s",
                self.name,
                label,
                result.reason or result.outcome.value,
                extra={"zone": self.name, "primary": label, "reason": result.outcome.value},
            )
        self.post(machine.SoaAnswer(None, error="; ".join(errors) or "no primary configured"))

    async def _transfer(self, axfr: bool, forced: bool) -> None:
        was_ixfr = not axfr and self.current is not None and self.config.ixfr
        errors = []
        for remote, address in self._endpoints():
            label = f"{address[0]}@{address[1]}"
            async with self.pacer.transfers, self.pacer.primary(address[0]):
                result = await transfer(
                    self.config.origin,
                    address,
                    self._key(remote),
                    self._source(remote),
                    current=self.current,
                    force_axfr=axfr or forced or not self.config.ixfr,
                    limits=self._limits(),
                    deadline=self.transfer_config.timeout,
                    idle_timeout=self.transfer_config.idle_timeout,
                    clock=self.clock,
                    tls=remote.tls,
                )
            self._count(result)
            if result.outcome is Outcome.UP_TO_DATE:
                self._remember(remote)
                self.last_primary = label
                self.post(machine.TransferDone(True, None, was_ixfr, primary=label))
                return
            if result.outcome.success and result.snapshot is not None:
                self._remember(remote)
                self.last_primary = label
                full = result.kind is not Kind.IXFR
                candidate = Candidate(result, label, result.snapshot, full)
                error = await self._accept(candidate, forced)
                if error is None:
                    new = soa_timers(result.snapshot.soa)
                    self.post(machine.TransferDone(True, new, was_ixfr, primary=label))
                else:
                    self.post(machine.TransferDone(False, None, was_ixfr, error, label))
                return
            if result.outcome is Outcome.BAD_TSIG:
                self.host.stats.tsig_failures[result.reason.split(":")[0]] += 1
            errors.append(f"{label}: {result.outcome.value}: {result.reason}")
            log.warning(
                "zone %s: transfer from %s failed (%s): %s",
                self.name,
                label,
                result.outcome.value,
                result.reason,
                extra={"zone": self.name, "primary": label, "reason": result.outcome.value},
            )
        self.post(machine.TransferDone(False, None, was_ixfr, "; ".join(errors)))

    def _limits(self) -> TransferLimits:
        limits = self.config.limits
        return TransferLimits(
            max_records=limits.max_records,
            max_bytes=limits.max_bytes,
            max_rrset_records=limits.max_rrset_records,
            max_ixfr_records=limits.max_ixfr_diff_records,
        )

    def _count(self, result: TransferResult) -> None:
        stats = self.host.stats
        kind = result.kind.value if result.kind is not None else "none"
        stats.transfers[(self.name, kind, result.outcome.value)] += 1
        stats.transfer_seconds[self.name] += result.duration
        stats.transfer_bytes[self.name] += result.bytes_received
        stats.transfer_records[self.name] += result.records

    # -- verify, store, publish -------------------------------------------------------------

    async def _accept(self, candidate: Candidate, forced: bool) -> str | None:
        """Verify, store and publish a transferred version; the reason it was not, or None."""
        snapshot = candidate.snapshot
        verdict = await self._verify(candidate, forced)
        for warning in verdict.warnings:
            log.warning("zone %s: serial %d: %s", self.name, snapshot.serial, warning)
        if not verdict.ok:
            self.last_rejection = (
                f"rejected serial {snapshot.serial} from {candidate.primary}: "
                f"{verdict.check}: {verdict.reason}"
            )
            self.host.stats.rejections[(self.name, verdict.check)] += 1
            log.error(
                "zone %s: %s",
                self.name,
                self.last_rejection,
                extra={
                    "zone": self.name,
                    "serial": snapshot.serial,
                    "primary": candidate.primary,
                    "reason": verdict.check,
                },
            )
            return self.last_rejection
        kind = candidate.result.kind.value if candidate.result.kind else "AXFR"
        meta = VersionMeta(kind, self.clock(), candidate.primary)
        try:
            await asyncio.to_thread(self._store, candidate, meta)
        except StoreError as exc:
            self.host.stats.store_failures[self.name] += 1
            log.error(
                "zone %s: serial %d not stored, keeping serial %s: %s",
                self.name,
                snapshot.serial,
                self.current.serial if self.current else None,
                exc,
                extra={"zone": self.name, "serial": snapshot.serial, "reason": "store"},
            )
            return f"could not store serial {snapshot.serial}: {exc}"
        old = self.current
        self.current = snapshot
        self.signed = verdict.signed
        if candidate.full or self.horizon is None or verdict.horizon is None:
            self.horizon = verdict.horizon
        else:  # an incremental check saw only the touched signatures
            self.horizon = min(self.horizon, verdict.horizon)
        self._warn_horizon()
        steps = (
            None
            if candidate.full or old is None
            else tuple((s.deleted, s.added) for s in candidate.result.steps)
        )
        seq = self.host.publish_version(self.config.origin, snapshot, meta, steps)
        if not await self.host.wait_published(seq):
            log.error("zone %s: a worker did not confirm serial %d", self.name, snapshot.serial)
        self.last_rejection = None
        return None

    async def _verify(self, candidate: Candidate, forced: bool) -> Verdict:
        snapshot = candidate.snapshot
        policy = policy_for(self.config)
        now = self.clock()
        if not candidate.full and self.current is not None:
            touched = touched_owners((s.deleted, s.added) for s in candidate.result.steps)
            # Seconds for a diff of 100k owners: off the event loop.
            full = await asyncio.to_thread(needs_full_check, snapshot, touched, self.current)
            if not full:
                return await asyncio.to_thread(
                    verify,
                    snapshot,
                    policy,
                    now,
                    was_signed=self.signed,
                    forced=forced,
                    touched=touched,
                )
        if snapshot.record_count <= FULL_CHECK_INLINE_RECORDS or not _needs_crypto(snapshot):
            # Without keys or ZONEMD the checks are one quick pass over the owners: a
            # thread spares writing the candidate and decoding it again in the pool.
            return await asyncio.to_thread(
                verify, snapshot, policy, now, was_signed=self.signed, forced=forced
            )
        path = await asyncio.to_thread(self._write_candidate, snapshot)
        try:
            return await self.validation.verify_file(
                path, self.config.origin, policy, now, self.signed, forced
            )
        finally:
            path.unlink(missing_ok=True)

    def _write_candidate(self, snapshot: Snapshot) -> Path:
        """The candidate in the store's format, for the validation pool to map in."""
        header, payload = encode_full(snapshot, VersionMeta("candidate", self.clock()), 0)
        with tempfile.NamedTemporaryFile(
            dir=self.host.store.state_dir, prefix=CANDIDATE_PREFIX, delete=False
        ) as handle:
            handle.write(header)
            handle.write(payload)
        return Path(handle.name)

    def _store(self, candidate: Candidate, meta: VersionMeta) -> None:
        store = self.host.store
        if candidate.full or self.current is None:
            store.save_full(candidate.snapshot, meta)
            return
        steps = candidate.result.steps
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            store.append_diff(
                self.config.origin,
                step.from_serial,
                step.to_serial,
                step.deleted,
                step.added,
                meta,
                snapshot=candidate.snapshot if last else None,
            )

    def _warn_horizon(self) -> None:
        if self.horizon is None:
            return
        left = self.horizon - self.clock()
        if left < self.config.signature_warning_days * 86400:
            log.warning(
                "zone %s: the earliest RRSIG expires in %.1f days: the primary must re-sign "
                "before then or validating resolvers will fail",
                self.name,
                left / 86400,
                extra={"zone": self.name, "reason": "signature-horizon"},
            )

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        t = self.timers
        return {
            "state": t.state.value,
            "primary_serial": t.primary_serial,
            "primary": self.last_primary,
            "notified_serial": t.notified_serial,
            "last_attempt": t.last_attempt,
            "last_success": t.last_success,
            "next_refresh": t.next_refresh,
            "expires_at": t.expires_at,
            "last_error": t.last_error or None,
            "last_rejection": self.last_rejection,
            "signature_horizon": self.horizon,
            "in_flight": t.in_flight.value,
        }


def earliest_expiration(snapshot: Snapshot, now: float) -> int | None:
    """The earliest RRSIG expiration in a version (RFC 4034 serial time, read near `now`)."""
    earliest: int | None = None
    reference = int(now)
    for _, blob in snapshot.items():
        for rtype, (_, rdatas) in unpack_node(blob).items():
            if not is_sig_type(rtype):
                continue
            for rdata in rdatas:
                delta = (int.from_bytes(rdata[8:12], "big") - reference) & 0xFFFFFFFF
                expires = reference + (delta - (1 << 32) if delta >= 1 << 31 else delta)
                if earliest is None or expires < earliest:
                    earliest = expires
    return earliest


CANDIDATE_PREFIX = ".candidate-"


def remove_stale_candidates(state_dir: Path) -> list[Path]:
    """Candidate files a crash left behind (only this process writes them; call at start)."""
    removed = []
    for path in state_dir.glob(CANDIDATE_PREFIX + "*"):
        path.unlink(missing_ok=True)
        removed.append(path)
        log.info("removed stale candidate %s (left by an interrupted validation)", path)
    return removed


def _is_signed(snapshot: Snapshot) -> bool:
    apex = snapshot.node(snapshot.origin) or {}
    return DNSKEY in apex


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def zone_text(origin: bytes) -> str:
    return names.to_text(origin).rstrip(".") or "."
