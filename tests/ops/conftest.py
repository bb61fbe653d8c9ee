"""A live `authd serve` subprocess on free loopback ports, with everything in a temp dir.

The config is the repo's default authd.toml with its ports, state dir and control socket
moved into the test's directory, so the tests exercise the config users start from.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.system import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ZONE = REPO / "zones" / "example.test.zone"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 20.0


def make_config(dns_port: int, metrics_port: int, workers: int = 1) -> str:
    """The repo's authd.toml, pointed at the given ports and at paths inside its directory."""
    text = (REPO / "authd.toml").read_text()
    text = re.sub(r"@5300\b", f"@{dns_port}", text)
    text = re.sub(r"@9853\b", f"@{metrics_port}", text)
    text = re.sub(r'(?m)^state-dir = "[^"]*"', 'state-dir = "state"', text)
    text = re.sub(r'(?m)^control-socket = "[^"]*"', 'control-socket = "authd.sock"', text)
    text = re.sub(r"(?m)^workers = \d+", f"workers = {workers}", text)
    return text


@dataclass
class LiveServer:
    directory: Path
    config: Path
    port: int
    metrics_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def zone_file(self) -> Path:
        return self.directory / "zones" / "example.test.zone"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as reply:
                return int(reply.status), reply.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def authd(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run the `authd` CLI as users do, from the server's directory."""
        return subprocess.run(
            [str(VENV_BIN / "authd"), *args],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def start_server(
    directory: Path, *, workers: int = 1, zone_text: str | None = None, journal: bool = False
) -> LiveServer:
    """Put the example zone (or `zone_text` in its place) and the config into `directory`
    and start `authd serve` there. journal=True runs it as systemd would with its output
    to the journal (JOURNAL_STREAM names the log file's device and inode)."""
    (directory / "zones").mkdir(parents=True, exist_ok=True)
    zone_file = directory / "zones" / EXAMPLE_ZONE.name
    if zone_text is None:
        shutil.copy(EXAMPLE_ZONE, zone_file)
    else:
        zone_file.write_text(zone_text)
    dns_port, metrics_port = free_port(), free_port()
    config = directory / "authd.toml"
    config.write_text(make_config(dns_port, metrics_port, workers))
    log = directory / "authd.log"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("JOURNAL_STREAM", None)
    with log.open("wb") as sink:
        if journal:
            stat = os.fstat(sink.fileno())
            env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        process = subprocess.Popen(
            [str(VENV_BIN / "authd"), "serve", "-c", str(config)],
            cwd=directory,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = LiveServer(directory, config, dns_port, metrics_port, process, log)
    try:
        wait_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"authd serve exited {server.process.returncode}:\n{server.stderr()}"
            )
        try:
            if server.get("/readyz")[0] == 200 and (server.directory / "authd.sock").exists():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"authd serve not ready after {START_TIMEOUT} s:\n{server.stderr()}")


def stop_server(server: LiveServer) -> None:
    """SIGTERM our own process by PID, then SIGKILL if it does not stop in time."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path / "live")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a module's read-only tests (starting and stopping one takes seconds)."""
    server = start_server(tmp_path_factory.mktemp("shared"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[[str], LiveServer]]:
    """Start servers on demand (each in its own subdirectory); all are stopped at the end."""
    started: list[LiveServer] = []

    def start(name: str) -> LiveServer:
        server = start_server(tmp_path / name)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            stop_server(server)


def worker_children(pid: int) -> list[tuple[int, str]]:
    """(pid, state letter) of the main process's worker children (not validation ones)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" not in command:
            found.append((int(child), stat.rsplit(")", 1)[1].split()[0]))
    return found
