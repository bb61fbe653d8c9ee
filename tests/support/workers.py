"""A stand-in zone table and responder for driving a WorkerPool from a test: every answer
says which worker process gave it and which table version it saw."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from authd.serve.workers import WorkerPool


class Table:
    """Stands in for the zone table: the version every answer reports."""

    def __init__(self) -> None:
        self.version = 1


class VersionResponder:
    """Answers with the worker's pid and the table version it sees right now."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.answered = 0

    def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None:
        self.answered += 1
        return query[:2] + f"pid={os.getpid()} v={self.table.version}".encode()


def apply_update(message: object, table: Table) -> None:
    if message == "boom":
        raise ValueError("cannot apply boom")
    assert isinstance(message, int)
    table.version = message


def parse(reply: bytes) -> tuple[int, int]:
    pid, version = reply[2:].decode().split()
    return int(pid.removeprefix("pid=")), int(version.removeprefix("v="))


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(asyncio.wait_for(scenario(), 25))


async def ask_udp(port: int, qid: int) -> tuple[int, int]:
    """One query from a fresh source port (SO_REUSEPORT hashes on it) -> (pid, version)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        for _ in range(3):
            sock.send(qid.to_bytes(2, "big") + b"\x01\x00" + bytes(8))
            try:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 512), 1.0)
                return parse(reply)
            except TimeoutError:
                continue
    raise AssertionError("no UDP answer")


async def ask_tcp(port: int) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    query = b"\x00\x07\x01\x00" + bytes(8)
    writer.write(len(query).to_bytes(2, "big") + query)
    size = int.from_bytes(await reader.readexactly(2), "big")
    reply = await reader.readexactly(size)
    writer.close()
    return parse(reply)


async def answers_from_every_worker(pool: WorkerPool[Table], port: int) -> dict[int, int]:
    """{pid: version} as answered by each live worker (bounded number of tries)."""
    seen: dict[int, int] = {}
    for qid in range(400):
        pid, version = await ask_udp(port, qid)
        seen[pid] = version
        if set(seen) >= set(pool.pids):
            break
    return seen


def answered_counter(responder: object) -> dict[str, int]:
    assert isinstance(responder, VersionResponder)
    return {"answered": responder.answered}


def new_pool(port: int, table: Table, count: int = 2) -> WorkerPool[Table]:
    return WorkerPool(
        count,
        [("127.0.0.1", port)],
        table,
        VersionResponder,
        apply_update,
        read_counters=answered_counter,
        counter_interval=0.1,
        restart_delay=0.05,
    )


def gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its reaper counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


class SlowTable(Table):
    """A table whose forks can be told to start slowly or not at all."""

    def __init__(self) -> None:
        super().__init__()
        self.main_pid = os.getpid()
        self.start_delay = 0.0  # seconds a worker sleeps before it serves
        self.broken = False  # workers forked now fail to build their responder


def make_responder(table: SlowTable) -> VersionResponder:
    if os.getpid() != table.main_pid:
        if table.broken:
            raise RuntimeError("responder cannot be built")
        time.sleep(table.start_delay)
    return VersionResponder(table)


def reaped(pid: int) -> bool:
    """Exited and reaped: not even a zombie is left."""
    return not Path(f"/proc/{pid}").exists()


def no_zombie_children() -> bool:
    try:
        return os.waitpid(-1, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True  # no children at all
