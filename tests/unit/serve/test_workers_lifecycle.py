"""Worker lifecycle: the transition table, kill -9 in every state, a worker that stops reading.

Pools of 2 real worker processes on loopback answer "pid=<worker pid> v=<table version>"
(test_workers.py). UDP clients keep one source port each, so SO_REUSEPORT sends all of a
client's queries to one slot: a client whose slot lost no worker must lose no query.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from dataclasses import dataclass, field

import pytest

from authd.serve.workers import (
    ANSWERING,
    TRANSITIONS,
    Event,
    State,
    WorkerPool,
    restart_delay,
    step,
)
from tests.support.system import free_port
from tests.support.workers import (
    SlowTable,
    Table,
    answered_counter,
    answers_from_every_worker,
    make_responder,
    no_zombie_children,
    parse,
    reaped,
    run,
)

pytestmark = pytest.mark.slow  # real worker processes killed under load


def apply_any(message: object, table: Table) -> None:
    """Versions are ints; anything else (the padding of the backlog test) is ignored."""
    if isinstance(message, int):
        table.version = message


def new_pool(port: int, table: SlowTable, **options: float) -> WorkerPool[SlowTable]:
    return WorkerPool(
        2,
        [("127.0.0.1", port)],
        table,
        make_responder,
        apply_any,
        read_counters=answered_counter,
        counter_interval=0.05,
        restart_delay=0.05,
        stop_timeout=2.0,
        **options,  # type: ignore[arg-type]
    )


# -- the table ------------------------------------------------------------------------


def test_the_transition_table() -> None:
    assert step(State.STARTING, Event.READY) is State.SERVING
    for state in (State.STARTING, State.SERVING):
        assert step(state, Event.EXITED) is State.CRASHED
        assert step(state, Event.STOP) is State.DRAINING
    assert step(State.STARTING, Event.FAILED) is State.CRASHED
    assert step(State.DRAINING, Event.QUIET) is State.STOPPED
    assert step(State.DRAINING, Event.EXITED) is State.STOPPED
    # A late "ready" from a worker told to stop does not make it serve again.
    assert step(State.DRAINING, Event.READY) is State.DRAINING
    # Terminal states stay terminal whatever arrives (invariant 6: unlisted pairs).
    for state in (State.STOPPED, State.CRASHED):
        for event in Event:
            assert step(state, event) is state
            assert (state, event) not in TRANSITIONS
    assert {State.STARTING, State.SERVING, State.DRAINING} == ANSWERING


def test_restart_backoff_doubles_per_quick_crash_and_is_capped() -> None:
    assert restart_delay(0.2, 0) == 0.2
    assert restart_delay(0.2, 1) == 0.4
    assert restart_delay(0.2, 3) == 1.6
    assert restart_delay(0.2, 50) == 10.0


# -- kill -9 ----------------------------------------------------------------------------


@dataclass
class SlotLoad:
    """UDP clients, each on its own source port, so each talks to one slot only."""

    port: int
    clients: int = 16
    running: bool = True
    sent: dict[int, int] = field(default_factory=dict)
    lost: dict[int, int] = field(default_factory=dict)
    pids: dict[int, set[int]] = field(default_factory=dict)

    async def client(self, client: int) -> None:
        loop = asyncio.get_running_loop()
        self.sent[client] = self.lost[client] = 0
        self.pids[client] = set()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(("127.0.0.1", self.port))
            for n in range(20_000):
                if not self.running:
                    return
                qid = n & 0xFFFF
                sock.send(qid.to_bytes(2, "big") + b"\x01\x00" + bytes(8))
                self.sent[client] += 1
                try:
                    async with asyncio.timeout(3.0):
                        reply = await loop.sock_recv(sock, 512)
                        while reply[:2] != qid.to_bytes(2, "big"):
                            reply = await loop.sock_recv(sock, 512)
                except TimeoutError:
                    self.lost[client] += 1
                    continue
                self.pids[client].add(parse(reply)[0])
                await asyncio.sleep(0.002)

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.client(c)) for c in range(self.clients)]


async def until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Slots:
    """Remembers which slot every pid served, as the pool reports it."""

    def __init__(self, pool: WorkerPool[SlowTable]) -> None:
        self.pool = pool
        self.of: dict[int, int] = {}

    def sample(self) -> None:
        for pid, index, _state in self.pool.processes():
            self.of[pid] = index

    def state_of(self, pid: int) -> State | None:
        return next((s for p, _i, s in self.pool.processes() if p == pid), None)

    async def watch(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.005)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("when", ["serving", "just-forked", "during-publish", "during-recycle"])
def test_kill9_in_any_state_is_reforked_and_other_slots_lose_nothing(when: str) -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        slots = Slots(pool)
        watcher = asyncio.create_task(slots.watch())
        load = SlotLoad(port)
        clients = load.start()
        killed: set[int] = set()  # slots that lost a worker
        try:
            await asyncio.sleep(0.3)
            victim_slot = 0
            if when == "serving":
                victim = pool.pids[victim_slot]
                kill(victim)
            elif when == "just-forked":
                # Kill a serving worker, then its successor before it serves.
                table.start_delay = 0.5
                kill(pool.pids[victim_slot])
                await until(lambda: pool.restarts == 1)
                (victim,) = [p for p, i, s in pool.processes() if i == 0 and s is State.STARTING]
                # A slot without a serving worker: the zones are not answered everywhere.
                assert pool.served_generation() is None
                assert pool.status()["serving"] == 1
                kill(victim)
                await until(lambda: pool.restarts == 2)
                table.start_delay = 0.0
            elif when == "during-publish":
                # The new worker is starting; kill it: the pass fails and is tried again.
                table.start_delay = 0.5
                table.version = 2
                generation = pool.publish()
                await until(lambda: any(s is State.STARTING for _p, _i, s in pool.processes()))
                victim = next(p for p, _i, s in pool.processes() if s is State.STARTING)
                victim_slot = next(i for p, i, _s in pool.processes() if p == victim)
                kill(victim)
                await asyncio.sleep(0.1)
                table.start_delay = 0.0
                assert await pool.wait_published(generation, timeout=10)
            else:  # during-recycle: the old worker is killed while its successor starts
                table.start_delay = 0.5
                table.version = 3
                recycling = asyncio.create_task(pool.recycle())
                await until(lambda: any(s is State.STARTING for _p, _i, s in pool.processes()))
                victim_slot = next(i for _p, i, s in pool.processes() if s is State.STARTING)
                victim = pool.pids[victim_slot]
                kill(victim)
                table.start_delay = 0.0
                assert await recycling
            killed.add(victim_slot)
            # Re-forked and answering, on every slot, with the current version.
            await until(lambda: pool.served_generation() is not None)
            await until(lambda: len(pool.pids) == 2 and victim not in pool.pids)
            await asyncio.sleep(0.3)
            load.running = False
            await asyncio.wait_for(asyncio.gather(*clients), 10)
            slots.sample()
            for client, pids in load.pids.items():
                client_slots = {slots.of[pid] for pid in pids}
                assert len(client_slots) == 1, (client, pids)  # one source port, one slot
                if not client_slots & killed:
                    assert load.lost[client] == 0, f"client {client} lost queries"
            assert sum(load.sent.values()) - sum(load.lost.values()) > 200
            assert all(load.pids.values())  # every client was answered
            assert all(slots.state_of(pid) is State.SERVING for pid in pool.pids)
            await until(lambda: reaped(victim))
        finally:
            watcher.cancel()
            load.running = False
            await pool.stop(timeout=3)
        assert no_zombie_children()

    run(scenario)


def test_a_worker_killed_while_the_main_was_busy_is_reforked() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        try:
            victim = pool.pids[0]
            kill(victim)
            time.sleep(1.0)  # the main process is busy: no loop pass sees the exit now
            await until(lambda: pool.restarts == 1 and len(pool.pids) == 2)
            assert victim not in pool.pids and reaped(victim)
            await until(lambda: pool.served_generation() is not None)
        finally:
            await pool.stop(timeout=3)

    run(scenario)


def test_a_worker_that_stops_reading_its_channel_does_not_block_the_main() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table, max_backlog=4 << 20)
        await pool.start()
        stuck, healthy = pool.pids
        try:
            os.kill(stuck, signal.SIGSTOP)  # reads nothing from now on
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            ticking = asyncio.create_task(ticker())
            padding = b"x" * (256 << 10)
            # 8 MiB for a peer that reads nothing: a blocking write would hang here.
            for _ in range(32):
                pool.broadcast(padding)
                await asyncio.sleep(0.01)  # the healthy worker keeps up
            seq = pool.broadcast(7)
            # The healthy worker got everything; the stuck one was killed when its backlog
            # passed max_backlog, and its successor (forked from the main) is current.
            assert await pool.wait_applied(seq, timeout=10)
            ticking.cancel()
            assert ticks > 0
            await until(lambda: pool.restarts == 1 and len(pool.pids) == 2)
            assert healthy in pool.pids and stuck not in pool.pids
            await until(lambda: reaped(stuck))
        finally:
            with_stopped = [p for p in (stuck,) if not reaped(p)]
            for pid in with_stopped:
                os.kill(pid, signal.SIGCONT)
            await pool.stop(timeout=3)

    run(scenario)


def test_a_published_generation_is_served_once_every_slot_was_reforked_after_it() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        try:
            before = set(pool.pids)
            first = pool.publish()
            table.version = 5  # in the main's table before the forks happen
            second = pool.publish()
            assert await pool.wait_published(second, timeout=10)
            assert pool.served_generation() == second > first
            assert not set(pool.pids) & before
            await until(lambda: pool.recycles == 1)  # two publishes in one loop pass: one
            await asyncio.sleep(0.3)
            assert pool.recycles == 1  # re-fork pass, and nothing left to do after it
            for qid in range(40):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(2)
                    query = qid.to_bytes(2, "big") + b"\x01\x00" + bytes(8)
                    sock.sendto(query, ("127.0.0.1", port))
                    assert parse(sock.recv(512))[1] == 5
        finally:
            await pool.stop(timeout=3)
        assert not await pool.wait_published(second + 1, timeout=1)

    run(scenario)


def test_a_restarted_worker_that_never_gets_ready_is_killed_and_reforked() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table, ready_timeout=0.5)
        await pool.start()
        try:
            table.start_delay = 30.0  # hangs while building its responder
            victim = pool.pids[0]
            kill(victim)
            await until(lambda: pool.restarts == 1)
            (hung,) = [p for p, i, s in pool.processes() if i == 0 and s is State.STARTING]
            await until(lambda: reaped(hung))  # killed after ready_timeout, then reaped
            table.start_delay = 0.0
            await until(lambda: pool.served_generation() is not None)
            assert pool.restarts >= 2 and hung not in pool.pids
        finally:
            await pool.stop(timeout=3)

    run(scenario)


def test_publishes_during_a_pass_are_served_by_the_next_pass_at_the_latest() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        try:
            table.start_delay = 0.3  # each pass takes a while
            first = pool.publish()
            await until(lambda: any(s is State.STARTING for _p, _i, s in pool.processes()))
            tickets = []
            for version in range(2, 12):  # a storm while the first pass runs
                table.version = version
                tickets.append(pool.publish())
                await asyncio.sleep(0.01)
            assert await pool.wait_published(tickets[-1], timeout=10)
            assert pool.served_generation() == tickets[-1] > first
            await until(lambda: pool.recycles == 2)  # the pass in progress and one more
            await asyncio.sleep(0.5)
            assert pool.recycles == 2
            seen = await answers_from_every_worker(pool, port)  # type: ignore[arg-type]
            assert set(seen.values()) == {11}
        finally:
            await pool.stop(timeout=3)

    run(scenario)


def test_a_burst_of_publishes_is_carried_by_few_passes_and_a_lone_one_goes_at_once() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        # Passes start at most every 5 s here, so the burst below (~0.2 s) cannot reach a
        # third pass however slow the machine is; back to back it would take several.
        pool = new_pool(port, table, publish_interval=5.0)
        await pool.start()
        try:
            first = pool.publish()  # after an idle pool: its pass starts at once
            assert await pool.wait_published(first, timeout=4)
            await until(lambda: pool.recycles == 1)
            tickets = []
            for version in range(2, 12):
                table.version = version
                tickets.append(pool.publish())
                await asyncio.sleep(0.02)
            assert pool.recycles == 1  # the burst waits for the interval...
            assert await pool.wait_published(tickets[-1], timeout=15)
            await until(lambda: pool.recycles == 2)  # ...and one pass carries all ten
            await asyncio.sleep(0.3)
            assert pool.recycles == 2
            seen = await answers_from_every_worker(pool, port)  # type: ignore[arg-type]
            assert set(seen.values()) == {11}
        finally:
            await pool.stop(timeout=3)

    run(scenario)
