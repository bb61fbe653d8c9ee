"""The processes of the many-zones benchmark: the knotd primary and the secondary under test.

Each runs in its own directory on free loopback ports, in its own session (a Ctrl-C at the
terminal reaches the harness, not the servers), and is stopped by PID: SIGTERM, a grace
period, then SIGKILL for whatever of its process tree is still alive. A server that never
finishes (or never stops) costs at most the phase timeout plus the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from authd.bench import cpu, peers
from authd.bench import zones_config as zc
from authd.bench.zones_report import StopResult

SBIN = "/usr/sbin:/sbin:/usr/local/sbin"


class SetupError(RuntimeError):
    """A program is missing or a server could not be started; the message says which."""


def find_tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN)


def spawn(
    kind: str, argv: Sequence[str], workdir: Path, host: str, port: int, cpus: set[int]
) -> peers.RunningServer:
    """Start argv in workdir (output to stderr.log), pinned to cpus, without waiting."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "stderr.log").open("ab")

    def pin_child() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=workdir,
            preexec_fn=pin_child,
            start_new_session=True,
        )
    except OSError as error:
        raise SetupError(f"{kind}: cannot run {argv[0]}: {error}") from None
    finally:
        log.close()
    return peers.RunningServer(kind, host, port, process, workdir, set(cpus))


def stop(server: peers.RunningServer, grace: float) -> StopResult:
    """SIGTERM, wait up to `grace` for the whole tree, then SIGKILL what is left (by PID)."""
    began = time.monotonic()
    server.known_pids |= set(cpu.tree_pids(server.pid))
    killed = False
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            killed = True
    children = server.known_pids - {server.pid}
    deadline = time.monotonic() + (0.5 if killed else grace)
    while time.monotonic() < deadline and any(cpu.alive(pid) for pid in children):
        time.sleep(0.05)
    killed = killed or any(cpu.alive(pid) for pid in children)
    server.stop(grace=2.0)  # SIGKILL what remains, only processes that are still ours
    return StopResult(time.monotonic() - began, killed)


def alive(server: peers.RunningServer) -> bool:
    return server.process.poll() is None


async def run_command(argv: Sequence[str], timeout: float) -> tuple[bool, str]:
    """Run a control command to completion (killed at the timeout); (succeeded, last line)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return False, f"no reply within {timeout:.0f} s"
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    return process.returncode == 0, (lines[-1].strip() if lines else "")[:200]


# --- the primary ---------------------------------------------------------------------------

_STAT = re.compile(r"^mod-stats\.(query-type|server-operation)\[(\w+)\]\s*=\s*(\d+)", re.MULTILINE)


def parse_query_types(text: str) -> dict[str, int]:
    """`knotc stats` output -> queries received per type, e.g. {"SOA": 12, "AXFR": 3}.

    mod-stats counts normal queries by QTYPE (`query-type`) but transfers only as server
    operations (`server-operation[axfr]`, `[ixfr]`)."""
    counts: dict[str, int] = {}
    for counter, key, value in _STAT.findall(text):
        if counter == "query-type":
            counts[key] = int(value)
        elif key in ("axfr", "ixfr"):
            counts[key.upper()] = int(value)
    return counts


class Primary:
    """knotd serving every zone of the run from `zone_dir`, NOTIFY to the secondary."""

    def __init__(
        self,
        workdir: Path,
        zone_dir: Path,
        zones: Sequence[str],
        notify: zc.Address,
        host: str,
        cpus: set[int],
    ) -> None:
        knotd, knotc = find_tool("knotd"), find_tool("knotc")
        if knotd is None or knotc is None:
            raise SetupError("knotd/knotc not found (Debian package knot): no primary")
        self.knotd, self.knotc = knotd, knotc
        self.workdir = workdir
        self.zones = list(zones)
        self.address = zc.Address(host, peers.free_port(host))
        self.cpus = cpus
        self.conf = workdir / "knot.conf"
        (workdir / "run").mkdir(parents=True, exist_ok=True)
        (workdir / "db").mkdir(exist_ok=True)
        self.conf.write_text(
            zc.knot_primary_config(workdir, self.address, zone_dir, self.zones, notify)
        )
        self.server: peers.RunningServer | None = None

    def start(self) -> peers.RunningServer:
        argv = [self.knotd, "-c", str(self.conf)]
        self.server = spawn("primary", argv, self.workdir, *self._hostport(), self.cpus)
        return self.server

    def _hostport(self) -> tuple[str, int]:
        return self.address.host, self.address.port

    def control(self, *args: str, timeout: float = 120.0) -> str:
        done = subprocess.run(
            [self.knotc, "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise SetupError(f"knotc {' '.join(args)}: {(done.stdout + done.stderr).strip()}")
        return done.stdout

    def query_types(self) -> dict[str, int]:
        return parse_query_types(self.control("stats"))

    def stop(self, grace: float) -> None:
        if self.server is not None:
            stop(self.server, grace)
            self.server = None


# --- the secondary under test ----------------------------------------------------------------


class Secondary:
    """One server under test as a secondary of the primary, for the zones it is given."""

    def __init__(self, kind: str, settings: zc.SecondarySettings, cpus: set[int]) -> None:
        program = peers.find_program(kind)
        control = {"authd": program, "knot": find_tool("knotc"), "nsd": find_tool("nsd-control")}
        if program is None or control[kind] is None:
            tool = {"authd": "authd", "knot": "knotd/knotc", "nsd": "nsd/nsd-control"}[kind]
            raise SetupError(f"{kind}: {tool} not found")
        self.kind = kind
        self.program = program
        self.control_program = str(control[kind])
        self.settings = settings
        self.cpus = cpus
        self.conf = zc.config_path(kind, settings.workdir)
        self.server: peers.RunningServer | None = None
        settings.workdir.mkdir(parents=True, exist_ok=True)
        (settings.workdir / "db").mkdir(exist_ok=True)
        (settings.workdir / "run").mkdir(exist_ok=True)
        if kind == "authd":
            key = settings.workdir / "xfr.key"
            key.write_text(zc.authd_key_file())
            key.chmod(0o600)

    @property
    def host(self) -> str:
        return self.settings.listen.host

    @property
    def port(self) -> int:
        return self.settings.listen.port

    def write_config(self, zones: Sequence[str]) -> None:
        """Write the config atomically (a reload never reads half a file)."""
        text = zc.secondary_config(self.kind, self.settings, zones)
        scratch = self.conf.with_suffix(".tmp")
        scratch.write_text(text)
        scratch.replace(self.conf)

    def start(self) -> peers.RunningServer:
        argv = zc.serve_command(self.kind, self.program, self.conf)
        self.server = spawn(self.kind, argv, self.settings.workdir, self.host, self.port, self.cpus)
        return self.server

    def alive(self) -> bool:
        return self.server is not None and alive(self.server)

    def reload_argv(self) -> list[str]:
        return zc.reload_command(self.kind, self.control_program, self.conf)

    def stop(self, grace: float) -> StopResult | None:
        if self.server is None:
            return None
        result = stop(self.server, grace)
        self.server = None
        return result

    def pin(self) -> None:
        if self.server is not None and self.cpus:
            peers.pin_tree(self.server.pid, self.cpus)

    def log_tail(self) -> str:
        return self.server.log_tail() if self.server is not None else ""
