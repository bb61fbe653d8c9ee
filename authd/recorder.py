"""What happens after a version is published, off the event loop: the digest, the history
index entry, the store's history pruned, and a `published` entry in the zone's ledger.

One worker thread does it all in publish order (a single-thread executor is a FIFO), so
the index and the ledger list versions in the order they were served, and a control
command that reads them (run on the same executor) sees every version published before
it was asked.

A restart publishes the stored version again: it is not a new version, so it is not
recorded (same serial and receive time as the last entry). A file zone re-read with the
same serial and digest is not recorded either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from authd.zone import names
from authd.zone.history import HistoryIndex, VersionRecord, digest_hex, record_for
from authd.zone.journal import VersionMeta
from authd.zone.ledger import Ledger, LedgerError, ledger_path
from authd.zone.snapshot import Snapshot
from authd.zone.store import ZONE_DIR_SUFFIX, Store, StoreError, zone_dir_name

log = logging.getLogger("authd.history")

T = TypeVar("T")


def zone_ledger_path(state_dir: Path, origin: bytes) -> Path:
    """`<state-dir>/<zone>.ledger`, named as the store names the zone's directory."""
    return ledger_path(state_dir, zone_dir_name(origin)[: -len(ZONE_DIR_SUFFIX)])


class VersionRecorder:
    def __init__(self, store: Store, now: Callable[[], float]) -> None:
        self.store = store
        self.now = now
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="authd-history")
        self._ledgers: dict[bytes, Ledger] = {}

    def index(self, origin: bytes) -> HistoryIndex:
        return HistoryIndex(self.store.zone_dir(origin))

    def ledger_path(self, origin: bytes) -> Path:
        return zone_ledger_path(self.store.state_dir, origin)

    def published(
        self,
        origin: bytes,
        snapshot: Snapshot,
        meta: VersionMeta,
        keep: int,
        event: str = "published",
    ) -> Future[VersionRecord | None]:
        """Record a version that was just published (returns at once); `event` is the
        ledger event ("published", or e.g. "rolled-back", "approved")."""
        return self._executor.submit(self._record, origin, snapshot, meta, keep, event)

    def _record(
        self, origin: bytes, snapshot: Snapshot, meta: VersionMeta, keep: int, event: str
    ) -> VersionRecord | None:
        zone = names.to_text(origin)
        try:
            index = self.index(origin)
            records = index.read()
            last = records[-1] if records else None
            if last and (last.serial, last.time) == (snapshot.serial, meta.received_at):
                return None  # the stored version loaded again at start-up
            digest = digest_hex(snapshot)
            if (
                meta.transfer == "file"
                and last
                and (last.serial, last.digest)
                == (
                    snapshot.serial,
                    digest,
                )
            ):
                return None  # the same file read again
            record = record_for(snapshot, meta, digest)
            kept = index.append(record, keep)
            if self.store.owner:
                self.store.prune_history(origin, [r.serial for r in kept])
            self._ledger(origin).append(
                event, snapshot.serial, digest, record.source, "", self.now()
            )
            return record
        except (OSError, StoreError, LedgerError) as exc:
            log.error("zone %s: serial %d not recorded in history: %s", zone, snapshot.serial, exc)
            return None

    def note(
        self, origin: bytes, event: str, serial: int | None, digest: str, reason: str
    ) -> Future[None]:
        """One ledger entry that publishes nothing (held, approved, rejected, pinned,
        unpinned), in order with the versions recorded before it."""
        return self._executor.submit(self._note, origin, event, serial, digest, reason)

    def _note(
        self, origin: bytes, event: str, serial: int | None, digest: str, reason: str
    ) -> None:
        try:
            self._ledger(origin).append(event, serial, digest, "", reason, self.now())
        except (OSError, LedgerError) as exc:
            log.error("zone %s: ledger entry %s not written: %s", names.to_text(origin), event, exc)

    def _ledger(self, origin: bytes) -> Ledger:
        ledger = self._ledgers.get(origin)
        if ledger is None:
            ledger = self._ledgers[origin] = Ledger(self.ledger_path(origin), self.now())
        return ledger

    def head(self, origin: bytes) -> tuple[int, str] | None:
        """(seq, hash) of the last ledger entry this process wrote or read, if the ledger is
        open: lets verify notice whole entries cut from the end. Call on the recorder's
        thread (through `run`)."""
        ledger = self._ledgers.get(origin)
        if ledger is None or ledger.last_seq == 0:
            return None
        return ledger.last_seq, ledger.last_hash

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` on the recorder's thread, after every record already asked for."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    def flush(self) -> None:
        """Block until every record asked for so far is written."""
        self._executor.submit(lambda: None).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
