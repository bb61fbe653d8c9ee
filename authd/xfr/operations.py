"""The I/O behind the lifecycle's actions: SOA check, transfer, verify, store, publish.

Each action of authd/zone/lifecycle.py that needs the network, a thread or the
validation pool runs here as the zone's one task, and ends in exactly one event
(an exception becomes a failure event too: a bug never leaves a zone waiting).

    QuerySoa  -> every primary in turn, the last good one first    -> SoaChecked
    Transfer  -> IXFR/AXFR, paced per primary and in total          -> Transferred
    Verify    -> structure, limits, DNSSEC, ZONEMD (thread or pool)  -> Verified
    Store     -> full copy (AXFR) or journal append (IXFR), fsynced  -> Stored
    Publish   -> the Publisher port, acknowledged by every worker    -> Published

Each SOA check and transfer attempt is counted per zone and remote with its
outcome, and sets the remote's last success or failure time.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import dns.tsig

from authd.clock import Clock
from authd.config import Remote, TransferConfig, ZoneConfig
from authd.horizon import earliest_signature_expiration
from authd.xfr import guarding
from authd.xfr.ixfr_from_axfr import store_version
from authd.xfr.policy import policy_for
from authd.xfr.stream import Kind, TransferLimits
from authd.xfr.timers import SoaTimers
from authd.xfr.transfer import Outcome, TransferResult, query_soa, transfer, tsig_reason
from authd.zone import lifecycle as lc
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import DNSKEY, Snapshot
from authd.zone.store import StoreError, encode_full
from authd.zone.verify import (
    Policy,
    ValidationPool,
    Verdict,
    needs_full_check,
    touched_owners,
    verify,
)

if TYPE_CHECKING:
    from authd.xfr.secondary import Host, ZoneEntry

log = logging.getLogger("authd.xfr")

DNSKEY_TYPE, ZONEMD_TYPE = 48, 63
FULL_CHECK_INLINE_RECORDS = 20_000  # smaller versions are verified in a thread, not the pool
CANDIDATE_PREFIX = ".candidate-"


@dataclass
class Pacer:
    """Caps per primary address: SOA checks (max-soa-checks-in-flight) and transfers
    (max-per-primary), and on transfers in total (max-concurrent).

    A zone waiting for a slot is one task parked on a semaphore (FIFO), not a loop.
    """

    config: TransferConfig
    transfers: asyncio.Semaphore = field(init=False)
    per_primary: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    soa_per_primary: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.transfers = asyncio.Semaphore(self.config.max_concurrent)

    def primary(self, address: str) -> asyncio.Semaphore:
        """The transfer slots of one primary address."""
        semaphore = self.per_primary.get(address)
        if semaphore is None:
            semaphore = self.per_primary[address] = asyncio.Semaphore(self.config.max_per_primary)
        return semaphore

    def soa_checks(self, address: str) -> asyncio.Semaphore:
        """The SOA check slots of one primary address."""
        semaphore = self.soa_per_primary.get(address)
        if semaphore is None:
            limit = self.config.max_soa_checks_in_flight
            semaphore = self.soa_per_primary[address] = asyncio.Semaphore(limit)
        return semaphore


@dataclass
class Candidate:
    """A transferred version on its way to being served."""

    result: TransferResult
    primary: str
    snapshot: Snapshot
    full: bool  # replaces the zone (AXFR or AXFR-style IXFR), else IXFR steps
    verdict: Verdict | None = None
    meta: VersionMeta | None = None  # set once when stored: the same facts on disk and served
    rrsets: int | None = None  # its RRset count, when the change guard counted it
    release: str = ""  # "approval" | "rollback": a stored version published again


def _failure(action: lc.Action, error: str) -> lc.Event:
    """The event that ends `action` when it raised instead of returning one."""
    match action:
        case lc.QuerySoa():
            return lc.SoaChecked(None, error=error)
        case lc.Transfer(axfr):
            return lc.Transferred(False, None, not axfr, error)
        case lc.Verify():
            return lc.Verified(False, error)
        case lc.Store():
            return lc.Stored(False, error)
        case lc.Publish():
            return lc.Published(False)
        case lc.Guard():
            return lc.Guarded(False, error)
        case lc.Hold():
            return lc.HeldStored(False, error)
        case lc.Load():
            return lc.Loaded(None, error)
    raise TypeError(f"not an I/O action: {action!r}")


class Policies(Protocol):
    """How a zone's new versions are verified beyond its config (assure/dscheck.py: the
    parent's DS as trust anchors, and the anchor failure named ds-mismatch)."""

    async def policy(self, zone: ZoneConfig) -> Policy: ...

    def judged(self, zone: ZoneConfig, verdict: Verdict) -> Verdict: ...


class Operations:
    """The real I/O actions (secondary.IoActions)."""

    def __init__(
        self,
        host: Host,
        pacer: Pacer,
        validation: ValidationPool,
        transfer_config: TransferConfig,
        clock: Clock,
        policies: Policies | None = None,
        own_ns: frozenset[bytes] = frozenset(),
    ) -> None:
        self.own_ns = own_ns  # [server] ns-names as name keys, for the change guard
        self.host = host
        self.pacer = pacer
        self.validation = validation
        self.transfer_config = transfer_config
        self.clock = clock
        self.policies = policies

    def start(self, entry: ZoneEntry, action: lc.Action, done: Callable[[lc.Event], None]) -> None:
        operation: Coroutine[Any, Any, lc.Event]
        match action:
            case lc.QuerySoa():
                operation = self.check_soa(entry)
            case lc.Transfer(axfr, forced):
                operation = self.transfer(entry, axfr, forced)
            case lc.Verify(forced):
                operation = self.verify(entry, forced)
            case lc.Store():
                operation = self.store(entry)
            case lc.Publish():
                operation = self.publish(entry)
            case lc.Guard(pinned):
                operation = guarding.guard_verdict(self.host, entry, pinned, self.own_ns)
            case lc.Hold():
                operation = guarding.hold(self.host, entry, action, self.clock)
            case lc.Load():
                operation = guarding.load(self.host, self.host, entry, action, self.clock)
            case _:
                raise TypeError(f"not an I/O action: {action!r}")
        task = asyncio.get_running_loop().create_task(operation, name=f"zone {entry.name}")
        entry.operation = task

        def finished(task: asyncio.Task[lc.Event]) -> None:
            if entry.operation is task:
                entry.operation = None
            if task.cancelled():
                return
            error = task.exception()
            if error is None:
                done(task.result())
                return
            log.error("zone %s: internal error in %s", entry.name, action, exc_info=error)
            done(_failure(action, f"internal error: {error!r}"))

        task.add_done_callback(finished)

    def drop_held(self, entry: ZoneEntry) -> None:
        guarding.drop_held(self.host, entry)

    def cancel(self, entry: ZoneEntry) -> None:
        for task in (entry.operation, entry.background):
            if task is not None and not task.done():
                task.cancel()

    def loaded(self, entry: ZoneEntry, snapshot: Snapshot) -> None:
        if entry.signed:
            entry.background = asyncio.get_running_loop().create_task(
                self.restore_horizon(entry, snapshot)
            )

    # -- primaries ------------------------------------------------------------------------

    @staticmethod
    def _endpoints(entry: ZoneEntry) -> list[tuple[Remote, tuple[str, int]]]:
        """Every primary address, starting with the remote that worked last."""
        remotes = list(entry.config.primaries)
        ordered = remotes[entry.preferred :] + remotes[: entry.preferred]
        return [(remote, (a.host, a.port)) for remote in ordered for a in remote.addresses]

    @staticmethod
    def _key(remote: Remote) -> dns.tsig.Key | None:
        return remote.key.to_dnspython() if remote.key is not None else None

    @staticmethod
    def _source(remote: Remote) -> str | None:
        return remote.source.host if remote.source is not None else None

    def _attempted(self, entry: ZoneEntry, remote: Remote, outcome: Outcome, reason: str) -> None:
        """Per-remote health and the TSIG failure word for one attempt."""
        stats = self.host.stats
        if outcome.success:
            stats.remote_last_success[remote.id] = self.clock.now()
            entry.preferred = list(entry.config.primaries).index(remote)
        else:
            stats.remote_last_failure[remote.id] = self.clock.now()
        if outcome is Outcome.BAD_TSIG:
            stats.tsig_failures[tsig_reason(reason)] += 1

    # -- SOA check ------------------------------------------------------------------------

    async def check_soa(self, entry: ZoneEntry) -> lc.Event:
        errors = []
        for remote, address in self._endpoints(entry):
            label = f"{address[0]}@{address[1]}"
            async with self.pacer.soa_checks(address[0]):
                result = await query_soa(
                    address,
                    entry.origin,
                    self._key(remote),
                    self._source(remote),
                    clock=self.clock.now,
                    tls=remote.tls,
                    tcp=entry.config.catalog is not None,
                    expire=remote.edns_expire,
                )
            word = result.outcome.value
            self.host.stats.soa_checks[(entry.name, remote.id, word)] += 1
            self._attempted(entry, remote, result.outcome, result.reason)
            if result.outcome is Outcome.OK and result.serial is not None:
                return lc.SoaChecked(result.serial, primary=label, expire=result.expire)
            errors.append(f"{label}: {word}: {result.reason}")
            log.warning(
                "zone %s: SOA query to %s failed: %s",
                entry.name,
                label,
                result.reason or word,
                extra={"zone": entry.name, "primary": label, "reason": word},
            )
        return lc.SoaChecked(None, error="; ".join(errors) or "no primary configured")

    # -- transfer -------------------------------------------------------------------------

    async def transfer(self, entry: ZoneEntry, axfr: bool, forced: bool) -> lc.Event:
        current = self.host.served_snapshot(entry.origin)
        was_ixfr = not axfr and current is not None and entry.config.ixfr
        errors = []
        for remote, address in self._endpoints(entry):
            label = f"{address[0]}@{address[1]}"
            async with self.pacer.transfers, self.pacer.primary(address[0]):
                result = await transfer(
                    entry.origin,
                    address,
                    self._key(remote),
                    self._source(remote),
                    current=current,
                    force_axfr=axfr or forced or not entry.config.ixfr,
                    limits=self._limits(entry),
                    deadline=self.transfer_config.timeout,
                    idle_timeout=self.transfer_config.idle_timeout,
                    clock=self.clock.now,
                    tls=remote.tls,
                    expire=remote.edns_expire,
                )
            self._count(entry, result)
            self._attempted(entry, remote, result.outcome, result.reason)
            if result.outcome is Outcome.UP_TO_DATE:
                return lc.Transferred(True, None, was_ixfr, primary=label, expire=result.expire)
            if result.outcome.success and result.snapshot is not None:
                full = result.kind is not Kind.IXFR
                entry.candidate = Candidate(result, label, result.snapshot, full)
                candidate = soa_of(result.snapshot)
                return lc.Transferred(
                    True, candidate, was_ixfr, primary=label, expire=result.expire
                )
            errors.append(f"{label}: {result.outcome.value}: {result.reason}")
            log.warning(
                "zone %s: transfer from %s failed (%s): %s",
                entry.name,
                label,
                result.outcome.value,
                result.reason,
                extra={"zone": entry.name, "primary": label, "reason": result.outcome.value},
            )
        return lc.Transferred(False, None, was_ixfr, "; ".join(errors) or "no primary configured")

    @staticmethod
    def _limits(entry: ZoneEntry) -> TransferLimits:
        limits = entry.config.limits
        return TransferLimits(
            max_records=limits.max_records,
            max_bytes=limits.max_bytes,
            max_rrset_records=limits.max_rrset_records,
            max_ixfr_records=limits.max_ixfr_diff_records,
        )

    def _count(self, entry: ZoneEntry, result: TransferResult) -> None:
        stats = self.host.stats
        kind = result.kind.value if result.kind is not None else "none"
        stats.transfers[(entry.name, kind, result.outcome.value)] += 1
        stats.transfer_seconds[entry.name] += result.duration
        stats.transfer_bytes[entry.name] += result.bytes_received
        stats.transfer_records[entry.name] += result.records

    # -- verify ---------------------------------------------------------------------------

    async def verify(self, entry: ZoneEntry, forced: bool) -> lc.Event:
        candidate = entry.candidate
        assert candidate is not None
        snapshot = candidate.snapshot
        verdict = await self._verdict(entry, candidate, forced)
        if self.policies is not None:
            verdict = self.policies.judged(entry.config, verdict)
        candidate.verdict = verdict
        for warning in verdict.warnings:
            log.warning("zone %s: serial %d: %s", entry.name, snapshot.serial, warning)
        if verdict.ok:
            return lc.Verified(True)
        entry.last_rejection = (
            f"rejected serial {snapshot.serial} from {candidate.primary}: "
            f"{verdict.check}: {verdict.reason}"
        )
        self.host.stats.rejections[(entry.name, verdict.check)] += 1
        log.error(
            "zone %s: %s",
            entry.name,
            entry.last_rejection,
            extra={
                "zone": entry.name,
                "serial": snapshot.serial,
                "primary": candidate.primary,
                "reason": verdict.check,
            },
        )
        return lc.Verified(False, entry.last_rejection)

    async def _verdict(self, entry: ZoneEntry, candidate: Candidate, forced: bool) -> Verdict:
        snapshot = candidate.snapshot
        policy = (
            policy_for(entry.config)
            if self.policies is None
            else await self.policies.policy(entry.config)
        )
        now = self.clock.now()
        current = self.host.served_snapshot(entry.origin)
        if not candidate.full and current is not None:
            touched = touched_owners((s.deleted, s.added) for s in candidate.result.steps)
            # Seconds for a diff of 100k owners: off the event loop.
            full = await asyncio.to_thread(needs_full_check, snapshot, touched, current)
            if not full:
                return await asyncio.to_thread(
                    verify,
                    snapshot,
                    policy,
                    now,
                    was_signed=entry.signed,
                    forced=forced,
                    touched=touched,
                )
        if snapshot.record_count <= FULL_CHECK_INLINE_RECORDS or not _needs_crypto(snapshot):
            # Without keys or ZONEMD the checks are one quick pass over the owners: a
            # thread spares writing the candidate and decoding it again in the pool.
            return await asyncio.to_thread(
                verify, snapshot, policy, now, was_signed=entry.signed, forced=forced
            )
        path = await asyncio.to_thread(self._write_candidate, snapshot)
        try:
            return await self.validation.verify_file(
                path, entry.origin, policy, now, entry.signed, forced
            )
        finally:
            path.unlink(missing_ok=True)

    def _write_candidate(self, snapshot: Snapshot) -> Path:
        """The candidate in the store's format, for the validation pool to map in."""
        header, payload = encode_full(snapshot, VersionMeta("candidate", self.clock.now()), 0)
        with tempfile.NamedTemporaryFile(
            dir=self.host.store.state_dir, prefix=CANDIDATE_PREFIX, delete=False
        ) as handle:
            handle.write(header)
            handle.write(payload)
        return Path(handle.name)

    # -- store ----------------------------------------------------------------------------

    def _meta(self, candidate: Candidate) -> VersionMeta:
        kind = candidate.result.kind.value if candidate.result.kind else "AXFR"
        return VersionMeta(candidate.release or kind, self.clock.now(), candidate.primary or None)

    async def store(self, entry: ZoneEntry) -> lc.Event:
        candidate = entry.candidate
        assert candidate is not None
        meta = candidate.meta = self._meta(candidate)
        current = self.host.served_snapshot(entry.origin)
        try:
            await asyncio.to_thread(self._store, entry, candidate, meta, current)
        except StoreError as exc:
            self.host.stats.store_failures[entry.name] += 1
            serial = candidate.snapshot.serial
            log.error(
                "zone %s: serial %d not stored, keeping serial %s: %s",
                entry.name,
                serial,
                current.serial if current else None,
                exc,
                extra={"zone": entry.name, "serial": serial, "reason": "store"},
            )
            return lc.Stored(False, f"could not store serial {serial}: {exc}")
        return lc.Stored(True)

    def _store(
        self,
        entry: ZoneEntry,
        candidate: Candidate,
        meta: VersionMeta,
        current: Snapshot | None,
    ) -> None:
        store = self.host.store
        if candidate.full or current is None:
            # An AXFR replacing a version goes in as its diff when that keeps IXFR open to
            # downstreams (ixfr_from_axfr.py); otherwise, and for a first version, in full.
            store_version(store, current, candidate.snapshot, meta)
            return
        steps = candidate.result.steps
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            store.append_diff(
                entry.origin,
                step.from_serial,
                step.to_serial,
                step.deleted,
                step.added,
                meta,
                snapshot=candidate.snapshot if last else None,
            )

    # -- publish --------------------------------------------------------------------------

    async def publish(self, entry: ZoneEntry) -> lc.Event:
        candidate = entry.candidate
        assert candidate is not None and candidate.verdict is not None
        snapshot, verdict = candidate.snapshot, candidate.verdict
        old = self.host.served_snapshot(entry.origin)
        entry.signed = verdict.signed
        if candidate.full or entry.horizon is None or verdict.horizon is None:
            entry.horizon = verdict.horizon
        else:  # an incremental check saw only the touched signatures
            entry.horizon = min(entry.horizon, verdict.horizon)
        warn_horizon(entry, self.clock.now())
        steps = (
            None
            if candidate.full or old is None
            else tuple((s.deleted, s.added) for s in candidate.result.steps)
        )
        meta = candidate.meta or self._meta(candidate)  # as stored (history dedupes on it)
        seq = self.host.publish_version(entry.origin, snapshot, meta, steps)
        guarding.note_published(entry, snapshot, candidate.rrsets)
        entry.candidate = None
        entry.last_rejection = None
        return lc.Published(await self.host.wait_published(seq))

    async def restore_horizon(self, entry: ZoneEntry, snapshot: Snapshot) -> None:
        """The signature horizon of a version loaded from disk (no crypto: a scan)."""
        horizon = await asyncio.to_thread(earliest_signature_expiration, snapshot, self.clock.now())
        if self.host.served_snapshot(entry.origin) is snapshot:
            entry.horizon = horizon
            warn_horizon(entry, self.clock.now())
            self.host.set_expiry(entry.origin, entry.record.expires_at, horizon)  # EDNS EXPIRE


def soa_of(snapshot: Snapshot) -> SoaTimers:
    soa = snapshot.soa
    return SoaTimers(soa.serial, soa.refresh, soa.retry, soa.expire)


def warn_horizon(entry: ZoneEntry, now: float) -> None:
    if entry.horizon is None:
        return
    left = entry.horizon - now
    if left < entry.config.signature_warning_days * 86400:
        log.warning(
            "zone %s: the earliest RRSIG expires in %.1f days: the primary must re-sign "
            "before then or validating resolvers will fail",
            entry.name,
            left / 86400,
            extra={"zone": entry.name, "reason": "signature-horizon"},
        )


def _needs_crypto(snapshot: Snapshot) -> bool:
    """The version carries keys or a ZONEMD, so a full check hashes or verifies signatures."""
    apex = snapshot.node(snapshot.origin) or {}
    return DNSKEY_TYPE in apex or ZONEMD_TYPE in apex


def is_signed(snapshot: Snapshot) -> bool:
    apex = snapshot.node(snapshot.origin) or {}
    return DNSKEY in apex


def remove_stale_candidates(state_dir: Path) -> list[Path]:
    """Candidate files a crash left behind (only this process writes them; call at start)."""
    removed = []
    for path in state_dir.glob(CANDIDATE_PREFIX + "*"):
        path.unlink(missing_ok=True)
        removed.append(path)
        log.info("removed stale candidate %s (left by an interrupted validation)", path)
    return removed
