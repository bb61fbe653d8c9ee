"""Keep IXFR possible for downstreams when the upstream sent an AXFR (Knot's ixfr-from-axfr).

The store keeps one full copy and a journal of diffs on top of it; `Store.save_full`, used
for every inbound AXFR, drops the journal, so after it a downstream's IXFR can only be
answered AXFR-style. `store_version` stores an AXFR'd version as the computed diff from
the version it replaces instead (one journal append, fsynced, exactly like an inbound
IXFR step, so durability and compaction are the store's as ever), and falls back to a
full copy when a diff cannot help:

- nothing stored yet, or the stored tip is not the version replaced (the diff must chain);
- a serial that did not move forward (a forced re-transfer, an accepted rollback): a
  downstream never takes such a version by IXFR;
- a diff larger than `max_share` of the new version: downstreams would be better served
  by an AXFR-style answer anyway (serve/xfr_edge.py answers so when the diffs outweigh
  the zone), and the journal would only grow.

The journal compacts as usual (`snapshot=`), after which older serials are answered
AXFR-style, as Knot does once its journal is flushed.
"""

from __future__ import annotations

from dataclasses import dataclass

from authd.serve.xfrout import diff
from authd.xfr.provide import serial_newer
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import SOA, Snapshot
from authd.zone.store import Store

MAX_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Stored:
    journaled: bool  # the version went in as a diff (else a full copy)
    reason: str  # why not, when it did not


def store_version(
    store: Store,
    previous: Snapshot | None,
    snapshot: Snapshot,
    meta: VersionMeta,
    *,
    max_share: float = MAX_SHARE,
) -> Stored:
    """Store an AXFR'd `snapshot` that replaces `previous`; StoreError as the store raises."""
    reason = _why_full(store, previous, snapshot)
    if reason is None:
        assert previous is not None
        deleted, added = diff(previous, snapshot)
        if len(deleted) + len(added) > max_share * max(snapshot.record_count, 1):
            reason = f"the diff ({len(deleted) + len(added)} records) outweighs the zone"
        else:
            origin = snapshot.origin
            deleted.insert(0, (origin, SOA, previous.soa_ttl, previous.soa_rdata))
            added.insert(0, (origin, SOA, snapshot.soa_ttl, snapshot.soa_rdata))
            result = store.append_diff(
                origin, previous.serial, snapshot.serial, deleted, added, meta, snapshot=snapshot
            )
            if result.compacted:
                return Stored(False, "the journal was due for compaction")
            return Stored(True, "")
    store.save_full(snapshot, meta)
    return Stored(False, reason)


def _why_full(store: Store, previous: Snapshot | None, snapshot: Snapshot) -> str | None:
    if previous is None:
        return "no previous version"
    if previous.origin != snapshot.origin:
        return "another zone"
    if not serial_newer(snapshot.serial, previous.serial):
        return "the serial did not move forward"
    if store.tip_serial(snapshot.origin) != previous.serial:
        return "the stored version is not the one replaced"
    return None
