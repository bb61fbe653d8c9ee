"""Worker processes on SO_REUSEPORT: serving, update broadcast, restart, stop, no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from authd.serve.workers import worker_count
from tests.support.system import free_port
from tests.support.workers import Table, answers_from_every_worker, ask_tcp, gone, new_pool, run


def test_worker_count_zero_means_one_per_cpu() -> None:
    assert worker_count(3) == 3
    assert worker_count(0) == len(os.sched_getaffinity(0))


def test_two_workers_serve_receive_updates_restart_and_stop() -> None:
    port = free_port()
    table = Table()

    async def scenario() -> None:
        pool = new_pool(port, table)
        every_pid: set[int] = set()
        await pool.start()
        try:
            assert len(pool.pids) == 2
            every_pid.update(pool.pids)
            seen = await answers_from_every_worker(pool, port)
            assert seen == {pid: 1 for pid in pool.pids}
            assert (await ask_tcp(port))[1] == 1

            # An update reaches both: after the wait, every worker answers the new version.
            table.version = 2  # the app publishes in the main process first
            assert await pool.broadcast_and_wait(2, timeout=5)
            seen = await answers_from_every_worker(pool, port)
            assert seen == {pid: 2 for pid in pool.pids}

            # A worker whose update fails makes the wait report it.
            assert not await pool.broadcast_and_wait("boom", timeout=5)

            # Counters arrive from the workers and add up.
            await asyncio.sleep(0.3)
            before = pool.collect_counters()
            assert before["udp.received"] >= 2
            assert before["answered"] == before["udp.sent"] + before["tcp.responses"]

            # kill -9 one worker: a new one replaces it with the current version.
            victim = pool.pids[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while (victim in pool.pids or len(pool.pids) < 2) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert victim not in pool.pids and len(pool.pids) == 2
            assert pool.restarts == 1
            every_pid.update(pool.pids)
            await asyncio.sleep(0.3)  # let the new worker bind
            seen = await answers_from_every_worker(pool, port)
            assert seen == {pid: 2 for pid in pool.pids}
            # Totals stay monotonic across the restart.
            assert pool.collect_counters()["udp.received"] >= before["udp.received"]
            assert await pool.broadcast_and_wait(3, timeout=5)
        finally:
            await pool.stop(timeout=3)
        assert pool.pids == []
        assert all(gone(pid) for pid in every_pid)

    run(scenario)


def test_bind_failure_is_reported_by_start() -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: the workers cannot share it
            port = holder.getsockname()[1]
            pool = new_pool(port, Table(), count=1)
            try:
                await pool.start(ready_timeout=5)
            except RuntimeError as exc:
                assert "Address already in use" in str(exc)
            else:
                raise AssertionError("start() succeeded on a taken port")
            assert pool.pids == []

    run(scenario)


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, uvloop
    sys.path.insert(0, {root!r})
    from authd.serve.workers import WorkerPool

    class R:
        def respond(self, query, tcp, client=None):
            return query

    async def main():
        pool = WorkerPool(2, [("127.0.0.1", {port})], None, lambda zones: R(),
                          lambda message, zones: None)
        await pool.start()
        print(" ".join(map(str, pool.pids)), flush=True)
        await asyncio.sleep(60)

    uvloop.run(main())
    """
)


def test_workers_exit_when_the_main_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    root = str(Path(__file__).resolve().parents[3])
    script.write_text(ORPHAN_SCRIPT.format(root=root, port=free_port()))
    main = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert main.stdout is not None
        pids = [int(p) for p in main.stdout.readline().split()]
        assert len(pids) == 2 and not any(gone(pid) for pid in pids)
        main.kill()  # SIGKILL: no chance to stop its workers
        main.wait(5)
        deadline = time.monotonic() + 5
        while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(gone(pid) for pid in pids)
    finally:
        if main.poll() is None:
            main.kill()
            main.wait(5)
