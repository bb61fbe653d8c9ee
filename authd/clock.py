"""The only place that reads time.

Everything else takes a Clock (or a `now` value derived from one), so timers, TSIG windows and
signature validity are tested by moving a FakeClock instead of sleeping.

`now()` is wall time (seconds since the epoch: SOA timers persisted across restarts, TSIG, RRSIG
windows); `monotonic()` measures intervals and deadlines that must not jump with the wall clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to. Wall and monotonic time advance together;
    `set()` moves only the wall clock (as an NTP step would), never monotonic time backwards."""

    def __init__(self, now: float = 1_700_000_000.0, monotonic: float = 1000.0) -> None:
        self._now = now
        self._monotonic = monotonic

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward; use set() to step the wall clock")
        self._now += seconds
        self._monotonic += seconds

    def set(self, now: float) -> None:
        self._now = now


SYSTEM_CLOCK: Clock = SystemClock()
