"""Real primaries (knotd, named) with TSIG and NOTIFY to authd, and authd as their secondary.

Everything runs on loopback on free ports, each server in its own directory, and is stopped by
PID. The launchers in tests/interop/servers.py are reused where they fit (named, the SOA poll).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring

from authd import control
from authd.bench.peers import free_port
from authd.bench.servers import (
    HOST,
    RunningServer,
    TsigKey,
    knotc,
    named_config,
    soa_answers,
    spawn_knotd,
)
from authd.bench.servers import _start as start_server

KEY = TsigKey("xfr-key", "hmac-sha256", "+phZxHr8fnYDiQ/Ja7clqsa1rNx7ef31WR3AaK+bkTg=")
START_TIMEOUT = 20.0


# --- zones --------------------------------------------------------------------------------


def zone_text(
    origin: str,
    serial: int,
    names: int = 10,
    refresh: int = 3600,
    retry: int = 600,
    expire: int = 1209600,
) -> str:
    """A zone of `names` hosts with one A record each (plus SOA, NS and the NS address)."""
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 300",
        f"@ SOA ns1 hostmaster {serial} {refresh} {retry} {expire} 60",
        "@ NS ns1",
        "ns1 A 192.0.2.53",
    ]
    lines += [f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(names)]
    return "\n".join(lines) + "\n"


def write_zone(path: Path, origin: str, serial: int, **shape: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(zone_text(origin, serial, **shape))
    return path


def query(
    host: str, port: int, name: str, rtype: str = "SOA", timeout: float = 0.5
) -> dns.message.Message | None:
    """One UDP query without RD; None when nothing came back in time."""
    message = dns.message.make_query(name, rtype)
    message.flags &= ~dns.flags.RD
    try:
        return dns.query.udp(message, host, port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException):
        return None


def served_serial(host: str, port: int, zone: str) -> int | None:
    """The SOA serial `host:port` answers for `zone` authoritatively, or None."""
    response = query(host, port, zone + ".")
    if response is None or response.rcode() != dns.rcode.NOERROR or not response.answer:
        return None
    rrset = response.answer[0]
    if rrset.rdtype != dns.rdatatype.SOA:
        return None
    return int(rrset[0].serial)


def wait_for(predicate: Any, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def keyring() -> dict[dns.name.Name, dns.tsig.Key]:
    return dns.tsigkeyring.from_text({KEY.name: (KEY.algorithm, KEY.secret)})


def send_notify(
    target: tuple[str, int], zone: str, serial: int, source: str = HOST, signed: bool = True
) -> dns.rcode.Rcode | None:
    """A NOTIFY for `zone` carrying SOA `serial`, from `source`; the reply's rcode or None.

    The rcode is read from the header, so a reply without the TSIG we asked for (a refusal)
    is still seen."""
    message = dns.message.make_query(zone + ".", dns.rdatatype.SOA)
    message.set_opcode(dns.opcode.NOTIFY)
    message.flags = (message.flags | dns.flags.AA) & ~dns.flags.RD  # keeps the opcode bits
    rdata = f"ns1.{zone}. hostmaster.{zone}. {serial} 3600 600 1209600 60"
    message.answer.append(dns.rrset.from_text(f"{zone}.", 300, "IN", "SOA", rdata))
    if signed:
        message.use_tsig(keyring(), keyname=KEY.name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(1.0)
        sock.sendto(message.to_wire(), target)
        try:
            reply = sock.recv(65535)
        except OSError:
            return None
    if len(reply) < 12 or reply[:2] != message.id.to_bytes(2, "big"):
        return None
    return dns.rcode.Rcode(reply[3] & 0x0F)


# --- knotd as a primary ---------------------------------------------------------------------


def knot_preamble(workdir: Path, port: int) -> str:
    """The start of a knotd config: one worker of each kind on HOST@port, state in
    workdir, log to stderr, and the TSIG key KEY."""
    return f"""server:
    rundir: "{workdir}/run"
    listen: {HOST}@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{workdir}/db"
log:
  - target: stderr
    any: info
key:
  - id: {KEY.name}
    algorithm: {KEY.algorithm}
    secret: {KEY.secret}
"""


@dataclass
class KnotPrimary:
    """knotd serving zones as a primary: transfers only with KEY, NOTIFY to `notify` targets."""

    knotd: str
    knotc: str
    workdir: Path
    zones: Mapping[str, Path]
    port: int
    notify: Sequence[tuple[str, int]] = ()
    journal: bool = True  # False: no IXFR history, so IXFR is answered AXFR-style
    server: RunningServer | None = None
    generation: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def conf(self) -> Path:
        return self.workdir / "knot.conf"

    def config_text(self) -> str:
        remotes = "".join(
            f"  - id: authd{i}\n    address: {h}@{p}\n    key: {KEY.name}\n"
            for i, (h, p) in enumerate(self.notify)
        )
        notify_ids = ", ".join(f"authd{i}" for i in range(len(self.notify)))
        notify_line = f"    notify: [{notify_ids}]\n" if self.notify else ""
        zones = "".join(
            f'  - domain: "{z}."\n    file: "{p}"\n    acl: xfr\n{notify_line}'
            for z, p in self.zones.items()
        )
        return (
            knot_preamble(self.workdir, self.port)
            + f"""{"remote:" if self.notify else ""}
{remotes}
acl:
  - id: xfr
    key: {KEY.name}
    action: transfer
template:
  - id: default
    storage: "{self.workdir}/db"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: {"changes" if self.journal else "none"}
zone:
{zones}"""
        )

    def start(self) -> KnotPrimary:
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        (self.workdir / "db").mkdir(exist_ok=True)
        self.conf.write_text(self.config_text())
        self.generation += 1
        log_path = self.workdir / f"knotd.{self.generation}.log"
        process = spawn_knotd(self.knotd, self.conf, self.workdir, log_path)
        self.server = RunningServer("knotd", process, HOST, self.port, self.workdir, log_path)
        for zone in self.zones:
            if not wait_for(lambda z=zone: soa_answers(HOST, self.port, z), START_TIMEOUT, 0.05):
                log_text = self.server.log()
                self.stop()
                raise RuntimeError(f"knotd did not serve {zone}:\n{log_text}")
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def log(self) -> str:
        return self.server.log() if self.server is not None else ""

    def control(self, *args: str) -> str:
        return knotc(self.knotc, self.conf, *args)

    def set_record(self, zone: str, owner: str, rtype: str, rdata: str, ttl: int = 300) -> None:
        """One change in a transaction; knotd bumps the serial and sends NOTIFY on commit."""
        self.control("zone-begin", zone)
        self.control("zone-set", zone, owner, str(ttl), rtype, rdata)
        self.control("zone-commit", zone)

    def serial(self, zone: str) -> int | None:
        return served_serial(HOST, self.port, zone)


def knot_primary(
    knotd: str,
    knotc: str,
    workdir: Path,
    zones: Mapping[str, Path],
    notify: Sequence[tuple[str, int]] = (),
    journal: bool = True,
    port: int | None = None,
) -> KnotPrimary:
    primary = KnotPrimary(
        knotd, knotc, workdir, zones, port or free_port(HOST), notify, journal=journal
    )
    return primary.start()


# --- authd as a secondary -------------------------------------------------------------------


@dataclass
class SecondaryZone:
    name: str
    primaries: Sequence[tuple[str, int]]
    settings: Mapping[str, str | int] = field(default_factory=dict)


@dataclass
class AuthdSecondary:
    """`authd serve` as a subprocess, secondary for `zones`, with its own state and ports."""

    workdir: Path
    zones: Sequence[SecondaryZone]
    port: int = field(default_factory=lambda: free_port(HOST))
    metrics_port: int = field(default_factory=lambda: free_port(HOST))
    process: subprocess.Popen[bytes] | None = None
    generation: int = 0
    started_at: float = 0.0
    workers: int = 1

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def socket(self) -> Path:
        return self.workdir / "authd.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"authd.{self.generation}.log"

    def config_text(self) -> str:
        key_file = self.workdir / "xfr.key"
        key_file.write_text(
            f'key "{KEY.name}" {{ algorithm {KEY.algorithm}; secret "{KEY.secret}"; }};\n'
        )
        key_file.chmod(0o600)
        remotes: dict[tuple[str, int], str] = {}
        for zone in self.zones:
            for address in zone.primaries:
                remotes.setdefault(address, f"p{len(remotes)}")
        text = f"""[server]
listen = ["{HOST}@{self.port}"]
workers = {self.workers}
state-dir = "{self.workdir}/state"
control-socket = "{self.socket}"
metrics = "{HOST}@{self.metrics_port}"

[tsig]
key-files = ["{key_file}"]
"""
        for (host, port), rid in remotes.items():
            text += f'\n[[remote]]\nid = "{rid}"\naddresses = ["{host}@{port}"]\n'
            text += f'key = "{KEY.name}"\n'
        for zone in self.zones:
            ids = ", ".join(f'"{remotes[a]}"' for a in zone.primaries)
            text += f'\n[[zone]]\nname = "{zone.name}"\nprimaries = [{ids}]\n'
            for key, value in zone.settings.items():
                text += f"{key} = {json.dumps(value)}\n"
        return text

    def start(self) -> AuthdSecondary:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "authd.toml"
        conf.write_text(self.config_text())
        self.generation += 1
        command = [sys.executable, "-m", "authd.cli", "serve", "-c", str(conf)]
        with self.log_path.open("wb") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if not wait_for(self._ready, START_TIMEOUT, 0.02):
            text = self.log()
            self.stop()
            raise RuntimeError(f"authd did not start:\n{text}")
        return self

    def _ready(self) -> bool:
        """Answering DNS and its control socket (the socket opens a little after UDP)."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"authd exited with {self.process.returncode}:\n{self.log()}")
        if query(HOST, self.port, self.zones[0].name + ".", timeout=0.2) is None:
            return False
        try:
            control.call(self.socket, "status", timeout=2.0)
        except control.ControlUnreachable:
            return False
        return True

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def serial(self, zone: str) -> int | None:
        return served_serial(HOST, self.port, zone)

    def refresh(self, zone: str) -> None:
        """Refresh now: the first refresh after start is otherwise spread over up to 10 s."""
        control.call(self.socket, "refresh", zone=zone)

    def wait_serial(self, zone: str, serial: int, timeout: float = 10.0) -> bool:
        return wait_for(lambda: self.serial(zone) == serial, timeout)

    def status(self, zone: str) -> dict[str, Any]:
        result = control.call(self.socket, "status", zone=zone)
        if isinstance(result, list):
            result = result[0]
        if isinstance(result, dict) and "zones" in result:
            result = result["zones"][0]
        assert isinstance(result, dict), result
        return result

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://{HOST}:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of metric `name` whose labels include `labels`."""
        total = 0.0
        for line in self.http("/metrics")[1].splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric != name:
                continue
            have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
            if all(have.get(k) == json.dumps(v) for k, v in labels.items()):
                total += float(value)
        return total


# --- named as a primary ---------------------------------------------------------------------


def start_named_primary(
    named: str, workdir: Path, zones: Mapping[str, Path], notify: Sequence[tuple[str, int]]
) -> RunningServer:
    """named with `ixfr-from-differences yes`, transfers only with KEY, and NOTIFY signed
    with KEY (a `server` clause makes named sign what it sends to that address)."""
    workdir.mkdir(parents=True, exist_ok=True)
    local: dict[str, Path] = {}
    for zone, path in zones.items():
        local[zone] = workdir / f"{zone}.db"
        local[zone].write_bytes(path.read_bytes())
    port = free_port(HOST)
    text = named_config(workdir, port, local, [KEY], f'key "{KEY.name}";', notify)
    text += "".join(
        f'server {h} {{ keys {{ "{KEY.name}"; }}; }};\n' for h in {h for h, _ in notify}
    )
    (workdir / "named.conf").write_text(text)
    args = [named, "-g", "-n", "1", "-c", str(workdir / "named.conf")]
    return start_server("named", args, workdir, port, list(zones))
