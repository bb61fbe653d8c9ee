"""Launchers for the servers the interop tests talk to: knotd, authd and named.

Each one runs on loopback on a free port with a generated config in its own directory,
is polled until every zone answers its SOA, and is stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from authd.bench.peers import free_port

HOST = "127.0.0.1"
START_TIMEOUT = 20.0

# Identical in both servers so that CHAOS and NSID answers are compared exactly.
IDENTITY = "interop-identity"
VERSION = "interop-version"
NSID = "interop-nsid"


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str  # e.g. "hmac-sha256"
    secret: str  # base64


@dataclass
class RunningServer:
    """A started server process; `stop()` ends it (by PID) and is safe to call twice."""

    name: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    workdir: Path
    log_path: Path
    zones: tuple[str, ...] = field(default_factory=tuple)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def reload(self) -> None:
        """Ask the server to reread its zone files (SIGHUP for knotd and named)."""
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def soa_answers(host: str, port: int, zone: str, timeout: float = 0.5) -> bool:
    """True when the server answers `zone SOA` authoritatively over UDP."""
    query = dns.message.make_query(zone + ".", dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AA)


def _start(
    name: str, args: Sequence[str], workdir: Path, port: int, zones: Sequence[str]
) -> RunningServer:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
        )
    server = RunningServer(name, process, HOST, port, workdir, log_path, tuple(zones))
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(zones)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log()}")
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"{name} did not serve {pending} in {START_TIMEOUT}s:\n{server.log()}"
            )
        if soa_answers(HOST, port, pending[0]):
            pending.pop(0)
        else:
            time.sleep(0.1)
    return server


@contextlib.contextmanager
def running(server: RunningServer) -> Iterator[RunningServer]:
    try:
        yield server
    finally:
        server.stop()


# --- knotd ---------------------------------------------------------------------------------


def knotd_config(workdir: Path, port: int, zones: Mapping[str, Path]) -> str:
    zone_lines = "".join(f'  - domain: "{z}."\n    file: "{p}"\n' for z, p in zones.items())
    return f"""server:
    rundir: "{workdir}/run"
    listen: {HOST}@{port}
    identity: "{IDENTITY}"
    version: "{VERSION}"
    nsid: "{NSID}"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

database:
    storage: "{workdir}/db"

log:
  - target: stderr
    any: warning

template:
  - id: default
    storage: "{workdir}/db"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none

zone:
{zone_lines}"""


def spawn_knotd(knotd: str, conf: Path, workdir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """knotd on `conf`, its output appended to `log_path` (the caller waits until it serves)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [knotd, "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )


def knotc(knotc: str, conf: Path, *args: str) -> str:
    """One knotc command against the knotd of `conf`; its output, or RuntimeError saying why."""
    done = subprocess.run(
        [knotc, "-c", str(conf), *args], capture_output=True, text=True, timeout=20, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"knotc {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def start_knotd(knotd: str, workdir: Path, zones: Mapping[str, Path]) -> RunningServer:
    """knotd serving `zones` (name -> master file) on a free loopback port."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "run").mkdir(exist_ok=True)
    (workdir / "db").mkdir(exist_ok=True)
    port = free_port(HOST)
    conf = workdir / "knot.conf"
    conf.write_text(knotd_config(workdir, port, zones))
    return _start("knotd", [knotd, "-c", str(conf)], workdir, port, list(zones))


# --- authd ---------------------------------------------------------------------------------


def authd_command() -> list[str]:
    script = Path(sys.executable).parent / "authd"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "authd.cli"]


def authd_config(workdir: Path, port: int, zones: Mapping[str, Path]) -> str:
    zone_blocks = "".join(f'\n[[zone]]\nname = "{z}"\nfile = "{p}"\n' for z, p in zones.items())
    return f"""[server]
listen = ["{HOST}@{port}"]
workers = 1
state-dir = "{workdir}/state"
control-socket = "{workdir}/authd.sock"
metrics = ""
identity = "{IDENTITY}"
version = "{VERSION}"
nsid = "{NSID}"
{zone_blocks}"""


def start_authd(workdir: Path, zones: Mapping[str, Path]) -> RunningServer:
    """authd serving `zones` (name -> master file) on a free loopback port."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "state").mkdir(exist_ok=True)
    port = free_port(HOST)
    conf = workdir / "authd.toml"
    conf.write_text(authd_config(workdir, port, zones))
    return _start("authd", [*authd_command(), "serve", "-c", str(conf)], workdir, port, list(zones))


# --- named (a primary for replication tests) -----------------------------------------------


def named_config(
    workdir: Path,
    port: int,
    zones: Mapping[str, Path],
    keys: Sequence[TsigKey] = (),
    allow_transfer: str = "any;",
    also_notify: Sequence[tuple[str, int]] = (),
) -> str:
    key_blocks = "".join(
        f'key "{k.name}" {{ algorithm {k.algorithm}; secret "{k.secret}"; }};\n' for k in keys
    )
    notify = "".join(f"{h} port {p}; " for h, p in also_notify)
    notify_opts = f"notify explicit; also-notify {{ {notify}}};" if also_notify else "notify no;"
    zone_blocks = "".join(
        f'zone "{z}" {{ type primary; file "{p}"; allow-transfer {{ {allow_transfer} }}; '
        f"ixfr-from-differences yes; {notify_opts} }};\n"
        for z, p in zones.items()
    )
    return f"""{key_blocks}
options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    listen-on port {port} {{ {HOST}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify-source {HOST};
    transfer-source {HOST};
}};
controls {{ }};
{zone_blocks}"""


def start_named(
    named: str,
    workdir: Path,
    zones: Mapping[str, Path],
    keys: Sequence[TsigKey] = (),
    allow_transfer: str = "any;",
    also_notify: Sequence[tuple[str, int]] = (),
) -> RunningServer:
    """named as a primary for `zones`; `allow_transfer` is a BIND address-match list body
    (e.g. 'any;' or 'key "xfr-key";'); NOTIFY goes to `also_notify` when given.
    Zone files are copied into workdir, since named writes journals beside them."""
    workdir.mkdir(parents=True, exist_ok=True)
    local: dict[str, Path] = {}
    for zone, path in zones.items():
        copy = workdir / f"{zone}.db"
        copy.write_bytes(path.read_bytes())
        local[zone] = copy
    port = free_port(HOST)
    conf = workdir / "named.conf"
    conf.write_text(named_config(workdir, port, local, keys, allow_transfer, also_notify))
    args = [named, "-g", "-n", "1", "-c", str(conf)]
    return _start("named", args, workdir, port, list(zones))
