"""Timer records written in batches, off the event loop.

A zone's timers change on every SOA check; writing each change with its two fsyncs
on the event loop cost 10 of 60 s in a 1,000-zone profile. Here a change only marks
the zone dirty (O(1)); within `delay` seconds one thread writes the latest record of
every dirty zone (a zone changed ten times is written once), with a constant number of
syncs per batch (Store.save_timers_batch). After a crash a timer
record may lag by that fraction of a second, which costs at most one early SOA
check; the served version itself is stored durably before it is published, apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from authd.zone.store import StoreError
from authd.zone.timerstore import TimerValue

log = logging.getLogger("authd.store")

Record = Mapping[str, TimerValue]
SaveBatch = Callable[[Mapping[bytes, Record]], Mapping[bytes, StoreError]]
"""Store.save_timers_batch: writes every record, returns the failures per zone."""


class TimerWriter:
    def __init__(
        self,
        save: SaveBatch,
        on_error: Callable[[bytes, StoreError], None],
        delay: float = 0.2,
    ) -> None:
        self.save = save
        self.on_error = on_error
        self.delay = delay
        self._dirty: dict[bytes, Record] = {}
        # One batch written at a time: a flush() that finds a batch in its thread waits
        # for it (a control command answers only once its record is on disk), and a
        # zone's newer record is never written before an older one still in flight.
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self._closed = False

    def mark(self, zone: bytes, record: Record) -> None:
        """Remember the zone's latest record; it is written within `delay` seconds."""
        self._dirty[zone] = record
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    def forget(self, zone: bytes) -> None:
        self._dirty.pop(zone, None)

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self.delay)
            # Shielded: close() cancels this task, never a batch already in its thread
            # (the thread would go on writing while close() writes the rest beside it).
            await asyncio.shield(self.flush())
        finally:
            self._task = None
            if self._dirty and not self._closed:  # marked while the batch was being written
                self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def flush(self) -> None:
        """Write what is marked now; returns once that and any batch already being
        written are on disk."""
        async with self._writing:
            while self._dirty:
                batch, self._dirty = self._dirty, {}
                failures = await asyncio.to_thread(self.save, batch)
                self.batches += 1
                for zone, error in failures.items():
                    self.on_error(zone, error)

    async def idle(self) -> None:
        """Return once no batch is being written (one in its thread may hold a record of
        a zone being removed: its directory must not be moved or purged under it)."""
        async with self._writing:
            return

    async def close(self) -> None:
        """Write what is still dirty (at shutdown)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
