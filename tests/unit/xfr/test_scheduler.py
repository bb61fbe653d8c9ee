"""The one wake-up schedule of all zones: the heap, and its timer driven by a fake loop."""

from __future__ import annotations

import pytest

from authd.clock import FakeClock
from authd.xfr.scheduler import MAX_SLEEP, Scheduler, WakeHeap
from tests.support.fakeloop import FakeLoop


def test_heap_pops_due_keys_in_order_and_ignores_moved_entries() -> None:
    heap: WakeHeap[str] = WakeHeap()
    heap.set("a", 30.0)
    heap.set("b", 10.0)
    heap.set("c", 20.0)
    heap.set("b", 40.0)  # moved later: the old entry at 10 no longer counts
    assert heap.earliest() == 20.0
    assert heap.pop_due(35.0) == ["c", "a"]
    assert heap.pop_due(35.0) == [] and heap.earliest() == 40.0
    heap.set("b", None)
    assert heap.earliest() is None and len(heap) == 0


def test_heap_stays_bounded_when_one_key_moves_often() -> None:
    heap: WakeHeap[int] = WakeHeap()
    for key in range(10):
        heap.set(key, 1000.0 + key)
    for i in range(10_000):
        heap.set(3, 2000.0 + i)
    assert len(heap._heap) <= 2 * len(heap) + 64
    assert heap.pop_due(1005.0) == [0, 1, 2, 4, 5]


def test_one_timer_for_many_keys_armed_for_the_earliest() -> None:
    clock = FakeClock(now=1000.0)
    loop = FakeLoop(clock)
    fired: list[tuple[float, list[int]]] = []
    scheduler: Scheduler[int] = Scheduler(
        clock, lambda keys: fired.append((clock.now(), keys)), loop.call_later
    )
    for key in range(1000):
        scheduler.set(key, 2000.0 + key)
    assert len(loop.live()) == 1 and loop.live()[0].at == 2000.0
    scheduler.set(5000, 1500.0)  # an earlier one re-arms the single timer
    assert len(loop.live()) == 1 and loop.live()[0].at == 1500.0
    loop.run_until(2001.5)
    assert fired == [(1500.0, [5000]), (2000.0, [0]), (2001.0, [1])]


def test_long_sleeps_are_cut_to_recheck_the_clock() -> None:
    clock = FakeClock(now=0.0)
    loop = FakeLoop(clock)
    fired: list[float] = []
    scheduler: Scheduler[str] = Scheduler(
        clock, lambda keys: fired.append(clock.now()), loop.call_later
    )
    scheduler.set("z", 3 * MAX_SLEEP + 7)
    assert loop.live()[0].at == MAX_SLEEP
    loop.run_until(4 * MAX_SLEEP)
    assert fired == [3 * MAX_SLEEP + 7]


def test_close_cancels_the_timer() -> None:
    clock = FakeClock(now=0.0)
    loop = FakeLoop(clock)
    scheduler: Scheduler[str] = Scheduler(clock, lambda keys: None, loop.call_later)
    scheduler.set("z", 10.0)
    scheduler.close()
    assert loop.live() == []
    scheduler.set("y", 5.0)
    assert loop.live() == []


def test_a_failing_callback_does_not_stop_later_wake_ups() -> None:
    clock = FakeClock(now=0.0)
    loop = FakeLoop(clock)
    fired: list[str] = []

    def fire(keys: list[str]) -> None:
        fired.extend(keys)
        if "bad" in keys:
            raise RuntimeError("bug")

    scheduler: Scheduler[str] = Scheduler(clock, fire, loop.call_later)
    scheduler.set("bad", 1.0)
    scheduler.set("good", 2.0)
    with pytest.raises(RuntimeError):
        loop.run_until(1.5)
    loop.run_until(3.0)
    assert fired == ["bad", "good"]
