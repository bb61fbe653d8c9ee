"""Test support: an event loop's call_later driven by a FakeClock (no sleeping)."""

from __future__ import annotations

from collections.abc import Callable

from authd.clock import FakeClock


class FakeTimer:
    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at = at
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """call_later on a FakeClock: `run_until(t)` fires due timers in order, moving the clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.timers: list[FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.clock.now() + delay, callback)
        self.timers.append(timer)
        return timer

    def live(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def run_until(self, until: float) -> None:
        while True:
            live = self.live()
            if not live:
                break
            first = min(live, key=lambda t: t.at)
            if first.at > until:
                break
            self.timers.remove(first)
            self.clock.advance(max(0.0, first.at - self.clock.now()))
            first.callback()
        self.clock.advance(max(0.0, until - self.clock.now()))
