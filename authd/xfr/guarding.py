"""The I/O behind the change guard's actions (issue 14): Guard, Hold, Load, DropHeld.

Guard    the guard's verdict against the served version (authd/zone/guard.py):
         an IXFR passes only the owners it touched and the served version's RRset
         count (O(1) for a one-record change); an AXFR a full comparison, in a
         thread. The digest (SHA-384, as the history records it) is computed only
         for a version that will be held                               -> Guarded
Hold     the candidate stored durably as the held version (zone/heldstore.py) -> HeldStored
Load     the held version (approval) or an older one from the history (rollback)
         made the candidate again, verified as any candidate is          -> Loaded
DropHeld the held version removed from disk (no event)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from authd.clock import Clock
from authd.xfr.policy import policy_for
from authd.xfr.stream import Kind
from authd.xfr.transfer import Outcome, TransferResult
from authd.zone import guard, heldstore, history
from authd.zone import lifecycle as lc
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import Snapshot
from authd.zone.verify import touched_owners, verify

if TYPE_CHECKING:
    from authd.xfr.operations import Candidate
    from authd.xfr.secondary import Host, ZoneEntry

log = logging.getLogger("authd.xfr")


class VersionSource(Protocol):
    async def load_version(self, origin: bytes, serial: int) -> Snapshot:
        """A version from the zone's history; raises an exception whose text says why not."""
        ...


@dataclass
class RrsetCount:
    """The served version's RRset count, kept per zone so an IXFR's check is O(touched)."""

    snapshot: Snapshot
    count: int


async def guard_verdict(
    host: Host, entry: ZoneEntry, pinned: bool, own_ns: frozenset[bytes]
) -> lc.Event:
    candidate = entry.candidate
    assert candidate is not None
    new = candidate.snapshot
    served = host.served_snapshot(entry.origin)
    if served is None:
        return lc.Guarded(True)
    policy = entry.config.guard
    before = entry.rrsets.count if entry.rrsets and entry.rrsets.snapshot is served else None
    if candidate.full or before is None:
        # A full comparison walks both versions: seconds for a large zone, off the loop.
        verdict = await asyncio.to_thread(guard.check, served, new, policy, own_ns=own_ns)
    else:
        touched = touched_owners((s.deleted, s.added) for s in candidate.result.steps)
        verdict = guard.check(
            served, new, policy, own_ns=own_ns, touched=touched, rrsets_before=before
        )
    candidate.rrsets = verdict.summary.rrsets_after
    if not verdict.held and not pinned:
        return lc.Guarded(True)
    digest = await asyncio.to_thread(history.digest_hex, new)
    reason = verdict.describe() if verdict.held else f"{verdict.describe()}; pinned"
    return lc.Guarded(False, reason, digest)


def note_published(entry: ZoneEntry, snapshot: Snapshot, count: int | None) -> None:
    """Remember the RRset count of the version just published (for the next IXFR)."""
    entry.rrsets = RrsetCount(snapshot, count) if count is not None else None


async def hold(host: Host, entry: ZoneEntry, action: lc.Hold, clock: Clock) -> lc.Event:
    candidate = entry.candidate
    assert candidate is not None
    meta = VersionMeta(_kind(candidate), clock.now(), candidate.primary)
    try:
        await asyncio.to_thread(heldstore.save_held, host.store, candidate.snapshot, meta)
    except heldstore.HeldError as exc:
        log.error("zone %s: %s", entry.name, exc)
        return lc.HeldStored(False, str(exc))
    entry.held = candidate  # kept in memory too: an approval needs no read back
    return lc.HeldStored(True, reason=action.reason, digest=action.digest)


def drop_held(host: Host, entry: ZoneEntry) -> None:
    entry.held = None
    try:
        heldstore.drop_held(host.store, entry.origin)
    except heldstore.HeldError as exc:
        log.error("zone %s: %s", entry.name, exc)


async def load(
    host: Host, source: VersionSource, entry: ZoneEntry, action: lc.Load, clock: Clock
) -> lc.Event:
    from authd.xfr.operations import Candidate, soa_of

    release = "approval" if action.held else "rollback"
    primary = ""
    if action.held:
        kept = entry.held
        if kept is not None and kept.snapshot.serial == action.serial:
            snapshot, primary = kept.snapshot, kept.primary
        else:
            try:
                found = await asyncio.to_thread(heldstore.load_held, host.store, entry.origin)
            except heldstore.HeldError as exc:
                return lc.Loaded(None, str(exc))
            if found is None or found[0].serial != action.serial:
                return lc.Loaded(None, f"held serial {action.serial} is not stored")
            snapshot, primary = found[0], found[1].primary or ""
    elif entry.staged is not None and entry.staged.serial == action.serial:
        snapshot, entry.staged = entry.staged, None  # checked by the command already
    else:
        try:
            snapshot = await source.load_version(entry.origin, action.serial)
        except Exception as exc:  # the control path's error, one line
            return lc.Loaded(None, f"rollback to serial {action.serial}: {exc}")
    # Verified again as any candidate is (DNSSEC signatures still valid, limits, ZONEMD).
    policy = policy_for(entry.config)
    verdict = await asyncio.to_thread(
        verify, snapshot, policy, clock.now(), was_signed=False, forced=True
    )
    if not verdict.ok:
        return lc.Loaded(None, f"serial {snapshot.serial} fails its checks now: {verdict.reason}")
    result = TransferResult(Outcome.UPDATED, ("", 0), Kind.AXFR, snapshot, serial=snapshot.serial)
    entry.candidate = Candidate(result, primary, snapshot, True, verdict, release=release)
    return lc.Loaded(soa_of(snapshot), source=release)


def _kind(candidate: Candidate) -> str:
    return candidate.result.kind.value if candidate.result.kind is not None else "AXFR"
