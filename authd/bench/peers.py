"""Start knotd, nsd and authd on the same zone, on free loopback ports, pinned to the same cores.

Config generation is pure (a function of the settings); starting, pinning, readiness and
stopping are the I/O around it. Only processes started here are ever signalled, by PID.
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
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from authd.bench import cpu

SERVER_KINDS = ("authd", "knot", "nsd")


class PeerError(RuntimeError):
    """A server could not be started or did not become ready; the message says why."""


@dataclass(frozen=True)
class PeerSettings:
    origin: str  # with trailing dot
    zone_file: Path
    host: str
    port: int
    workers: int
    workdir: Path
    listen: str = ""  # the address the server binds ("" = host); 0.0.0.0 / :: = wildcard

    @property
    def bind(self) -> str:
        return self.listen or self.host


def knot_config(s: PeerSettings) -> str:
    """Knot DNS 3.x: N UDP and N TCP workers, the zone loaded as is, no journal, no checks."""
    return f"""server:
    rundir: "{s.workdir}"
    pidfile: "{s.workdir}/knot.pid"
    listen: {s.bind}@{s.port}
    udp-workers: {s.workers}
    tcp-workers: {s.workers}
    background-workers: 1
control:
    listen: "{s.workdir}/knot.sock"
log:
  - target: stderr
    any: warning
database:
    storage: "{s.workdir}/db"
template:
  - id: default
    storage: "{s.workdir}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: {s.origin}
    file: "{s.zone_file}"
"""


def nsd_config(s: PeerSettings) -> str:
    """NSD 4: server-count N, rate limiting off (it would silently drop a single benchmark
    source), no database file, no privilege drop, no remote control."""
    ip6 = "yes" if ":" in s.bind else "no"
    reuseport = "yes" if s.workers > 1 else "no"
    return f"""server:
    ip-address: {s.bind}@{s.port}
    port: {s.port}
    do-ip6: {ip6}
    server-count: {s.workers}
    reuseport: {reuseport}
    username: ""
    chroot: ""
    zonesdir: "{s.workdir}"
    pidfile: "{s.workdir}/nsd.pid"
    database: ""
    zonelistfile: "{s.workdir}/zone.list"
    xfrdfile: "{s.workdir}/xfrd.state"
    xfrdir: "{s.workdir}"
    logfile: "{s.workdir}/nsd.log"
    verbosity: 0
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: {s.origin}
    zonefile: "{s.zone_file}"
"""


def authd_config(s: PeerSettings) -> str:
    """authd (see DESIGN.md's config shape): the zone from a file, metrics off."""
    return f"""[server]
listen = ["{s.bind}@{s.port}"]
workers = {s.workers}
state-dir = "{s.workdir}"
control-socket = "{s.workdir}/authd.sock"
metrics = ""

[[zone]]
name = "{s.origin}"
file = "{s.zone_file}"
"""


def find_program(kind: str) -> str | None:
    """The server binary for kind, or None when it is not installed."""
    if kind == "authd":
        beside = Path(sys.executable).parent / "authd"
        return str(beside) if beside.exists() else shutil.which("authd")
    name = {"knot": "knotd", "nsd": "nsd"}[kind]
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def command(kind: str, program: str, config: Path) -> list[str]:
    if kind == "authd":
        return [program, "serve", "-c", str(config)]
    if kind == "knot":
        return [program, "-c", str(config)]
    return [program, "-d", "-c", str(config)]  # nsd: -d stays in the foreground


def write_config(kind: str, settings: PeerSettings) -> Path:
    settings.workdir.mkdir(parents=True, exist_ok=True)
    (settings.workdir / "db").mkdir(exist_ok=True)
    makers = {"authd": authd_config, "knot": knot_config, "nsd": nsd_config}
    suffix = {"authd": "toml", "knot": "conf", "nsd": "conf"}[kind]
    path = settings.workdir / f"{kind}.{suffix}"
    path.write_text(makers[kind](settings))
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on host right now (bind to 0, read, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
            return port
    raise PeerError(f"no port free for both UDP and TCP on {host}")


def pin_tree(root: int, cpus: set[int]) -> int:
    """Pin every thread of every process in root's tree to cpus (what `taskset -a -p` does).

    Knot pins its UDP workers itself at start and ignores the mask it inherited, so this runs
    after the server is ready. Returns the number of threads pinned.
    """
    pinned = 0
    for pid in cpu.tree_pids(root):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
                pinned += 1
            except ProcessLookupError:
                continue
    return pinned


def tree_affinity(root: int) -> set[int]:
    """The union of the CPU masks of every thread in root's tree (to verify pinning)."""
    seen: set[int] = set()
    for pid in cpu.tree_pids(root):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                seen |= os.sched_getaffinity(tid)
            except ProcessLookupError:
                continue
    return seen


@dataclass
class RunningServer:
    kind: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    cpus: set[int]
    known_pids: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        text = ""
        for name in ("stderr.log", "nsd.log"):
            path = self.workdir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the server, wait, then SIGKILL it and any child of it still alive."""
        self.known_pids |= set(cpu.tree_pids(self.pid))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace)
        # Forked children (NSD's servers and xfrd, authd's workers) exit on their own once the
        # parent is gone; give them the grace period, then kill those that are still ours.
        children = self.known_pids - {self.pid}
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(cpu.alive(pid) for pid in children):
            time.sleep(0.05)
        for pid in children:
            # Only if it still is ours: its parent is a PID we started or it was orphaned to
            # init, so a recycled PID of someone else's process is never signalled.
            stat = cpu.read_stat(pid)
            if stat is not None and stat.state != "Z" and stat.ppid in self.known_pids | {1}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start(
    kind: str, settings: PeerSettings, cpus: set[int], ready_timeout: float = 30.0
) -> RunningServer:
    """Start server `kind` on settings, pinned to cpus, and wait until it answers the SOA."""
    program = find_program(kind)
    if program is None:
        raise PeerError(f"{kind}: program not found")
    config = write_config(kind, settings)
    stderr = (settings.workdir / "stderr.log").open("wb")

    def pin_child() -> None:
        os.sched_setaffinity(0, cpus)

    process = subprocess.Popen(
        command(kind, program, config),
        stdin=subprocess.DEVNULL,
        stdout=stderr,
        stderr=stderr,
        cwd=settings.workdir,
        preexec_fn=pin_child,
        start_new_session=True,  # a Ctrl-C at the terminal reaches the harness, not the server
    )
    stderr.close()
    server = RunningServer(kind, settings.host, settings.port, process, settings.workdir, cpus)
    try:
        wait_ready(server, settings.origin, ready_timeout)
        # Let late-starting workers appear before pinning and recording the tree.
        time.sleep(0.3)
        pin_tree(server.pid, cpus)
        server.known_pids = set(cpu.tree_pids(server.pid))
    except BaseException:
        server.stop()
        raise
    return server


def soa_ready(host: str, port: int, origin: str, timeout: float = 0.5) -> bool:
    """True when the server answers the zone's SOA authoritatively."""
    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout)
    except (TimeoutError, OSError, dns.exception.DNSException):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AA)


def wait_ready(server: RunningServer, origin: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise PeerError(
                f"{server.kind} exited with status {server.process.returncode} at start:\n"
                + server.log_tail()
            )
        if soa_ready(server.host, server.port, origin):
            return
        time.sleep(0.1)
    raise PeerError(
        f"{server.kind} did not answer SOA {origin} on {server.host}@{server.port} "
        f"within {timeout:.0f} s:\n{server.log_tail()}"
    )
