"""One wake-up schedule for every zone: a heap of (time, zone) and one asyncio timer.

An idle zone costs one heap entry, no task, coroutine or timer. Moving a zone's
wake-up pushes a new entry and leaves the old one in the heap (lazy invalidation:
an entry counts only while it matches `_at[key]`), so a change is O(log n); stale
entries are dropped when they reach the top, and the heap is rebuilt when they
outnumber the live ones, so it never grows beyond twice the number of zones.

Times are wall-clock seconds from the injected clock (the machine's `now`); the
asyncio timer is armed for the earliest live entry only, as a delay from now.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from authd.clock import Clock

K = TypeVar("K", bound=Hashable)

MAX_SLEEP = 3600.0  # re-check at least hourly, in case the wall clock was stepped


class WakeHeap(Generic[K]):
    """Pure: which keys are due at `now`, and when the next one is."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._at: dict[K, float] = {}
        self._order = itertools.count()  # ties: first scheduled first; keys never compared

    def __len__(self) -> int:
        return len(self._at)

    def set(self, key: K, at: float | None) -> None:
        """Wake `key` at `at` (replacing its previous time); None: do not wake it."""
        if at is None:
            self._at.pop(key, None)
            return
        if self._at.get(key) == at:
            return
        self._at[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        if len(self._heap) > 2 * len(self._at) + 64:
            self._compact()

    def get(self, key: K) -> float | None:
        return self._at.get(key)

    def discard(self, key: K) -> None:
        self._at.pop(key, None)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._at.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [(at, next(self._order), key) for key, at in self._at.items()]
        heapq.heapify(self._heap)

    def earliest(self) -> float | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[K]:
        """Every key whose time has come, earliest first; each is unscheduled."""
        due: list[K] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, _, key = heapq.heappop(self._heap)
            del self._at[key]
            due.append(key)


class Handle(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Handle]
"""loop.call_later (tests pass a fake loop driven by a FakeClock)."""


def _asyncio_call_later(delay: float, callback: Callable[[], None]) -> Handle:
    return asyncio.get_running_loop().call_later(delay, callback)


class Scheduler(Generic[K]):
    """The asyncio edge: one timer for the earliest entry; `fire` gets the due keys."""

    def __init__(
        self,
        clock: Clock,
        fire: Callable[[list[K]], None],
        call_later: CallLater = _asyncio_call_later,
    ) -> None:
        self.clock = clock
        self.fire = fire
        self.call_later = call_later
        self.heap: WakeHeap[K] = WakeHeap()
        self._handle: Handle | None = None
        self._armed_for: float | None = None
        self._closed = False

    def set(self, key: K, at: float | None) -> None:
        self.heap.set(key, at)
        self._arm()

    def discard(self, key: K) -> None:
        self.heap.discard(key)

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        if self._closed:
            return
        earliest = self.heap.earliest()
        if earliest is None or earliest == self._armed_for:
            return
        if self._handle is not None:
            if self._armed_for is not None and self._armed_for <= earliest:
                return  # the armed timer comes first; it re-arms when it fires
            self._handle.cancel()
        delay = min(max(0.0, earliest - self.clock.now()), MAX_SLEEP)
        self._armed_for = earliest
        self._handle = self.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._handle = None
        self._armed_for = None
        try:
            due = self.heap.pop_due(self.clock.now())
            if due:
                self.fire(due)
        finally:
            self._arm()
