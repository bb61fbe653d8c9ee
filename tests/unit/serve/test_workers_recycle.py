"""Slot sockets owned by the main process, and WorkerPool.recycle(): real processes, loopback.

Every test starts a pool of 2 workers answering "pid=<worker pid> v=<table version>" (see
tests/support/workers.py) and drives it with queries from this process. A query counts as lost when
no answer arrives within its timeout: UDP queries are sent exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from dataclasses import dataclass, field

import pytest

from authd.serve.workers import WorkerPool
from tests.support.system import free_port
from tests.support.workers import (
    SlowTable,
    answered_counter,
    answers_from_every_worker,
    apply_update,
    ask_tcp,
    gone,
    make_responder,
    no_zombie_children,
    parse,
    reaped,
    run,
)

pytestmark = pytest.mark.slow  # worker processes recycled under load

GAUGES = {"tcp.open_connections"}


def new_pool(port: int, table: SlowTable, stop_timeout: float = 2.0) -> WorkerPool[SlowTable]:
    return WorkerPool(
        2,
        [("127.0.0.1", port)],
        table,
        make_responder,
        apply_update,
        read_counters=answered_counter,
        counter_interval=0.05,
        restart_delay=0.05,
        stop_timeout=stop_timeout,
    )


@dataclass
class Load:
    """Continuous queries over UDP (one socket per client) and TCP (a connection per query).

    Clients run until `running` is cleared, at most their query limit; each query waits
    at most 2 s.
    """

    port: int
    udp_sent: int = 0
    udp_answered: int = 0
    tcp_sent: int = 0
    tcp_answered: int = 0
    tcp_retried: int = 0  # the server closed the connection unanswered; asked again (RFC 7766)
    lost: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    # (time the query was sent, version in its answer)
    answers: list[tuple[float, int]] = field(default_factory=list, repr=False)
    running: bool = True

    async def udp_client(self, client: int, limit: int) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(("127.0.0.1", self.port))
            for n in range(limit):
                if not self.running:
                    return
                qid = (client * 4096 + n) & 0xFFFF
                sent_at = time.monotonic()
                sock.send(qid.to_bytes(2, "big") + b"\x01\x00" + bytes(8))
                self.udp_sent += 1
                try:
                    async with asyncio.timeout(2.0):
                        reply = await loop.sock_recv(sock, 512)
                        while reply[:2] != qid.to_bytes(2, "big"):  # never expected
                            reply = await loop.sock_recv(sock, 512)
                except TimeoutError:
                    self.lost.append(f"udp client {client} query {n}")
                    continue
                self.record(sent_at, reply)
                self.udp_answered += 1

    async def tcp_client(self, client: int, limit: int) -> None:
        for n in range(limit):
            if not self.running:
                return
            self.tcp_sent += 1
            for attempt in range(2):
                sent_at = time.monotonic()
                try:
                    async with asyncio.timeout(2.0):
                        reply = await self.tcp_query()
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    if attempt == 0:
                        self.tcp_retried += 1
                        continue
                    self.lost.append(f"tcp client {client} query {n}: {exc!r}")
                except TimeoutError:
                    self.lost.append(f"tcp client {client} query {n}: timeout")
                else:
                    self.record(sent_at, reply)
                    self.tcp_answered += 1
                break

    async def tcp_query(self) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            query = b"\x00\x07\x01\x00" + bytes(8)
            writer.write(len(query).to_bytes(2, "big") + query)
            size = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(size)
        finally:
            writer.close()

    def record(self, sent_at: float, reply: bytes) -> None:
        pid, version = parse(reply)
        self.pids.add(pid)
        self.answers.append((sent_at, version))

    def start(self, udp_clients: int = 12, tcp_clients: int = 3) -> list[asyncio.Task[None]]:
        return [
            *(asyncio.create_task(self.udp_client(c, 20_000)) for c in range(udp_clients)),
            *(asyncio.create_task(self.tcp_client(c, 5_000)) for c in range(tcp_clients)),
        ]


class CounterWatch:
    """Samples collect_counters() and remembers any counter that went down."""

    def __init__(self, pool: WorkerPool[SlowTable]) -> None:
        self.pool = pool
        self.last = pool.collect_counters()
        self.decreases: list[str] = []
        self.samples = 0

    def sample(self) -> None:
        now = self.pool.collect_counters()
        for name, value in self.last.items():
            if name not in GAUGES and now.get(name, 0) < value:
                self.decreases.append(f"{name}: {value} -> {now.get(name, 0)}")
        self.last = now
        self.samples += 1

    async def watch(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.02)


def test_recycle_under_udp_and_tcp_load_loses_no_query() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        try:
            old = set(pool.pids)
            watch = CounterWatch(pool)
            watcher = asyncio.create_task(watch.watch())
            load = Load(port)
            clients = load.start()
            await asyncio.sleep(0.5)
            started = time.monotonic()
            assert await pool.recycle()
            took = time.monotonic() - started
            await asyncio.sleep(0.5)
            load.running = False
            await asyncio.wait_for(asyncio.gather(*clients), 10)
            await asyncio.sleep(0.2)  # the new workers' counters arrive
            watcher.cancel()
            watch.sample()

            print(
                f"recycle took {took:.2f} s; UDP {load.udp_answered}/{load.udp_sent}, "
                f"TCP {load.tcp_answered}/{load.tcp_sent} answered "
                f"({load.tcp_retried} asked again after a close), lost {len(load.lost)}"
            )
            assert load.lost == []
            assert load.udp_answered == load.udp_sent >= 500
            assert load.tcp_answered == load.tcp_sent >= 50
            # A connection just accepted by the old worker is read through its grace period,
            # not closed unanswered: no client has to ask again.
            assert load.tcp_retried == 0
            new = set(pool.pids)
            assert len(new) == 2 and not new & old
            assert pool.recycles == 1 and pool.restarts == 0
            # Old and new workers both answered the load.
            assert load.pids & old and load.pids & new
            assert watch.decreases == [] and watch.samples > 10
            totals = pool.collect_counters()
            assert totals["udp.received"] >= load.udp_sent
            assert totals["answered"] >= load.udp_answered + load.tcp_answered
            # The old workers are reaped: no zombie, no restart.
            assert all(reaped(pid) for pid in old)
            assert no_zombie_children()
            seen = await answers_from_every_worker(pool, port)  # type: ignore[arg-type]
            assert set(seen) == new
        finally:
            await pool.stop(timeout=3)
        assert all(reaped(pid) for pid in new)

    run(scenario)


async def ask_once_udp(port: int, qid: int, timeout: float) -> tuple[int, int, float] | None:
    """One datagram, sent once: (pid, version, seconds to the answer), or None if unanswered."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        sent_at = time.monotonic()
        sock.send(qid.to_bytes(2, "big") + b"\x01\x00" + bytes(8))
        try:
            reply = await asyncio.wait_for(loop.sock_recv(sock, 512), timeout)
        except TimeoutError:
            return None
        return (*parse(reply), time.monotonic() - sent_at)


async def ask_once_tcp(port: int, timeout: float) -> tuple[int, int, float] | None:
    sent_at = time.monotonic()
    try:
        pid, version = await asyncio.wait_for(ask_tcp(port), timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None
    return pid, version, time.monotonic() - sent_at


def test_a_killed_worker_is_reforked_on_its_slot_and_answers_what_queued_meanwhile() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        try:
            victim = pool.pids[0]
            survivor = pool.pids[1]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not gone(victim) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            # Down for restart_delay x 2 (a crash right after its fork): 0.1 s. Queries meant
            # for its slot wait in the slot's sockets, which the main process keeps open.
            asked = [ask_once_udp(port, qid, 4.0) for qid in range(16)]
            asked += [ask_once_tcp(port, 4.0) for _ in range(8)]
            answers = await asyncio.gather(*asked)
            assert None not in answers
            assert pool.restarts == 1 and len(pool.pids) == 2
            (reborn,) = set(pool.pids) - {survivor}
            by_pid: dict[int, list[float]] = {}
            for answer in answers:
                assert answer is not None
                by_pid.setdefault(answer[0], []).append(answer[2])
            assert set(by_pid) == {survivor, reborn}  # 2**-24 odds that all hash to one slot
            # What went to the dead slot waited for its new worker; nothing was refused.
            assert min(by_pid[reborn]) > max(by_pid[survivor])
            assert reaped(victim) and no_zombie_children()
        finally:
            await pool.stop(timeout=3)

    run(scenario)


def test_updates_broadcast_during_a_recycle_reach_the_new_workers() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        try:
            old = set(pool.pids)
            load = Load(port)
            clients = load.start(udp_clients=6, tcp_clients=1)
            table.start_delay = 0.4  # new workers take a while to serve: updates arrive meanwhile
            recycling = asyncio.create_task(pool.recycle())
            await asyncio.sleep(0.1)  # slot 0's new worker is forked and starting
            # Deliberately not published in the main process yet: slot 0's new worker was
            # forked before, so only the message can bring it version 2.
            seq = pool.broadcast(2)
            table.version = 2  # published for later forks (slot 1's new worker)
            confirmed: list[tuple[float, int]] = []
            assert await pool.wait_applied(seq, timeout=5)
            confirmed.append((time.monotonic(), 2))
            version = 2
            while not recycling.done() and version < 60:
                version += 1
                table.version = version
                assert await pool.broadcast_and_wait(version, timeout=5)
                confirmed.append((time.monotonic(), version))
                await asyncio.sleep(0.03)
            assert await recycling
            load.running = False
            await asyncio.wait_for(asyncio.gather(*clients), 10)

            new = set(pool.pids)
            assert len(new) == 2 and not new & old
            assert version >= 3  # updates went out while the new workers started
            seen = await answers_from_every_worker(pool, port)  # type: ignore[arg-type]
            assert seen == {pid: version for pid in new}
            # Once an update was confirmed, no query sent later got an older version.
            assert load.lost == []
            for sent_at, answered in load.answers:
                due = max((v for t, v in confirmed if t < sent_at), default=1)
                assert answered >= due, (sent_at, answered, due)
        finally:
            await pool.stop(timeout=3)

    run(scenario)


def test_port_zero_gives_every_slot_the_same_real_port() -> None:
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(0, table)
        await pool.start()
        try:
            ((host, port),) = pool.bound
            assert host == "127.0.0.1" and port != 0
            seen = await answers_from_every_worker(pool, port)  # type: ignore[arg-type]
            assert set(seen) == set(pool.pids) and len(seen) == 2
            assert (await ask_tcp(port))[0] in pool.pids
            assert await pool.recycle()
            seen = await answers_from_every_worker(pool, port)  # type: ignore[arg-type]
            assert set(seen) == set(pool.pids)
        finally:
            await pool.stop(timeout=3)
        # The main process closed the slots' sockets: the port is free again.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))

    run(scenario)


def test_a_new_worker_that_cannot_start_leaves_the_old_one_serving() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        try:
            old = list(pool.pids)
            table.broken = True
            assert not await pool.recycle()
            assert pool.pids == old and pool.recycles == 0 and pool.restarts == 0
            assert no_zombie_children()
            seen = await answers_from_every_worker(pool, port)  # type: ignore[arg-type]
            assert set(seen) == set(old)
            table.broken = False
            assert await pool.recycle()
            assert not set(pool.pids) & set(old)
        finally:
            await pool.stop(timeout=3)

    run(scenario)


def test_concurrent_recycles_run_one_after_the_other_and_stop_ends_one() -> None:
    port = free_port()
    table = SlowTable()

    async def scenario() -> None:
        pool = new_pool(port, table)
        await pool.start()
        every_pid = set(pool.pids)
        try:
            first, second = await asyncio.gather(pool.recycle(), pool.recycle())
            # The second call's pass finds every slot already forked after it was made.
            assert first and second and pool.served_generation() == pool.generation == 2
            every_pid.update(pool.pids)

            table.start_delay = 1.0
            recycling = asyncio.create_task(pool.recycle())
            await asyncio.sleep(0.2)  # a new worker is starting
        finally:
            await pool.stop(timeout=3)
        assert not await asyncio.wait_for(recycling, 5)
        assert pool.pids == []
        assert all(reaped(pid) for pid in every_pid)
        assert no_zombie_children()

    run(scenario)
