"""authd.clock: the system clock reads real time; the fake one moves only when told."""

from __future__ import annotations

import time

import pytest

from authd.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock


def test_system_clock_reads_wall_and_monotonic_time() -> None:
    clock: Clock = SystemClock()
    before = time.time()
    now = clock.now()
    after = time.time()
    assert before <= now <= after
    first = clock.monotonic()
    second = clock.monotonic()
    assert second >= first
    assert abs(clock.monotonic() - time.monotonic()) < 1.0
    assert abs(SYSTEM_CLOCK.now() - time.time()) < 1.0


def test_fake_clock_moves_only_when_told() -> None:
    clock: Clock = FakeClock(now=1000.0, monotonic=5.0)
    assert isinstance(clock, FakeClock)
    assert (clock.now(), clock.monotonic()) == (1000.0, 5.0)
    assert (clock.now(), clock.monotonic()) == (1000.0, 5.0)
    clock.advance(2.5)
    assert (clock.now(), clock.monotonic()) == (1002.5, 7.5)


def test_fake_clock_set_steps_wall_time_only() -> None:
    clock = FakeClock(now=1000.0, monotonic=5.0)
    clock.set(10.0)  # an NTP step backwards
    assert (clock.now(), clock.monotonic()) == (10.0, 5.0)
    clock.advance(1)
    assert (clock.now(), clock.monotonic()) == (11.0, 6.0)


def test_fake_clock_refuses_to_go_back() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
