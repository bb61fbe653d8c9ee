"""The many-zones benchmark's data and configs (pure: values in, text out).

N small zones (`z000000.zones.test.` ...; 30 records each, a realistic small domain), the
knotd primary that serves them with TSIG and NOTIFY, and the same secondary set-up for each
server under test: authd, knotd and NSD, all pulling every zone from that primary with the
same TSIG key and taking its NOTIFY.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from authd.bench.mix import ZoneInventory
from authd.bench.primaries import KEY

SUFFIX = "zones.test"
SERVER_KINDS = ("authd", "knot", "nsd")
# SOA timers: refresh long enough that no refresh falls due during a run, so every SOA query
# the primary sees after a restart is one the secondary chose to make.
REFRESH, RETRY, EXPIRE, MINIMUM = 7200, 900, 1209600, 300
# Types asked for NODATA: the first one an owner lacks (the order mix.py uses).
_NODATA_TYPES = ("AAAA", "TXT", "MX", "SRV", "CAA", "A", "HTTPS")
HOSTS = 19  # hN A records; with the 11 fixed records a zone holds 30


def zone_names(count: int, start: int = 0) -> list[str]:
    """`count` zone names without the trailing dot, numbered from `start`."""
    if count < 0 or start < 0:
        raise ValueError("zone count and start must not be negative")
    return [f"z{index:06d}.{SUFFIX}" for index in range(start, start + count)]


def zone_records(zone: str, serial: int) -> list[tuple[str, str, str]]:
    """The zone's records as (relative owner, type, rdata); owner "@" is the apex."""
    index = int(zone.split(".", 1)[0][1:]) if zone.startswith("z") else 0
    net = f"{index >> 8 & 255}.{index & 255}"
    records = [
        ("@", "SOA", f"ns1 hostmaster {serial} {REFRESH} {RETRY} {EXPIRE} {MINIMUM}"),
        ("@", "NS", "ns1"),
        ("@", "NS", "ns2"),
        ("@", "A", f"10.1.{net}"),
        ("@", "MX", "10 mail"),
        ("@", "TXT", '"v=spf1 mx -all"'),
        ("ns1", "A", "192.0.2.53"),
        ("ns2", "A", "192.0.2.54"),
        ("mail", "A", f"10.2.{net}"),
        ("www", "A", f"10.3.{net}"),
        ("www", "AAAA", f"2001:db8::{index:x}"),
    ]
    records += [(f"h{i}", "A", f"10.{4 + i}.{net}") for i in range(HOSTS)]
    return records


def zone_text(zone: str, serial: int) -> str:
    lines = [f"$ORIGIN {zone}.", "$TTL 3600"]
    lines += [f"{owner} IN {rtype} {rdata}" for owner, rtype, rdata in zone_records(zone, serial)]
    return "\n".join(lines) + "\n"


def zone_file(directory: Path, zone: str) -> Path:
    """Where a zone's master file lives: `<zone>.zone`, as knotd's and NSD's `%s.zone`."""
    return directory / f"{zone}.zone"


def write_zones(directory: Path, zones: Sequence[str], serial: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for zone in zones:
        zone_file(directory, zone).write_text(zone_text(zone, serial))


def inventory(zone: str) -> ZoneInventory:
    """What mix.generate needs to ask about one zone, built from the records without
    parsing (10,000 zones would take dnspython ~20 s); the same as mix.inventory would say."""
    types: dict[str, list[str]] = {}
    for owner, rtype, _ in zone_records(zone, 1):
        name = f"{zone}." if owner == "@" else f"{owner}.{zone}."
        if rtype not in types.setdefault(name, []):
            types[name].append(rtype)
    hits: list[tuple[str, str]] = []
    nodata: list[tuple[str, str]] = []
    for name in sorted(types):
        hits += [(name, rtype) for rtype in sorted(types[name])]
        missing = next((t for t in _NODATA_TYPES if t not in types[name]), None)
        if missing is not None:
            nodata.append((name, missing))
    return ZoneInventory(f"{zone}.", tuple(hits), tuple(nodata), (), False)


# --- the primary ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}@{self.port}"


def knot_primary_config(
    workdir: Path, listen: Address, zone_dir: Path, zones: Sequence[str], notify: Address
) -> str:
    """knotd serving every zone from `zone_dir/<zone>.zone`, AXFR/IXFR only with the TSIG key,
    NOTIFY to the secondary under test; mod-stats counts the queries it receives by type
    (`knotc stats`), which is how the harness counts the secondary's SOA queries."""
    zone_lines = "".join(f"  - domain: {zone}.\n" for zone in zones)
    return f"""server:
    rundir: "{workdir}/run"
    listen: {listen}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "{workdir}/knot.sock"
database:
    storage: "{workdir}/db"
log:
  - target: stderr
    any: warning
key:
  - id: {KEY.name}
    algorithm: {KEY.algorithm}
    secret: {KEY.secret}
remote:
  - id: secondary
    address: {notify}
    key: {KEY.name}
acl:
  - id: transfer
    key: {KEY.name}
    action: transfer
mod-stats:
  - id: default
    query-type: on
    server-operation: on
template:
  - id: default
    storage: "{workdir}/db"
    file: "{zone_dir}/%s.zone"
    zonefile-sync: -1
    zonefile-load: difference
    journal-content: changes
    semantic-checks: off
    acl: transfer
    notify: secondary
    global-module: mod-stats/default
zone:
{zone_lines}"""


# --- the secondaries -----------------------------------------------------------------------


@dataclass(frozen=True)
class SecondarySettings:
    """What every secondary under test shares; configs differ only in each server's syntax."""

    workdir: Path
    listen: Address
    primary: Address
    workers: int = 1


def authd_config(s: SecondarySettings, zones: Sequence[str], key_file: Path) -> str:
    """authd: one remote, the default template naming it, one table per zone (no metrics
    listener, so it measures what serving zones costs)."""
    zone_tables = "".join(f'\n[[zone]]\nname = "{zone}"\n' for zone in zones)
    return f"""[server]
listen = ["{s.listen}"]
workers = {s.workers}
state-dir = "{s.workdir}/state"
control-socket = "{s.workdir}/authd.sock"
metrics = ""

[tsig]
key-files = ["{key_file}"]

[[remote]]
id = "primary"
addresses = ["{s.primary}"]
key = "{KEY.name}"

[[template]]
id = "default"
primaries = ["primary"]
{zone_tables}"""


def authd_key_file() -> str:
    return f'key "{KEY.name}" {{ algorithm {KEY.algorithm}; secret "{KEY.secret}"; }};\n'


def knot_secondary_config(s: SecondarySettings, zones: Sequence[str]) -> str:
    """knotd as a secondary the way Knot recommends for many zones: contents and timers kept
    in its databases (journal-content: all, no zone files), NOTIFY accepted from the primary
    with the key; `workers` UDP, TCP and background workers."""
    zone_lines = "".join(f"  - domain: {zone}.\n" for zone in zones)
    return f"""server:
    rundir: "{s.workdir}/run"
    listen: {s.listen}
    udp-workers: {s.workers}
    tcp-workers: {s.workers}
    background-workers: {s.workers}
control:
    listen: "{s.workdir}/knot.sock"
database:
    storage: "{s.workdir}/db"
log:
  - target: stderr
    any: warning
key:
  - id: {KEY.name}
    algorithm: {KEY.algorithm}
    secret: {KEY.secret}
remote:
  - id: primary
    address: {s.primary}
    key: {KEY.name}
acl:
  - id: notify
    address: {s.primary.host}
    key: {KEY.name}
    action: notify
template:
  - id: default
    storage: "{s.workdir}/db"
    master: primary
    acl: notify
    zonefile-sync: -1
    zonefile-load: none
    journal-content: all
zone:
{zone_lines}"""


def nsd_secondary_config(s: SecondarySettings, zones: Sequence[str]) -> str:
    """NSD 4 as a secondary: one pattern with request-xfr and allow-notify (both with the key),
    every zone including it; transferred zones written to `<zone>.zone` in the workdir
    (its stored copies); nsd-control over a Unix socket (no certificates needed); rate
    limiting off, as in the other benches."""
    zone_blocks = "".join(
        f"zone:\n    name: {zone}\n    include-pattern: secondary\n" for zone in zones
    )
    return f"""server:
    ip-address: {s.listen}
    port: {s.listen.port}
    do-ip6: no
    server-count: {s.workers}
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
    control-enable: yes
    control-interface: "{s.workdir}/nsd.ctl"
key:
    name: {KEY.name}
    algorithm: {KEY.algorithm}
    secret: "{KEY.secret}"
pattern:
    name: secondary
    zonefile: "%s.zone"
    request-xfr: {s.primary} {KEY.name}
    allow-notify: {s.primary.host} {KEY.name}
{zone_blocks}"""


def secondary_config(kind: str, s: SecondarySettings, zones: Sequence[str]) -> str:
    """The config text of secondary `kind` for `zones` (authd's key file sits beside it)."""
    if kind == "authd":
        return authd_config(s, zones, s.workdir / "xfr.key")
    if kind == "knot":
        return knot_secondary_config(s, zones)
    if kind == "nsd":
        return nsd_secondary_config(s, zones)
    raise ValueError(f"unknown server {kind!r}; known: {', '.join(SERVER_KINDS)}")


def config_path(kind: str, workdir: Path) -> Path:
    return workdir / {"authd": "authd.toml", "knot": "knot.conf", "nsd": "nsd.conf"}[kind]


def serve_command(kind: str, program: str, config: Path) -> list[str]:
    """The foreground command line of secondary `kind`."""
    if kind == "authd":
        return [program, "serve", "-c", str(config)]
    if kind == "knot":
        return [program, "-c", str(config)]
    return [program, "-d", "-c", str(config)]


def reload_command(kind: str, control: str, config: Path) -> list[str]:
    """The command that makes a running secondary apply its rewritten config (zones added
    or removed): `authd reload`, `knotc reload`, `nsd-control reconfig`."""
    if kind == "authd":
        return [control, "reload", "-c", str(config)]
    if kind == "knot":
        return [control, "-c", str(config), "reload"]
    return [control, "-c", str(config), "reconfig"]
