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

    def save(batch: Mapping[bytes, Mapping[str, TimerValue]]) -> dict[bytes, StoreError]:
        for zone, record in batch.items():
            writes.append((zone, int(record["n"] or 0), threading.get_ident() == loop_thread))
        return store.save_timers_batch(batch)

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

    def save(batch: Mapping[bytes, Mapping[str, TimerValue]]) -> dict[bytes, StoreError]:
        entered.set()
        release.wait(5)
        written.extend(int(record["n"] or 0) for record in batch.values())
        return {}

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
    store = Store(tmp_path / "state")
    try:
        errors: list[tuple[bytes, str]] = []
        writer = TimerWriter(
            store.save_timers_batch, lambda zone, error: errors.append((zone, str(error))), 0
        )
        writer.mark(A, {"n": 1})
        writer.mark(B, {"n": float("nan")})  # cannot be encoded
        await writer.close()
        assert [zone for zone, _ in errors] == [B] and "not a finite number" in errors[0][1]
        assert store.load_timers(A) == {"n": 1} and store.load_timers(B) is None
    finally:
        store.close()


def test_a_batch_replaces_records_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    try:
        zones = [bytes([1, 97 + i]) + b"\x04test\x00" for i in range(20)]
        assert store.save_timers_batch({zone: {"n": 1} for zone in zones}) == {}
        assert store.save_timers_batch({zone: {"n": 2} for zone in zones}) == {}
        assert all(store.load_timers(zone) == {"n": 2} for zone in zones)
        assert not list((tmp_path / "state").glob("*/*.authd-tmp"))
    finally:
        store.close()


async def test_a_flush_during_a_batch_write_returns_after_it_and_writes_in_order(
    tmp_path: Path,
) -> None:
    """A control command's flush while the delayed batch is in its thread: the command must
    not answer before that batch is on disk, and its own batch must not overtake it (the
    older record of a zone would land last)."""
    written: list[int] = []
    entered, release = threading.Event(), threading.Event()
    busy = threading.Lock()

    def save(batch: Mapping[bytes, Mapping[str, TimerValue]]) -> dict[bytes, StoreError]:
        assert busy.acquire(blocking=False), "two batches written at once"
        try:
            n = int(batch[A]["n"] or 0)
            if n == 1:
                entered.set()
                release.wait(5)
            written.append(n)
        finally:
            busy.release()
        return {}

    writer = TimerWriter(save, lambda zone, error: None, delay=0.01)
    writer.mark(A, {"n": 1})
    for _ in range(500):  # until the delayed batch is blocked in its thread
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    writer.mark(A, {"n": 2})
    flushed = asyncio.ensure_future(writer.flush())
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert not flushed.done()  # record 1 is not on disk yet
    release.set()
    await asyncio.wait_for(flushed, 5)
    assert written == [1, 2]
    await writer.close()


async def test_close_during_a_batch_write_waits_for_it(tmp_path: Path) -> None:
    written: list[int] = []
    entered, release = threading.Event(), threading.Event()
    busy = threading.Lock()

    def save(batch: Mapping[bytes, Mapping[str, TimerValue]]) -> dict[bytes, StoreError]:
        assert busy.acquire(blocking=False), "two batches written at once"
        try:
            n = int(batch[A]["n"] or 0)
            if n == 1:
                entered.set()
                release.wait(5)
            written.append(n)
        finally:
            busy.release()
        return {}

    writer = TimerWriter(save, lambda zone, error: None, delay=0.01)
    writer.mark(A, {"n": 1})
    for _ in range(500):
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    writer.mark(A, {"n": 2})
    closing = asyncio.ensure_future(writer.close())
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert not closing.done()
    release.set()
    await asyncio.wait_for(closing, 5)
    assert written == [1, 2]
