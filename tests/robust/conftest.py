"""A live `authd serve` subprocess for the hostile-client tests, and what we watch of it.

The config is written here (not derived from authd.toml) so each test states the limits
it tests: one worker, the example zone, metrics off, the control socket and state in the
test's directory, and whatever `[server]` / `[rrl]` lines the test adds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support.system import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ZONE = REPO / "zones" / "example.test.zone"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 20.0
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def config_text(port: int, server_lines: str = "", extra: str = "") -> str:
    return f"""\
[server]
listen = ["127.0.0.1@{port}"]
workers = 1
state-dir = "state"
control-socket = "authd.sock"
metrics = ""
{server_lines}

[[zone]]
name = "example.test"
file = "zones/example.test.zone"

{extra}
"""


@dataclass
class Server:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """The server process and its descendants (the workers)."""
        found = [self.process.pid]
        index = 0
        while index < len(found):
            pid = found[index]
            index += 1
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                except OSError:
                    continue
                found.extend(int(child) for child in children)
        return found

    def rss_kib(self) -> int:
        """Resident memory of the whole process tree (statm: resident pages)."""
        total = 0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
            except (OSError, IndexError, ValueError):
                continue
        return total

    def tcp_connections(self) -> int:
        """Server-side TCP sockets on our port that are not closed yet (from /proc/net/tcp):
        established, or half-closed by the client and waiting for the server to close."""
        wanted = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == self.port and fields[3] in wanted:
                    count += 1
        return count

    def ask(
        self, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 2.0
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, use_edns=0)
        if tcp:
            return dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=timeout)
        return dns.query.udp(query, "127.0.0.1", port=self.port, timeout=timeout)


def start_server(
    directory: Path,
    server_lines: str = "",
    extra: str = "",
    *,
    zone_file: Path = EXAMPLE_ZONE,
    module: str = "authd.cli",
) -> Server:
    """Start `python -m <module> serve` (module: authd.cli, or a wrapper taking the same
    arguments) in `directory`, serving `zone_file` as example.test."""
    (directory / "zones").mkdir(parents=True, exist_ok=True)
    shutil.copy(zone_file, directory / "zones" / EXAMPLE_ZONE.name)
    port = free_port()
    config = directory / "authd.toml"
    config.write_text(config_text(port, server_lines, extra))
    log = directory / "authd.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "serve", "-c", str(config)],
            cwd=directory,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    server = Server(directory, port, process, log)
    try:
        _wait_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not server.alive():
            raise AssertionError(f"authd exited {server.process.returncode}:\n{server.output()}")
        try:
            if server.ask("example.test.", "SOA", timeout=0.3).rcode() == dns.rcode.NOERROR:
                return
        except (OSError, dns.exception.Timeout):
            pass
        time.sleep(0.1)
    raise AssertionError(f"authd not answering after {START_TIMEOUT} s:\n{server.output()}")


def stop_server(server: Server) -> None:
    """SIGTERM our own process (it stops its workers), SIGKILL the tree if it hangs."""
    pids = server.pids()
    if server.alive():
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.process.wait(timeout=5)


Launch = Callable[..., Server]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """launch(server_lines="", extra="", **start_server options) starts a server; all are
    stopped after the test."""
    started: list[Server] = []

    def start(server_lines: str = "", extra: str = "", **options: Any) -> Server:
        directory = tmp_path / f"server{len(started)}"
        server = start_server(directory, server_lines, extra, **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            stop_server(server)


def loopback_source(index: int) -> str:
    """A distinct 127.0.x.y source address (all of 127/8 is local on Linux)."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def can_bind(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
