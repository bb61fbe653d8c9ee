"""Timer records: batched, written off the event loop, latest record wins, flushed at close."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path

from authd.zone.store import Store, StoreError
from authd.zone.timerstore import TimerValue
from authd.zone.timerwriter import TimerWriter

A, B = b"\x01a\x04test\x00", b"\x01b\x04test\x00"


async def test_many_changes_become_one_write_per_zone_off_the_loop(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    writes: list[tuple[bytes, int, bool]] = []
    loop_thread = threading.get_ident()

    def save(zone: bytes, record: Mapping[str, TimerValue]) -> None:
        writes.append((zone, int(record["n"] or 0), threading.get_ident() == loop_thread))
        store.save_timers(zone, record)

    errors: list[bytes] = []
    writer = TimerWriter(save, lambda zone, error: errors.append(zone), delay=0.05)
    try:
        for n in range(100):
            writer.mark(A, {"n": n})
            if n % 10 == 0:
                writer.mark(B, {"n": n})
        assert writes == []  # nothing written on the loop, at once
        await writer.close()
        assert sorted(writes) == [(A, 99, False), (B, 90, False)]
        assert writer.batches == 1 and errors == []
        assert store.load_timers(A) == {"n": 99} and store.load_timers(B) == {"n": 90}
    finally:
        store.close()


async def test_marks_during_a_write_are_written_in_the_next_batch(tmp_path: Path) -> None:
    written: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def save(zone: bytes, record: Mapping[str, TimerValue]) -> None:
        entered.set()
        release.wait(5)
        written.append(int(record["n"] or 0))

    writer = TimerWriter(save, lambda zone, error: None, delay=0.01)
    writer.mark(A, {"n": 1})
    for _ in range(500):  # until the first batch is blocked in its thread
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    writer.mark(A, {"n": 2})
    release.set()
    for _ in range(200):
        if written == [1, 2]:
            break
        await asyncio.sleep(0.01)
    assert written == [1, 2]
    await writer.close()


async def test_a_failed_write_is_reported_per_zone(tmp_path: Path) -> None:
    def save(zone: bytes, record: Mapping[str, TimerValue]) -> None:
        if zone == B:
            raise StoreError(tmp_path, "saving timers", "disk full")

    errors: list[tuple[bytes, str]] = []
    writer = TimerWriter(save, lambda zone, error: errors.append((zone, str(error))), delay=0)
    writer.mark(A, {"n": 1})
    writer.mark(B, {"n": 1})
    await writer.close()
    assert [zone for zone, _ in errors] == [B] and "disk full" in errors[0][1]
