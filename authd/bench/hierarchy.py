"""A DNS hierarchy on loopback for the assurance tests (issue 13): the parent, the provider,
authd as the extra NS set, and a validating resolver, each on its own 127.x address, port 53.

    unbound (127.B.4.1)  validating; trust anchor = the parent's DS; stub for `test.`
        |
    knotd "parent" (127.B.1.1)   test.          signed; delegates example.test (NS + DS)
        |                                        and provider.test
        +-- knotd "provider" (127.B.2.1)  example.test  signed online, NOTIFY + AXFR/IXFR
        |                                  provider.test (ns1.provider.test)  with TSIG to:
        +-- authd (127.B.3.1)             example.test  secondary, NS ns2.example.test

Port 53 on distinct addresses, so that unbound follows the NS/glue it is given (it always
asks port 53); binding it needs root (CI runs the interop tests as root). `B` defaults to 13
and lets tests that run at the same time use their own addresses. unbound's root hints name
the parent, so no query ever leaves loopback. Every process is stopped by PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype

from authd import control
from authd.bench.primaries import KEY, AuthdSecondary, SecondaryZone, query, served_serial, wait_for
from authd.bench.servers import RunningServer, knotc, soa_answers, spawn_knotd

PARENT = "test"
ZONE = "example.test"
PROVIDER_ZONE = "provider.test"
OWN_NS = f"ns2.{ZONE}"  # authd's NS name, in the zone itself, glued at the parent
PROVIDER_NS = f"ns1.{PROVIDER_ZONE}"
PORT = 53
START_TIMEOUT = 20.0
BINARIES = ("knotd", "knotc", "keymgr", "unbound")


@dataclass(frozen=True)
class Layout:
    """Who listens where: one address per server, all on port 53."""

    block: int = 13

    def address(self, host: int) -> str:
        return f"127.{self.block}.{host}.1"

    @property
    def parent(self) -> str:
        return self.address(1)

    @property
    def provider(self) -> str:
        return self.address(2)

    @property
    def authd(self) -> str:
        return self.address(3)

    @property
    def resolver(self) -> str:
        return self.address(4)


# --- zones ------------------------------------------------------------------------------------


def zone_text(layout: Layout, serial: int = 1, names: int = 8) -> str:
    """example.test as the provider holds it: NS at the provider and at authd."""
    lines = [
        f"$ORIGIN {ZONE}.",
        "$TTL 60",
        f"@ SOA {PROVIDER_NS}. hostmaster {serial} 3600 600 1209600 60",
        f"@ NS {PROVIDER_NS}.",
        f"@ NS {OWN_NS}.",
        f"ns2 A {layout.authd}",
        "www A 192.0.2.80",
    ]
    lines += [f"h{i} A 198.51.100.{i + 1}" for i in range(names)]
    return "\n".join(lines) + "\n"


def provider_zone_text(layout: Layout) -> str:
    return (
        f"$ORIGIN {PROVIDER_ZONE}.\n$TTL 60\n"
        f"@ SOA ns1 hostmaster 1 3600 600 1209600 60\n@ NS ns1\nns1 A {layout.provider}\n"
    )


def parent_zone_text(layout: Layout, ds_lines: str, own_ns: bool = True, serial: int = 1) -> str:
    """test.: the delegations of example.test (with authd's NS unless `own_ns` is False, and
    the DS) and of provider.test."""
    lines = [
        f"$ORIGIN {PARENT}.",
        "$TTL 60",
        f"@ SOA ns hostmaster {serial} 3600 600 1209600 60",
        "@ NS ns",
        f"ns A {layout.parent}",
        f"{ZONE}. NS {PROVIDER_NS}.",
        f"{PROVIDER_ZONE}. NS {PROVIDER_NS}.",
        f"{PROVIDER_NS}. A {layout.provider}",
    ]
    if own_ns:
        lines += [f"{ZONE}. NS {OWN_NS}.", f"{OWN_NS}. A {layout.authd}"]
    lines += [line for line in ds_lines.splitlines() if " DS " in line]
    return "\n".join(lines) + "\n"


# --- knotd ------------------------------------------------------------------------------------


@dataclass
class KnotZone:
    name: str
    text: str
    signed: bool = False
    transfer: bool = False  # AXFR/IXFR allowed with KEY
    notify: Sequence[str] = ()  # addresses (port 53) to NOTIFY with KEY


@dataclass
class KnotServer:
    """knotd on address@53 serving `zones`, signing the signed ones itself (ECDSA P-256 CSK)."""

    name: str
    knotd: str
    knotc: str
    keymgr: str
    workdir: Path
    address: str
    zones: Sequence[KnotZone]
    server: RunningServer | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "knot.conf"

    def config_text(self) -> str:
        targets = sorted({a for z in self.zones for a in z.notify})
        remote_ids = {a: f"n{i}" for i, a in enumerate(targets)}
        remotes = "".join(
            f"  - id: {rid}\n    address: {a}@{PORT}\n    key: {KEY.name}\n"
            f"    via: {self.address}\n"  # NOTIFY from our own address, not 127.0.0.1
            for a, rid in remote_ids.items()
        )
        zones = ""
        for zone in self.zones:
            path = self.workdir / f"{zone.name}.zone"
            zones += f'  - domain: "{zone.name}."\n    file: "{path}"\n'
            if zone.transfer:
                zones += "    acl: xfr\n"
            if zone.notify:
                zones += f"    notify: [{', '.join(remote_ids[a] for a in zone.notify)}]\n"
            if zone.signed:
                zones += "    dnssec-signing: on\n    dnssec-policy: csk\n"
        return f"""server:
    rundir: "{self.workdir}/run"
    listen: {self.address}@{PORT}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{self.workdir}/db"
log:
  - target: stderr
    any: info
key:
  - id: {KEY.name}
    algorithm: {KEY.algorithm}
    secret: {KEY.secret}
{"remote:" if remotes else ""}
{remotes}
acl:
  - id: xfr
    key: {KEY.name}
    action: transfer
policy:
  - id: csk
    algorithm: ecdsap256sha256
    single-type-signing: on
    nsec3: off
template:
  - id: default
    storage: "{self.workdir}/db"
    zonefile-sync: -1
    zonefile-load: difference-no-serial
    journal-content: all
    semantic-checks: off
zone:
{zones}"""

    def start(self) -> KnotServer:
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        (self.workdir / "db").mkdir(exist_ok=True)
        for zone in self.zones:
            (self.workdir / f"{zone.name}.zone").write_text(zone.text)
        self.conf.write_text(self.config_text())
        log_path = self.workdir / "knotd.log"
        process = spawn_knotd(self.knotd, self.conf, self.workdir, log_path)
        self.server = RunningServer(self.name, process, self.address, PORT, self.workdir, log_path)
        for zone in self.zones:
            if not wait_for(
                lambda z=zone.name: _serving(process, self.address, z), START_TIMEOUT, 0.05
            ):
                text = self.log()
                self.stop()
                raise RuntimeError(f"knotd {self.name} did not serve {zone.name}:\n{text}")
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def log(self) -> str:
        return self.server.log() if self.server is not None else ""

    def control(self, *args: str) -> str:
        return knotc(self.knotc, self.conf, *args)

    def change(self, zone: str, *edits: tuple[str, ...]) -> None:
        """One transaction: each edit is ("set"|"unset", owner, ttl-or-type, ...) as knotc
        takes them; knotd re-signs, bumps the serial and sends NOTIFY on commit."""
        self.control("zone-begin", zone)
        for verb, *rest in edits:
            self.control(f"zone-{verb}", zone, *rest)
        self.control("zone-commit", zone)

    def ds(self, zone: str) -> str:
        """The DS records of the zone's CSK, as `keymgr <zone> ds` prints them."""
        done = subprocess.run(
            [self.keymgr, "-c", str(self.conf), zone, "ds"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if done.returncode != 0 or " DS " not in done.stdout:
            raise RuntimeError(f"keymgr {zone} ds: {done.stdout}{done.stderr}")
        return done.stdout

    def serial(self, zone: str) -> int | None:
        return served_serial(self.address, PORT, zone)


def _serving(process: subprocess.Popen[bytes], address: str, zone: str) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"knotd on {address} exited with {process.returncode}")
    return soa_answers(address, PORT, zone)


# --- authd ------------------------------------------------------------------------------------


@dataclass
class HierarchyAuthd(AuthdSecondary):
    """authd on its own address, port 53, secondary of the provider for example.test, with
    the assurance keys: ns-names, resolver, parent."""

    host: str = "127.13.3.1"
    server_extra: dict[str, Any] = field(default_factory=dict)

    def config_text(self) -> str:
        text = super().config_text()
        listen = f'listen = ["{self.host}@{self.port}"]'
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.server_extra.items())
        head, _, rest = text.partition("\n[tsig]")
        head = head.replace(f'listen = ["127.0.0.1@{self.port}"]', listen)
        return f"{head}{extra}\n[tsig]{rest}"

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"authd exited with {self.process.returncode}:\n{self.log()}")
        if query(self.host, self.port, self.zones[0].name + ".", timeout=0.2) is None:
            return False
        try:
            control.call(self.socket, "status", timeout=2.0)
        except control.ControlUnreachable:
            return False
        return True

    def serial(self, zone: str) -> int | None:
        return served_serial(self.host, self.port, zone)

    def reconfigure(self, **server_extra: Any) -> None:
        """New [server] keys (e.g. ns_names=[...] for ns-names), applied by `authd reload`."""
        self.server_extra.update({k.replace("_", "-"): v for k, v in server_extra.items()})
        (self.workdir / "authd.toml").write_text(self.config_text())
        done = self.cli("reload")
        if done.returncode != 0:
            raise RuntimeError(f"authd reload: {done.stdout}{done.stderr}")

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`authd <args> -c <config>` as an operator runs it."""
        return subprocess.run(
            [sys.executable, "-m", "authd.cli", *args, "-c", str(self.workdir / "authd.toml")],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


# --- unbound ----------------------------------------------------------------------------------


@dataclass
class Unbound:
    """unbound validating with the parent's DS as its trust anchor, `test.` stubbed to the
    parent, root hints naming the parent too (nothing leaves loopback)."""

    unbound: str
    workdir: Path
    address: str
    parent: str
    anchor: str  # DS lines for test.
    process: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        w = self.workdir
        return f"""server:
    interface: {self.address}
    port: {PORT}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{w}"
    pidfile: "{w}/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 1
    val-log-level: 2
    do-ip6: no
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    root-hints: "{w}/root.hints"
    trust-anchor-file: "{w}/anchor.ds"
    module-config: "validator iterator"
    qname-minimisation: no
    cache-max-ttl: 5
    cache-max-negative-ttl: 5
    infra-host-ttl: 60
    val-bogus-ttl: 2  # tests break and repair the chain: forget bogus fast
    local-zone: "{PARENT}." nodefault  # unbound answers test. itself by default (RFC 6761)
stub-zone:
    name: "{PARENT}."
    stub-addr: {self.parent}@{PORT}
remote-control:
    control-enable: no
"""

    def start(self) -> Unbound:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "root.hints").write_text(
            f". 3600000 NS a.root.invalid.\na.root.invalid. 3600000 A {self.parent}\n"
        )
        (self.workdir / "anchor.ds").write_text(self.anchor)
        conf = self.workdir / "unbound.conf"
        conf.write_text(self.config_text())
        log_path = self.workdir / "unbound.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.unbound, "-d", "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        if not wait_for(self._answers, START_TIMEOUT, 0.05):
            text = self.log()
            self.stop()
            raise RuntimeError(f"unbound did not start:\n{text}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"unbound exited with {self.process.returncode}:\n{self.log()}")
        return self.ask(f"{PARENT}.", "SOA", timeout=0.5) is not None

    def ask(self, name: str, rtype: str, timeout: float = 5.0) -> dns.message.Message | None:
        """A recursive query with DO set; None when nothing came back."""
        message = dns.message.make_query(name, rtype, want_dnssec=True)
        try:
            return dns.query.udp(message, self.address, port=PORT, timeout=timeout)
        except (OSError, dns.exception.DNSException):
            return None

    def secure(self, name: str, rtype: str) -> bool:
        answer = self.ask(name, rtype)
        return answer is not None and bool(answer.flags & dns.flags.AD) and bool(answer.answer)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log(self) -> str:
        try:
            return (self.workdir / "unbound.log").read_text(errors="replace")
        except OSError:
            return ""


# --- the whole hierarchy ----------------------------------------------------------------------


@dataclass
class Hierarchy:
    layout: Layout
    parent: KnotServer
    provider: KnotServer
    authd: HierarchyAuthd
    resolver: Unbound
    zone_ds: str  # example.test's DS, as keymgr printed it

    def stop(self) -> None:
        for stop in (self.resolver.stop, self.authd.stop, self.provider.stop, self.parent.stop):
            stop()

    def logs(self) -> str:
        parts = [
            ("parent", self.parent.log()),
            ("provider", self.provider.log()),
            ("authd", self.authd.log()),
            ("unbound", self.resolver.log()),
        ]
        return "\n".join(f"--- {name}\n{text[-4000:]}" for name, text in parts)

    def set_parent_ds(self, ds_lines: str) -> None:
        """Replace example.test's DS at the parent (e.g. with one matching no key)."""
        before = self.parent.serial(PARENT) or 0
        records = [
            line.split(" DS ", 1)[1].strip() for line in ds_lines.splitlines() if " DS " in line
        ]
        self.parent.change(
            PARENT,
            ("unset", f"{ZONE}.", "DS"),
            *(("set", f"{ZONE}.", "60", "DS", rdata) for rdata in records),
        )
        if not wait_for(lambda: (self.parent.serial(PARENT) or 0) > before, 10):
            raise RuntimeError(f"the parent did not publish the DS:\n{self.parent.log()}")

    def withdraw_own_ns(self) -> int:
        """Remove authd's NS (and its glue) from the parent's delegation; the new serial."""
        before = self.parent.serial(PARENT) or 0
        self.parent.change(
            PARENT,
            ("unset", f"{ZONE}.", "NS", f"{OWN_NS}."),
            ("unset", f"{OWN_NS}.", "A", self.layout.authd),
        )
        if not wait_for(lambda: (self.parent.serial(PARENT) or 0) > before, 10):
            raise RuntimeError(f"the parent did not publish the change:\n{self.parent.log()}")
        return self.parent.serial(PARENT) or 0


def start_hierarchy(
    binaries: dict[str, str],
    workdir: Path,
    layout: Layout | None = None,
    zone_settings: dict[str, str | int | list[str]] | None = None,
) -> Hierarchy:
    """Start provider, parent, authd and unbound in that order (the parent needs the
    provider's DS, unbound the parent's); authd serves example.test when this returns."""
    layout = layout or Layout()
    started: list[Any] = []
    try:
        provider = KnotServer(
            "provider",
            binaries["knotd"],
            binaries["knotc"],
            binaries["keymgr"],
            workdir / "provider",
            layout.provider,
            [
                KnotZone(
                    ZONE, zone_text(layout), signed=True, transfer=True, notify=(layout.authd,)
                ),
                KnotZone(PROVIDER_ZONE, provider_zone_text(layout)),
            ],
        ).start()
        started.append(provider)
        zone_ds = provider.ds(ZONE)
        parent = KnotServer(
            "parent",
            binaries["knotd"],
            binaries["knotc"],
            binaries["keymgr"],
            workdir / "parent",
            layout.parent,
            [KnotZone(PARENT, parent_zone_text(layout, zone_ds), signed=True)],
        ).start()
        started.append(parent)
        settings: dict[str, Any] = {"parent": [layout.parent], "ds-check": "parent"}
        settings.update(zone_settings or {})
        authd = HierarchyAuthd(
            workdir / "authd",
            [SecondaryZone(ZONE, [(layout.provider, PORT)], settings)],
            port=PORT,
            host=layout.authd,
            server_extra={"ns-names": [OWN_NS], "resolver": layout.resolver},
        )
        authd.start()
        started.append(authd)
        authd.refresh(ZONE)
        serial = provider.serial(ZONE)
        if serial is None or not authd.wait_serial(ZONE, serial, 15):
            raise RuntimeError(f"authd did not load {ZONE}:\n{authd.log()}")
        resolver = Unbound(
            binaries["unbound"],
            workdir / "unbound",
            layout.resolver,
            layout.parent,
            parent.ds(PARENT),
        ).start()
        started.append(resolver)
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return Hierarchy(layout, parent, provider, authd, resolver, zone_ds)


def can_bind_port_53() -> str | None:
    """None when this process may bind port 53, else why not."""
    if os.geteuid() != 0:
        return "binding port 53 on loopback addresses needs root"
    return None
