"""The configuration: a TOML file -> frozen dataclasses, or every error found.

`load_config(path)` returns a Config whose zones are complete (templates applied, remotes and
TSIG keys resolved to objects, relative paths made absolute against the config file's
directory), or raises ConfigError listing every problem, each naming the file, the key path
(`zone[3].primaries[0]`, `server.listen[1]`) and the reason. Unknown keys are errors.

Problems that do not stop authd from running (a key file others can read, hmac-md5) are
collected in Config.warnings for the caller to print or log. Zone files are not read here:
`authd check-config` parses them, and loading reports a missing or broken one.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dns.exception
import dns.name
import dns.rdatatype
import dns.tsig

from authd import keys as keyfiles
from authd.keys import TrustAnchor, TsigKey
from authd.zone.guard import GuardPolicy
from authd.zone.names import key_from_name

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DNS_PORT = 53
DNS_OVER_TLS_PORT = 853  # RFC 7858 3.1, RFC 9103 7.2: the XoT default
METRICS_PORT = 9853
UINT32_MAX = 2**32 - 1
SERIAL_HALF = 2**31 - 1  # RFC 1982: the largest useful SOA timer value


# --- errors ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    key: str  # key path, e.g. "zone[3].primaries[0]"; "" for the file as a whole
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.key}: {self.reason}" if self.key else f"{self.file}: {self.reason}"
        )


class ConfigError(Exception):
    """Every problem found in a config file (not just the first), and the warnings found
    along the way (shown too: a warning may explain an error)."""

    def __init__(self, errors: list[ConfigIssue], warnings: Iterable[str] = ()) -> None:
        super().__init__(format_errors(errors))
        self.errors = errors
        self.warnings = tuple(warnings)


def format_errors(errors: Iterable[ConfigIssue]) -> str:
    return "\n".join(str(error) for error in errors)


# --- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # an IP address in its canonical text form
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"{self.host}@{self.port}"


@dataclass(frozen=True, slots=True)
class RemoteTls:
    """How to reach a remote over TLS (XoT, RFC 9103) and how to authenticate it.

    Exactly one way: `ca_file` + `name` (the chain must verify to that CA and the certificate
    must carry `name`), or `pins` (SHA-256 digests of the certificate's SubjectPublicKeyInfo,
    as Knot's `cert-key`; the chain is then not verified)."""

    ca_file: Path | None = None
    name: str | None = None
    pins: tuple[bytes, ...] = ()
    cert_file: Path | None = None  # our client certificate, when the primary asks for one
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Remote:
    id: str
    addresses: tuple[Endpoint, ...]
    key: TsigKey | None
    source: Endpoint | None  # our address towards it; port 0 = any
    tls: RemoteTls | None = None  # None: plain UDP/TCP; set: every SOA query and transfer TLS
    edns_expire: bool = True  # send EDNS EXPIRE (RFC 7314) on SOA queries and transfers


@dataclass(frozen=True, slots=True)
class NotifySource:
    """NOTIFY is accepted from `network`, signed with `key` when one is set."""

    network: IPNetwork
    key: TsigKey | None
    remote_id: str | None  # the remote it came from, for logs; None for a literal prefix


@dataclass(frozen=True, slots=True)
class TimerBounds:
    """Clamps on the SOA refresh/retry/expire values, in seconds."""

    refresh_min: int = 2
    refresh_max: int = 28 * 86400
    retry_min: int = 1
    retry_max: int = 14 * 86400
    expire_min: int = 3
    expire_max: int = SERIAL_HALF


@dataclass(frozen=True, slots=True)
class ZoneLimits:
    max_records: int = 10_000_000
    max_bytes: int = 2**30
    max_rrset_records: int = 10_000
    max_types_per_name: int = 100
    max_ixfr_diff_records: int = 1_000_000


@dataclass(frozen=True, slots=True)
class CatalogSettings:
    """`catalog = true` on a [[zone]]: an RFC 9432 catalog whose members become zones."""

    removed_keep: float = 7 * 86400.0  # seconds a removed member's stored data is kept aside
    max_removed_share: float = 0.5  # an update removing more of the members is held
    guard_from: int = 10  # ... when the catalog has more members than this


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    name: str  # lowercase, no trailing dot ("." for the root)
    origin: bytes  # the name as a key (authd.zone.names)
    file: Path | None  # served from this master file, or None when transferred
    primaries: tuple[Remote, ...]
    notify_from: tuple[NotifySource, ...]
    template: str | None
    dnssec_validation: str  # auto | required | off ("required" when a trust anchor is set)
    trust_anchor: Path | None
    trust_anchors: tuple[TrustAnchor, ...]
    zonemd: str  # auto | required | off
    on_expire: str  # serve-stale | servfail
    timers: TimerBounds
    serial_rollback_after: int  # consecutive checks with a lower serial before accepting; 0 = off
    ixfr: bool
    limits: ZoneLimits
    signature_warning_days: int
    clock_skew: int  # seconds
    unknown_algorithm: str  # reject | warn
    # Assurance (issue 13): the provider's public servers (None: the zone's other apex NS),
    # types left out of drift comparisons, the parent's servers, and how a new version's
    # DNSKEY set is checked against the DS (parent | trust-anchor | off).
    peers: tuple[Endpoint, ...] | None = None
    drift_ignore_types: frozenset[int] = frozenset()
    parent: tuple[Endpoint, ...] = ()
    ds_check: str = "off"
    # Periodic drift and delegation checks: seconds between rounds (0 = off), and whether
    # each round samples RRsets beyond the SOA.
    drift_interval: float = 60.0
    drift_sample: bool = True
    # Version history (issue 14): how many published versions are kept to list, diff and
    # rebuild (authd zone history / diff; rollback later).
    history_versions: int = 20
    # Outbound transfers and NOTIFY (a distribution tier); the entries are notify-from's shape.
    provide_xfr: tuple[NotifySource, ...] = ()  # who may AXFR/IXFR the zone from us
    provide_xfr_expired: bool = False  # transfer a copy served past its SOA expire
    notify: tuple[Remote, ...] = ()  # remotes to NOTIFY after each publish
    notify_delay: float = 0.0  # seconds a publish waits so a burst sends one NOTIFY round
    # The change guard (issue 14): when a new version is held instead of published.
    guard: GuardPolicy = field(default_factory=GuardPolicy)
    # Catalog zones (issue 15): set on a catalog zone; a member knows its catalog and group.
    catalog: CatalogSettings | None = None
    member_of: str | None = None  # the catalog zone listing this member (None: configured)
    group: str | None = None  # the member's group property (RFC 9432 4.4.2)

    @property
    def is_secondary(self) -> bool:
        return bool(self.primaries)

    @property
    def dns_name(self) -> dns.name.Name:
        return dns.name.from_text(self.name)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", DNS_PORT), Endpoint("::1", DNS_PORT))
    workers: int = 0  # 0 = one per CPU core
    identity: str = ""
    nsid: bytes = b""
    version: str = ""
    udp_payload: int = 1232
    state_dir: Path = Path("state")
    control_socket: Path | None = Path("authd.sock")
    metrics: Endpoint | None = Endpoint("127.0.0.1", METRICS_PORT)
    tcp_idle_timeout: float = 10.0
    tcp_max_clients: int = 1000
    tcp_max_clients_per_ip: int = 100
    log_format: str = "text"
    log_level: str = "info"
    # authd's own NS names (the extra NS set): drift, delegation checks and the report
    # tell authd's servers from the provider's by them. Lowercase, no trailing dot.
    ns_names: tuple[str, ...] = ()
    resolver: Endpoint | None = None  # a recursive resolver the report may ask


@dataclass(frozen=True, slots=True)
class TransferConfig:
    max_concurrent: int = 32
    max_per_primary: int = 8
    max_soa_checks_in_flight: int = 20
    timeout: float = 3600.0
    idle_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    processes: int = 1
    nice: int = 10
    idle: bool = True  # SCHED_IDLE: run only when no serving process wants the CPU


@dataclass(frozen=True, slots=True)
class RrlConfig:
    rate: int = 0  # responses per second per prefix; 0 = off
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    exempt: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class CookiesConfig:
    """[cookies]: RFC 7873 server cookies made as RFC 9018 (SipHash-2-4, version 1)."""

    enabled: bool = True
    secret: bytes | None = None  # 16 octets; None: a random one per start, shared by workers
    previous_secret: bytes | None = None  # still accepted during a rollover, never used to make


@dataclass(frozen=True, slots=True)
class LogConfig:
    query_sample_rate: float = 0.0  # fraction of queries logged; 0 = none


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """[export]: regular exports of every served zone as master files (issue 14)."""

    dir: Path | None = None  # None: no regular exports
    interval: float = 3600.0


@dataclass(frozen=True, slots=True)
class Operator:
    """A label for the report: NS names at or below `ns`, or addresses in `prefixes`."""

    name: str
    ns: tuple[str, ...] = ()  # lowercase, no trailing dot
    prefixes: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    source: Path
    server: ServerConfig
    tsig_keys: tuple[TsigKey, ...]
    remotes: tuple[Remote, ...]
    zones: tuple[ZoneConfig, ...]
    transfer: TransferConfig
    validation: ValidationConfig
    rrl: RrlConfig
    log: LogConfig
    warnings: tuple[str, ...] = ()
    cookies: CookiesConfig = CookiesConfig()
    operators: tuple[Operator, ...] = ()
    export: ExportConfig = ExportConfig()
    # Zone settings by template id, for zones made at runtime (catalog members).
    templates: Mapping[str, _Settings] = dataclasses.field(default_factory=dict, compare=False)

    def zone(self, name: str) -> ZoneConfig | None:
        """The zone called `name` (case-insensitive, trailing dot optional), if configured."""
        try:
            origin = key_from_name(dns.name.from_text(name))
        except dns.exception.DNSException:
            return None
        return next((zone for zone in self.zones if zone.origin == origin), None)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        return keyfiles.keyring(self.tsig_keys)


# --- scalar parsers (raise ValueError with the reason) --------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Seconds from an int/float or a string like "300", "30m", "1h30m", "2d", "500ms"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f'expected a duration (seconds, or a string like "30m"), got {value!r}')
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(
            f'bad duration "{value}" (use seconds or number+unit: ms, s, m, h, d, w; e.g. "1h30m")'
        )
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def parse_endpoint(text: str, default_port: int, *, allow_port_zero: bool = False) -> Endpoint:
    """ "IP" or "IP@PORT", IPv4 or IPv6 (a scope like fe80::1%eth0 is kept)."""
    host, sep, port_text = text.rpartition("@")
    if not sep:
        host, port_text = text, ""
    try:
        address = ipaddress.ip_address(host.strip())
    except ValueError:
        raise ValueError(
            f'"{text}" is not an IP address (write "IP" or "IP@PORT", e.g. "192.0.2.1@53")'
        ) from None
    port = default_port
    if sep:
        lowest = 0 if allow_port_zero else 1
        if not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
            raise ValueError(f'bad port "{port_text}" in "{text}" (expected {lowest}..65535)')
        port = int(port_text)
    return Endpoint(str(address), port)


def parse_network(text: str) -> IPNetwork:
    """An address prefix ("192.0.2.0/24", "2001:db8::/32") or a single address."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f'"{text}" is not an address prefix: {exc}') from None


# --- reading tables -------------------------------------------------------------------------------


class _Context:
    def __init__(self, file: Path) -> None:
        self.file = file  # as the user wrote it, for messages
        self.base = Path(os.path.abspath(file)).parent
        self.errors: list[ConfigIssue] = []
        self.warnings: list[str] = []
        # Each root cause is reported once: a remote whose own table has errors, or a key
        # that may be in a key file that could not be read, is not reported again where used.
        self.broken_remotes: set[str] = set()
        self.unreadable_key_files = False

    def error(self, key: str, reason: str) -> None:
        self.errors.append(ConfigIssue(str(self.file), key, reason))

    def resolve(self, text: str) -> Path:
        return Path(os.path.normpath(self.base / text))


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


class _Table:
    """One TOML table being read: typed getters that record errors instead of raising, and a
    finish() that reports every key nobody asked for."""

    def __init__(self, ctx: _Context, data: Mapping[str, Any], path: str) -> None:
        self.ctx = ctx
        self.data = data
        self.path = path
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> None:
        self.ctx.error(self.key(name), reason)

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def finish(self) -> None:
        known = sorted(self.seen)
        for name in self.data:
            if name not in self.seen:
                hint = difflib.get_close_matches(name, known, n=1)
                suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.error(name, f"unknown key{suffix}")

    def string(self, name: str, *, max_bytes: int | None = None) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.error(name, f"expected a string, got {_toml_type(value)}")
            return None
        if max_bytes is not None and len(value.encode()) > max_bytes:
            self.error(name, f"longer than {max_bytes} bytes")
            return None
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(name)
        if value is not None and value not in choices:
            self.error(name, f'"{value}" is not one of: {", ".join(choices)}')
            return None
        return value

    def integer(self, name: str, lo: int, hi: int) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"expected an integer, got {_toml_type(value)}")
            return None
        if not lo <= value <= hi:
            self.error(name, f"{value} is out of range {lo}..{hi}")
            return None
        return value

    def number(self, name: str, lo: float, hi: float) -> float | None:
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(name, f"expected a number, got {_toml_type(value)}")
            return None
        if not lo <= value <= hi:
            self.error(name, f"{value} is out of range {lo}..{hi}")
            return None
        return float(value)

    def boolean(self, name: str) -> bool | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(name, f"expected true or false, got {_toml_type(value)}")
            return None
        return value

    def duration(self, name: str, lo: float, hi: float) -> float | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(name, str(exc))
            return None
        if not lo <= seconds <= hi:
            self.error(name, f"{_show_seconds(seconds)} is out of range {lo:g}..{hi:g} seconds")
            return None
        return seconds

    def whole_seconds(self, name: str, lo: int, hi: int) -> int | None:
        seconds = self.duration(name, lo, hi)
        if seconds is None:
            return None
        if seconds != int(seconds):
            self.error(name, f"must be whole seconds, got {seconds:g}")
            return None
        return int(seconds)

    def string_list(self, name: str) -> list[tuple[str, str]] | None:
        """[(key path of the item, item)], or None when absent or not a list of strings."""
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, list):
            self.error(name, f"expected a list of strings, got {_toml_type(value)}")
            return None
        items: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                items.append((f"{self.key(name)}[{index}]", item))
            else:
                self.ctx.error(
                    f"{self.key(name)}[{index}]", f"expected a string, got {_toml_type(item)}"
                )
        return items

    def path_value(self, name: str) -> Path | None:
        text = self.string(name)
        if text is None:
            return None
        if not text:
            self.error(name, "must not be empty")
            return None
        return self.ctx.resolve(text)


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for kind, text in names.items():
        if isinstance(value, kind):
            return f"{text} ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _show_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _subtable(ctx: _Context, root: _Table, name: str) -> _Table:
    value = root.get(name)
    if value is None:
        return _Table(ctx, {}, name)
    if not isinstance(value, dict):
        ctx.error(name, f"expected a table [{name}], got {_toml_type(value)}")
        return _Table(ctx, {}, name)
    return _Table(ctx, value, name)


def _array_of_tables(ctx: _Context, root: _Table, name: str) -> list[_Table]:
    value = root.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        ctx.error(
            name, f"expected [[{name}]] entries (an array of tables), got {_toml_type(value)}"
        )
        return []
    tables: list[_Table] = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            tables.append(_Table(ctx, item, f"{name}[{index}]"))
        else:
            ctx.error(f"{name}[{index}]", f"expected a table, got {_toml_type(item)}")
    return tables


# --- sections -------------------------------------------------------------------------------------


def _read_server(t: _Table) -> ServerConfig:
    d = ServerConfig()
    listen = d.listen
    items = t.string_list("listen")
    if items is not None:
        endpoints: list[Endpoint] = []
        for key, text in items:
            try:
                endpoint = parse_endpoint(text, DNS_PORT)
            except ValueError as exc:
                t.ctx.error(key, str(exc))
                continue
            if endpoint in endpoints:
                t.ctx.error(key, f"{endpoint} is listed twice")
                continue
            endpoints.append(endpoint)
        if t.data.get("listen") == []:
            t.error("listen", "at least one address is needed")
        listen = tuple(endpoints)
    nsid = d.nsid
    nsid_text = t.string("nsid")
    if nsid_text is not None:
        nsid = _parse_nsid(t, nsid_text)
    resolver = None
    resolver_text = t.string("resolver")
    if resolver_text:
        try:
            resolver = parse_endpoint(resolver_text, DNS_PORT)
        except ValueError as exc:
            t.error("resolver", str(exc))
    control_text = _or(t.string("control-socket"), "authd.sock")
    control_socket = t.ctx.resolve(control_text) if control_text else None
    metrics = d.metrics
    metrics_text = t.string("metrics")
    if metrics_text is not None:
        metrics = None
        if metrics_text:
            try:
                metrics = parse_endpoint(metrics_text, METRICS_PORT)
            except ValueError as exc:
                t.error("metrics", str(exc))
    server = ServerConfig(
        listen=listen,
        workers=_or(t.integer("workers", 0, 1024), d.workers),
        identity=_or(t.string("identity", max_bytes=255), d.identity),
        nsid=nsid,
        version=_or(t.string("version", max_bytes=255), d.version),
        udp_payload=_or(t.integer("udp-payload", 512, 4096), d.udp_payload),
        state_dir=_or(t.path_value("state-dir"), t.ctx.resolve("state")),
        control_socket=control_socket,
        metrics=metrics,
        tcp_idle_timeout=_or(t.duration("tcp-idle-timeout", 0.1, 3600), d.tcp_idle_timeout),
        tcp_max_clients=_or(t.integer("tcp-max-clients", 1, 1_000_000), d.tcp_max_clients),
        tcp_max_clients_per_ip=_or(
            t.integer("tcp-max-clients-per-ip", 1, 1_000_000), d.tcp_max_clients_per_ip
        ),
        log_format=_or(t.choice("log-format", ("text", "json")), d.log_format),
        log_level=_or(
            t.choice("log-level", ("debug", "info", "warning", "error", "critical")), d.log_level
        ),
        ns_names=_domain_names(t, "ns-names"),
        resolver=resolver,
    )
    if server.tcp_max_clients_per_ip > server.tcp_max_clients:
        t.error(
            "tcp-max-clients-per-ip",
            f"{server.tcp_max_clients_per_ip} is more than tcp-max-clients "
            f"({server.tcp_max_clients})",
        )
    t.finish()
    return server


def _domain_names(t: _Table, name: str) -> tuple[str, ...]:
    """A list of domain names, lowercased, without the trailing dot."""
    out: list[str] = []
    for key_path, text in t.string_list(name) or []:
        try:
            parsed = dns.name.from_text(text)
        except dns.exception.DNSException as exc:
            t.ctx.error(key_path, f'"{text}" is not a valid domain name: {exc}')
            continue
        shown = parsed.to_text(omit_final_dot=True).lower() or "."
        if shown in out:
            t.ctx.error(key_path, f"{shown} is listed twice")
            continue
        out.append(shown)
    return tuple(out)


def _endpoints(t: _Table, name: str) -> tuple[Endpoint, ...] | None:
    """A list of "IP" or "IP@PORT" (port 53 by default); None when absent."""
    items = t.string_list(name)
    if items is None:
        return None
    out: list[Endpoint] = []
    for key_path, text in items:
        try:
            endpoint = parse_endpoint(text, DNS_PORT)
        except ValueError as exc:
            t.ctx.error(key_path, str(exc))
            continue
        if endpoint in out:
            t.ctx.error(key_path, f"{endpoint} is listed twice")
            continue
        out.append(endpoint)
    return tuple(out)


def _rr_types(t: _Table, name: str) -> frozenset[int] | None:
    """A list of RR type mnemonics ("CAA", "TYPE65534"); None when absent."""
    items = t.string_list(name)
    if items is None:
        return None
    out: set[int] = set()
    for key_path, text in items:
        try:
            out.add(int(dns.rdatatype.from_text(text)))
        except dns.exception.DNSException:
            t.ctx.error(key_path, f'"{text}" is not a DNS record type')
    return frozenset(out)


def _read_operator(t: _Table) -> Operator | None:
    name = t.string("name")
    ns = _domain_names(t, "ns")
    prefixes: list[IPNetwork] = []
    for key_path, text in t.string_list("prefixes") or []:
        try:
            prefixes.append(parse_network(text))
        except ValueError as exc:
            t.ctx.error(key_path, str(exc))
    t.finish()
    if name is None:
        if not t.has("name"):
            t.error("name", "missing: every [[operator]] needs a name")
        return None
    if not name:
        t.error("name", "must not be empty")
        return None
    if not ns and not prefixes:
        t.error("ns", "an operator needs ns names or prefixes to match")
    return Operator(name, ns, tuple(prefixes))


def _parse_nsid(t: _Table, text: str) -> bytes:
    """NSID as text, or as hex when written "0x..." (as Knot's `nsid` option)."""
    if text.lower().startswith("0x"):
        try:
            value = bytes.fromhex(text[2:])
        except ValueError:
            t.error("nsid", f'"{text}" is not valid hex')
            return b""
    else:
        value = text.encode()
    if len(value) > 255:
        t.error("nsid", "longer than 255 bytes")
        return b""
    return value


def _read_tsig(t: _Table) -> dict[str, TsigKey]:
    found: dict[str, tuple[TsigKey, str]] = {}
    for key_path, text in t.string_list("key-files") or []:
        if not text:
            t.ctx.error(key_path, "must not be empty")
            continue
        try:
            key_file = keyfiles.load_key_file(t.ctx.resolve(text))
        except keyfiles.KeyFileError as exc:
            t.ctx.error(key_path, str(exc))
            t.ctx.unreadable_key_files = True
            continue
        t.ctx.warnings.extend(key_file.warnings)
        for key in key_file.keys:
            if key.name in found:
                t.ctx.error(key_path, f'key "{key.name}" is also defined in {found[key.name][1]}')
                continue
            found[key.name] = (key, str(key_file.path))
    t.finish()
    return {name: key for name, (key, _) in found.items()}


def _lookup_key(
    ctx: _Context, key_path: str, name: str, tsig_keys: Mapping[str, TsigKey]
) -> TsigKey | None:
    try:
        normalized = keyfiles.normalize_key_name(name)
    except dns.exception.DNSException as exc:
        ctx.error(key_path, f'bad key name "{name}": {exc}')
        return None
    key = tsig_keys.get(normalized)
    if key is None and not ctx.unreadable_key_files:
        defined = ", ".join(k.rstrip(".") for k in sorted(tsig_keys)) or "none"
        ctx.error(
            key_path,
            f'TSIG key "{name}" is not defined in any [tsig] key-files (defined: {defined})',
        )
    return key


def _read_remote(t: _Table, tsig_keys: Mapping[str, TsigKey]) -> Remote | None:
    errors_before = len(t.ctx.errors)
    remote_id = t.string("id")
    if remote_id is None and not t.has("id"):
        t.error("id", "missing: every [[remote]] needs an id")
    elif remote_id == "":
        t.error("id", "must not be empty")
    tls = _read_remote_tls(t)
    default_port = DNS_OVER_TLS_PORT if t.has("tls") else DNS_PORT
    addresses: list[Endpoint] = []
    items = t.string_list("addresses")
    if items is None and not t.has("addresses"):
        t.error("addresses", "missing: a remote needs at least one address")
    elif items is not None and not items and isinstance(t.data.get("addresses"), list):
        t.error("addresses", "at least one address is needed")
    for key_path, text in items or []:
        try:
            addresses.append(parse_endpoint(text, default_port))
        except ValueError as exc:
            t.ctx.error(key_path, str(exc))
    key_name = t.string("key")
    key = _lookup_key(t.ctx, t.key("key"), key_name, tsig_keys) if key_name else None
    if key_name == "":
        t.error("key", "must not be empty (leave it out for no TSIG)")
    source = None
    source_text = t.string("source")
    if source_text is not None:
        try:
            source = parse_endpoint(source_text, 0, allow_port_zero=True)
        except ValueError as exc:
            t.error("source", str(exc))
    if source is not None:
        for index, address in enumerate(addresses):
            if address.family != source.family:
                t.error(
                    "source",
                    f"{source.host} cannot reach addresses[{index}] {address} (other IP family)",
                )
    edns_expire = t.boolean("edns-expire")
    t.finish()
    if remote_id and (not addresses or len(t.ctx.errors) > errors_before):
        t.ctx.broken_remotes.add(remote_id)  # its errors are reported; its users stay quiet
        return None
    if not remote_id or not addresses:
        return None
    return Remote(remote_id, tuple(addresses), key, source, tls, edns_expire=_or(edns_expire, True))


def _read_remote_tls(t: _Table) -> RemoteTls | None:
    """`tls = { ca-file = "...", name = "..." }` or `{ cert-key = "..." }` (or a list of pins),
    each with an optional client `cert-file` (+ `key-file`)."""
    value = t.get("tls")
    if value is None:
        return None
    if not isinstance(value, dict):
        t.error(
            "tls",
            'expected a table such as { ca-file = "...", name = "..." } or '
            f'{{ cert-key = "..." }}, got {_toml_type(value)}',
        )
        return None
    tt = _Table(t.ctx, value, t.key("tls"))
    errors_before = len(t.ctx.errors)
    ca_file = _readable_file(tt, "ca-file")
    name = tt.string("name", max_bytes=253)
    if name == "":
        tt.error("name", "must not be empty")
    pins = _read_pins(tt)
    cert_file = _readable_file(tt, "cert-file")
    key_file = _readable_file(tt, "key-file")
    if tt.has("key-file") and not tt.has("cert-file"):
        tt.error("key-file", "needs cert-file (the client certificate the key belongs to)")
    has_ca, has_pin = tt.has("ca-file"), tt.has("cert-key")
    if has_pin and (has_ca or tt.has("name")):
        tt.error(
            "cert-key",
            "give either cert-key (an SPKI pin, the chain is not verified) or ca-file and name, "
            "not both",
        )
    elif not has_pin and not has_ca and not tt.has("name"):
        t.error(
            "tls",
            "no way to authenticate the remote: give ca-file and name, or cert-key "
            "(never TLS without authentication)",
        )
    elif has_ca and not tt.has("name"):
        tt.error("name", "missing: the name the remote's certificate must carry (with ca-file)")
    elif tt.has("name") and not has_ca:
        tt.error("ca-file", "missing: the CA that must have signed the certificate named by name")
    tt.finish()
    if len(t.ctx.errors) != errors_before:
        return None
    return RemoteTls(ca_file, name or None, pins, cert_file, key_file)


def _readable_file(t: _Table, name: str) -> Path | None:
    path = t.path_value(name)
    if path is not None and not os.access(path, os.R_OK):
        reason = "does not exist" if not path.exists() else "is not readable"
        t.error(name, f"{path} {reason}")
        return None
    return path


def _read_pins(t: _Table) -> tuple[bytes, ...]:
    """cert-key: one base64 SHA-256 digest of a SubjectPublicKeyInfo, or a list (for rollover)."""
    value = t.get("cert-key")
    if value is None:
        return ()
    items: list[tuple[str, object]]
    if isinstance(value, list):
        if not value:
            t.error("cert-key", "at least one pin is needed")
        items = [(f"{t.key('cert-key')}[{i}]", item) for i, item in enumerate(value)]
    else:
        items = [(t.key("cert-key"), value)]
    pins: list[bytes] = []
    for key_path, item in items:
        if not isinstance(item, str):
            t.ctx.error(key_path, f"expected a base64 string, got {_toml_type(item)}")
            continue
        try:
            digest = base64.b64decode(item.strip(), validate=True)
        except binascii.Error:
            t.ctx.error(key_path, f'"{item}" is not base64')
            continue
        if len(digest) != 32:
            t.ctx.error(
                key_path,
                f"a pin is the base64 SHA-256 of the certificate's SubjectPublicKeyInfo "
                f"(32 octets), got {len(digest)} octets",
            )
            continue
        pins.append(digest)
    return tuple(pins)


# --- zone settings shared by [[template]] and [[zone]] --------------------------------------------


@dataclass(slots=True)
class _Settings:
    """Zone settings as written in one table; None = not set there."""

    primaries: tuple[Remote, ...] | None = None
    notify_from: tuple[NotifySource, ...] | None = None
    dnssec_validation: str | None = None
    trust_anchor: tuple[Path, str] | None = None  # (file, key path that set it)
    zonemd: str | None = None
    on_expire: str | None = None
    refresh_min: int | None = None
    refresh_max: int | None = None
    retry_min: int | None = None
    retry_max: int | None = None
    expire_min: int | None = None
    expire_max: int | None = None
    serial_rollback_after: int | None = None
    ixfr: bool | None = None
    max_records: int | None = None
    max_bytes: int | None = None
    max_rrset_records: int | None = None
    max_types_per_name: int | None = None
    max_ixfr_diff_records: int | None = None
    signature_warning_days: int | None = None
    clock_skew: int | None = None
    unknown_algorithm: str | None = None
    peers: tuple[Endpoint, ...] | None = None
    drift_ignore_types: frozenset[int] | None = None
    parent: tuple[Endpoint, ...] | None = None
    ds_check: str | None = None
    drift_interval: float | None = None
    drift_sample: bool | None = None
    history_versions: int | None = None
    provide_xfr: tuple[NotifySource, ...] | None = None
    provide_xfr_expired: bool | None = None
    notify: tuple[Remote, ...] | None = None
    notify_delay: float | None = None
    guard: dict[str, Any] | None = None  # the [guard] keys set in this table
    # Where each set value came from, for errors found after merging.
    origin: dict[str, str] = field(default_factory=dict)

    def over(self, base: _Settings) -> _Settings:
        """These settings on top of `base`: every value set here wins."""
        merged = dataclasses.replace(base, origin=dict(base.origin))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "guard" and value is not None and base.guard is not None:
                value = {**base.guard, **value}  # a zone's guard keys over its template's
            if f.name != "origin" and value is not None:
                setattr(merged, f.name, value)
                merged.origin[f.name] = self.origin[f.name]
        return merged


_TIMER_KEYS = ("refresh", "retry", "expire")
DS_CHECKS = ("parent", "trust-anchor", "off")
_LIMIT_MAX = 2**62


def _read_settings(
    t: _Table, remotes: Mapping[str, Remote], tsig_keys: Mapping[str, TsigKey]
) -> _Settings:
    s = _Settings()
    s.primaries = _read_primaries(t, remotes)
    s.notify_from = _read_notify_from(t, remotes, tsig_keys)
    s.dnssec_validation = t.choice("dnssec-validation", ("auto", "required", "off"))
    anchor = t.path_value("trust-anchor")
    s.trust_anchor = (anchor, t.key("trust-anchor")) if anchor else None
    s.zonemd = t.choice("zonemd", ("auto", "required", "off"))
    s.on_expire = t.choice("on-expire", ("serve-stale", "servfail"))
    for timer in _TIMER_KEYS:
        for bound in ("min", "max"):
            value = t.whole_seconds(f"{timer}-{bound}", 1, SERIAL_HALF)
            setattr(s, f"{timer}_{bound}", value)
    s.serial_rollback_after = t.integer("serial-rollback-after", 0, 1_000_000)
    s.ixfr = t.boolean("ixfr")
    s.max_records = t.integer("max-records", 1, _LIMIT_MAX)
    s.max_bytes = t.integer("max-bytes", 512, _LIMIT_MAX)
    s.max_rrset_records = t.integer("max-rrset-records", 1, 65535)
    s.max_types_per_name = t.integer("max-types-per-name", 1, 65535)
    s.max_ixfr_diff_records = t.integer("max-ixfr-diff-records", 1, _LIMIT_MAX)
    s.signature_warning_days = t.integer("signature-warning-days", 0, 3650)
    s.clock_skew = t.whole_seconds("clock-skew", 0, 7 * 86400)
    s.unknown_algorithm = t.choice("unknown-algorithm", ("reject", "warn"))
    s.peers = _endpoints(t, "peers")
    s.drift_ignore_types = _rr_types(t, "drift-ignore-types")
    s.parent = _endpoints(t, "parent")
    s.ds_check = t.choice("ds-check", DS_CHECKS)
    s.drift_interval = t.duration("drift-interval", 0, 86400)
    if s.drift_interval is not None and 0 < s.drift_interval < 1:
        t.error("drift-interval", "must be 0 (off) or at least 1 s")
        s.drift_interval = None
    s.drift_sample = t.boolean("drift-sample")
    s.history_versions = t.integer("history-versions", 0, 10_000)
    s.provide_xfr = _read_notify_from(t, remotes, tsig_keys, "provide-xfr")
    s.provide_xfr_expired = t.boolean("provide-xfr-expired")
    s.notify = _read_remote_ids(t, remotes, "notify")
    s.notify_delay = t.duration("notify-delay", 0, 3600)
    s.guard = _read_guard(t)
    for f in dataclasses.fields(s):
        if f.name != "origin" and getattr(s, f.name) is not None:
            s.origin[f.name] = t.key(f.name.replace("_", "-"))
    return s


def _read_guard(t: _Table) -> dict[str, Any] | None:
    """[guard] (in a template or a zone): the change guard's limits; `false` turns a limit
    off. Only the keys given are returned (a zone's keys override its template's)."""
    value = t.get("guard")
    if value is None:
        return None
    if not isinstance(value, dict):
        t.error("guard", f"expected a table, got {_toml_type(value)}")
        return None
    g = _Table(t.ctx, value, t.key("guard"))
    found: dict[str, Any] = {}

    def off_or(name: str, read: Callable[[str], object]) -> None:
        if g.data.get(name) is False:
            g.get(name)
            found[name.replace("-", "_")] = None
            return
        number = read(name)
        if number is not None:
            found[name.replace("-", "_")] = number

    for flag in ("enabled", "ns-replaced", "own-ns-removed", "apex-missing", "dnskey-replaced"):
        on = g.boolean(flag)
        if on is not None:
            found[flag.replace("-", "_")] = on
    off_or("max-removed-share", lambda n: g.number(n, 0.0, 1.0))
    off_or("max-delegations-removed", lambda n: g.integer(n, 0, _LIMIT_MAX))
    off_or("hold-timeout", lambda n: g.duration(n, 1, 365 * 86400))
    min_rrsets = g.integer("min-rrsets", 0, _LIMIT_MAX)
    if min_rrsets is not None:
        found["min_rrsets"] = min_rrsets
    g.finish()
    return found


def _read_primaries(t: _Table, remotes: Mapping[str, Remote]) -> tuple[Remote, ...] | None:
    return _read_remote_ids(t, remotes, "primaries", required=True)


def _read_remote_ids(
    t: _Table, remotes: Mapping[str, Remote], name: str, *, required: bool = False
) -> tuple[Remote, ...] | None:
    """A list of [[remote]] ids (primaries, notify)."""
    items = t.string_list(name)
    if items is None:
        return None
    if required and not items and isinstance(t.data.get(name), list):
        t.error(name, "at least one remote id is needed")
    primaries: list[Remote] = []
    for key_path, remote_id in items:
        remote = remotes.get(remote_id)
        if remote is None and remote_id in t.ctx.broken_remotes:
            continue
        if remote is None:
            t.ctx.error(key_path, _unknown_remote(remote_id, remotes))
        elif remote in primaries:
            t.ctx.error(key_path, f'remote "{remote_id}" is listed twice')
        else:
            primaries.append(remote)
    return tuple(primaries)


def _unknown_remote(remote_id: str, remotes: Mapping[str, Remote]) -> str:
    known = ", ".join(sorted(remotes)) or "none"
    return f'no [[remote]] with id "{remote_id}" (defined: {known})'


def _read_notify_from(
    t: _Table,
    remotes: Mapping[str, Remote],
    tsig_keys: Mapping[str, TsigKey],
    name: str = "notify-from",
) -> tuple[NotifySource, ...] | None:
    """Entries are a remote id or a prefix, or a table {from = "...", key = "..."}
    (notify-from, and provide-xfr in the same shape)."""
    value = t.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        t.error(name, f"expected a list, got {_toml_type(value)}")
        return None
    sources: list[NotifySource] = []
    for index, item in enumerate(value):
        key_path = f"{t.key(name)}[{index}]"
        if isinstance(item, str):
            sources.extend(_notify_entry(t.ctx, key_path, item, None, False, remotes))
        elif isinstance(item, dict):
            entry = _Table(t.ctx, item, key_path)
            where = entry.string("from")
            key_name = entry.string("key")
            if where is None:
                if not entry.has("from"):
                    what = "NOTIFY comes from" if name == "notify-from" else "transfers go to"
                    entry.error("from", f"missing: the remote id or prefix {what}")
            else:
                key = None
                if key_name:
                    key = _lookup_key(t.ctx, entry.key("key"), key_name, tsig_keys)
                sources.extend(
                    _notify_entry(t.ctx, key_path, where, key, key_name is not None, remotes)
                )
            entry.finish()
        else:
            t.ctx.error(
                key_path,
                'expected a remote id, a prefix or {from = "...", key = "..."}, '
                f"got {_toml_type(item)}",
            )
    return tuple(sources)


def _notify_entry(
    ctx: _Context,
    key_path: str,
    where: str,
    key: TsigKey | None,
    key_given: bool,
    remotes: Mapping[str, Remote],
) -> list[NotifySource]:
    remote = remotes.get(where)
    if remote is None and where in ctx.broken_remotes:
        return []
    if remote is not None:
        chosen = key if key_given else remote.key
        return [NotifySource(_host_network(a), chosen, remote.id) for a in remote.addresses]
    try:
        return [NotifySource(parse_network(where), key, None)]
    except ValueError as exc:
        if any(ch in where for ch in "./:"):
            ctx.error(key_path, str(exc))
        else:
            ctx.error(key_path, f"{_unknown_remote(where, remotes)}, and not an address prefix")
        return []


def _host_network(endpoint: Endpoint) -> IPNetwork:
    return ipaddress.ip_network(endpoint.host.split("%")[0])


# --- templates and zones --------------------------------------------------------------------------


def _read_templates(
    tables: list[_Table], remotes: Mapping[str, Remote], tsig_keys: Mapping[str, TsigKey]
) -> dict[str, _Settings]:
    templates: dict[str, _Settings] = {}
    for t in tables:
        template_id = t.string("id")
        settings = _read_settings(t, remotes, tsig_keys)
        t.finish()
        if template_id is None:
            if not t.has("id"):
                t.error("id", "missing: every [[template]] needs an id")
        elif not template_id:
            t.error("id", "must not be empty")
        elif template_id in templates:
            t.error("id", f'template "{template_id}" is defined twice')
        else:
            templates[template_id] = settings
    return templates


def _read_zone(
    t: _Table,
    remotes: Mapping[str, Remote],
    tsig_keys: Mapping[str, TsigKey],
    templates: Mapping[str, _Settings],
) -> ZoneConfig | None:
    name_text = t.string("name")
    origin: bytes | None = None
    dns_name: dns.name.Name | None = None
    if name_text is None:
        if not t.has("name"):
            t.error("name", "missing: every [[zone]] needs a name")
    else:
        try:
            dns_name = dns.name.from_text(name_text)
            origin = key_from_name(dns_name)
        except dns.exception.DNSException as exc:
            t.error("name", f'"{name_text}" is not a valid domain name: {exc}')
    file = t.path_value("file")
    template_id = t.string("template")
    catalog = _read_catalog(t)
    own = _read_settings(t, remotes, tsig_keys)
    t.finish()

    base = _Settings()
    if template_id is not None:
        if template_id in templates:
            base = templates[template_id]
        else:
            known = ", ".join(sorted(templates)) or "none"
            t.error("template", f'no [[template]] with id "{template_id}" (defined: {known})')
    elif "default" in templates:
        template_id = "default"
        base = templates["default"]
    s = own.over(base)

    if file is not None and own.primaries is not None:
        t.error("file", "a zone has either file or primaries, not both")
    elif file is None and not s.primaries:
        if s.primaries is None:
            t.error("file", "missing: a zone needs file (served locally) or primaries")
        return None
    if file is not None:
        s.primaries = ()  # a local zone ignores the primaries its template may name
        if own.notify_from:
            t.error("notify-from", "a zone served from a file takes no NOTIFY")
        s.notify_from = ()
        # Whether the file exists and parses is for `authd check-config` (an error there)
        # and for loading (an error in the log): the file may be written after this check.
    if dns_name is None or origin is None:
        return None
    if catalog is not None and file is not None:
        t.error("catalog", "a catalog zone is transferred from primaries, not read from a file")
    zone = _zone_from_settings(t.ctx, dns_name, origin, file, template_id, s)
    return dataclasses.replace(zone, catalog=catalog) if catalog is not None else zone


def _read_catalog(t: _Table) -> CatalogSettings | None:
    """The catalog keys of a [[zone]]; the two tuning keys need `catalog = true`."""
    is_catalog = t.boolean("catalog")
    d = CatalogSettings()
    keep = t.duration("catalog-removed-keep", 0, 3650 * 86400)
    share = t.number("catalog-max-removed-share", 0.0, 1.0)
    if not is_catalog:
        for name, value in (("catalog-removed-keep", keep), ("catalog-max-removed-share", share)):
            if value is not None:
                t.error(name, "only for a catalog zone (catalog = true)")
        return None
    return CatalogSettings(_or(keep, d.removed_keep), _or(share, d.max_removed_share))


def member_zone(
    config: Config, catalog: ZoneConfig, name: dns.name.Name, group: str | None
) -> ZoneConfig | str:
    """The config of a catalog member: the template its group names (else "default"), with
    the catalog zone's primaries (and their TSIG keys); or why it cannot be built."""
    template_id: str | None = group if group in config.templates else None
    if template_id is None and "default" in config.templates:
        template_id = "default"
    base = config.templates.get(template_id, _Settings()) if template_id else _Settings()
    s = dataclasses.replace(base, origin=dict(base.origin))
    s.primaries = catalog.primaries
    if s.notify_from is None:
        s.notify_from = catalog.notify_from
    ctx = _Context(config.source)
    zone = _zone_from_settings(ctx, name, key_from_name(name), None, template_id, s)
    if ctx.errors:
        return "; ".join(str(issue) for issue in ctx.errors)
    return dataclasses.replace(zone, member_of=catalog.name, group=group)


def _zone_from_settings(
    ctx: _Context,
    dns_name: dns.name.Name,
    origin: bytes,
    file: Path | None,
    template_id: str | None,
    s: _Settings,
) -> ZoneConfig:
    timers = _timer_bounds(ctx, s)
    anchors, validation = _trust_anchors(ctx, s, dns_name)
    primaries = s.primaries or ()
    notify_from = s.notify_from
    if notify_from is None:
        notify_from = tuple(
            NotifySource(_host_network(a), r.key, r.id) for r in primaries for a in r.addresses
        )
    ds_check = _or(s.ds_check, "off")
    if ds_check == "parent" and not s.parent:
        ctx.error(s.origin["ds_check"], 'ds-check = "parent" needs the servers in parent')
    if ds_check == "trust-anchor" and s.trust_anchor is None:
        ctx.error(s.origin["ds_check"], 'ds-check = "trust-anchor" needs a trust-anchor file')
    limits = ZoneLimits()
    return ZoneConfig(
        name=dns_name.to_text(omit_final_dot=True).lower() or ".",
        origin=origin,
        file=file,
        primaries=primaries,
        notify_from=notify_from,
        template=template_id,
        dnssec_validation=validation,
        trust_anchor=s.trust_anchor[0] if s.trust_anchor else None,
        trust_anchors=anchors,
        zonemd=_or(s.zonemd, "auto"),
        on_expire=_or(s.on_expire, "serve-stale"),
        timers=timers,
        serial_rollback_after=_or(s.serial_rollback_after, 0),
        ixfr=_or(s.ixfr, True),
        limits=ZoneLimits(
            max_records=_or(s.max_records, limits.max_records),
            max_bytes=_or(s.max_bytes, limits.max_bytes),
            max_rrset_records=_or(s.max_rrset_records, limits.max_rrset_records),
            max_types_per_name=_or(s.max_types_per_name, limits.max_types_per_name),
            max_ixfr_diff_records=_or(s.max_ixfr_diff_records, limits.max_ixfr_diff_records),
        ),
        signature_warning_days=_or(s.signature_warning_days, 3),
        clock_skew=_or(s.clock_skew, 300),
        unknown_algorithm=_or(s.unknown_algorithm, "reject"),
        peers=s.peers,
        drift_ignore_types=_or(s.drift_ignore_types, frozenset()),
        parent=_or(s.parent, ()),
        ds_check=ds_check,
        drift_interval=_or(s.drift_interval, 60.0),
        drift_sample=_or(s.drift_sample, True),
        history_versions=_or(s.history_versions, 20),
        provide_xfr=s.provide_xfr or (),
        provide_xfr_expired=_or(s.provide_xfr_expired, False),
        notify=s.notify or (),
        notify_delay=_or(s.notify_delay, 0.0),
        guard=dataclasses.replace(GuardPolicy(), **(s.guard or {})),
    )


def _timer_bounds(ctx: _Context, s: _Settings) -> TimerBounds:
    d = TimerBounds()
    values: dict[str, int] = {}
    for timer in _TIMER_KEYS:
        low = _or(getattr(s, f"{timer}_min"), getattr(d, f"{timer}_min"))
        high = _or(getattr(s, f"{timer}_max"), getattr(d, f"{timer}_max"))
        if low > high:
            where = s.origin.get(f"{timer}_min") or s.origin.get(f"{timer}_max") or timer
            ctx.error(where, f"{timer}-min ({low}) is greater than {timer}-max ({high})")
            low, high = getattr(d, f"{timer}_min"), getattr(d, f"{timer}_max")
        values[f"{timer}_min"], values[f"{timer}_max"] = low, high
    return TimerBounds(**values)


def _trust_anchors(
    ctx: _Context, s: _Settings, zone: dns.name.Name
) -> tuple[tuple[TrustAnchor, ...], str]:
    validation = _or(s.dnssec_validation, "auto")
    if s.trust_anchor is None:
        return (), validation
    path, key_path = s.trust_anchor
    if validation == "off":
        ctx.error(key_path, 'a trust anchor needs DNSSEC validation, but dnssec-validation = "off"')
        return (), validation
    try:
        anchors = keyfiles.load_trust_anchors(path, zone.to_text())
    except keyfiles.TrustAnchorError as exc:
        ctx.error(key_path, str(exc))
        return (), "required"
    apex = key_from_name(zone)
    stray = [a for a in anchors if a.owner != apex]
    if stray:
        ctx.error(
            key_path,
            f"{path}: anchor owner {dns.name.from_wire(stray[0].owner, 0)[0]} is not the zone "
            f"{zone}",
        )
    return tuple(anchors), "required"  # an anchor implies validation (issue 4)


# --- the whole file -------------------------------------------------------------------------------

_TOP_LEVEL = (
    "server",
    "tsig",
    "remote",
    "template",
    "zone",
    "transfer",
    "validation",
    "rrl",
    "log",
    "cookies",
    "operator",
    "export",
)


def load_config(path: Path | str) -> Config:
    """Read and check a config file; raises ConfigError with every problem found."""
    file = Path(path)
    ctx = _Context(file)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            [ConfigIssue(str(file), "", "config file not found (pass another with -c FILE)")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(file), "", f"cannot read config file: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(str(file), "", f"TOML syntax error: {exc}")]) from None
    return _build(ctx, data)


def control_socket_of(path: Path | str) -> Path | None:
    """Where the daemon of a config file listens for control commands, read from a config
    that may have errors elsewhere (so `authd reload` can still ask the daemon, which then
    refuses the file and logs why). None when the file or that key cannot be read."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    server = data.get("server", {})
    text = server.get("control-socket", "authd.sock") if isinstance(server, dict) else None
    if not isinstance(text, str) or not text:
        return None
    return _Context(file).resolve(text)


def _build(ctx: _Context, data: dict[str, Any]) -> Config:
    root = _Table(ctx, data, "")
    server = _read_server(_subtable(ctx, root, "server"))
    tsig_keys = _read_tsig(_subtable(ctx, root, "tsig"))

    remotes: dict[str, Remote] = {}
    for t in _array_of_tables(ctx, root, "remote"):
        remote = _read_remote(t, tsig_keys)
        if remote is not None:
            if remote.id in remotes:
                t.error("id", f'remote "{remote.id}" is defined twice')
            else:
                remotes[remote.id] = remote

    templates = _read_templates(_array_of_tables(ctx, root, "template"), remotes, tsig_keys)

    zones: list[ZoneConfig] = []
    first_seen: dict[bytes, str] = {}
    for t in _array_of_tables(ctx, root, "zone"):
        zone = _read_zone(t, remotes, tsig_keys, templates)
        if zone is None:
            continue
        if zone.origin in first_seen:
            t.error("name", f'zone "{zone.name}" is already defined at {first_seen[zone.origin]}')
            continue
        first_seen[zone.origin] = t.path
        zones.append(zone)

    transfer = _read_transfer(_subtable(ctx, root, "transfer"))
    validation = _read_validation(_subtable(ctx, root, "validation"))
    rrl = _read_rrl(_subtable(ctx, root, "rrl"))
    log = _read_log(_subtable(ctx, root, "log"))
    cookies = _read_cookies(_subtable(ctx, root, "cookies"))
    operators = [_read_operator(t) for t in _array_of_tables(ctx, root, "operator")]
    export = _read_export(_subtable(ctx, root, "export"))
    root.finish()
    if ctx.errors:
        raise ConfigError(ctx.errors, ctx.warnings)
    return Config(
        source=ctx.base / ctx.file.name,
        server=server,
        tsig_keys=tuple(tsig_keys.values()),
        remotes=tuple(remotes.values()),
        zones=tuple(zones),
        transfer=transfer,
        validation=validation,
        rrl=rrl,
        log=log,
        warnings=tuple(ctx.warnings),
        cookies=cookies,
        operators=tuple(o for o in operators if o is not None),
        export=export,
        templates=templates,
    )


def _read_transfer(t: _Table) -> TransferConfig:
    d = TransferConfig()
    transfer = TransferConfig(
        max_concurrent=_or(t.integer("max-concurrent", 1, 10_000), d.max_concurrent),
        max_per_primary=_or(t.integer("max-per-primary", 1, 10_000), d.max_per_primary),
        max_soa_checks_in_flight=_or(
            t.integer("max-soa-checks-in-flight", 1, 100_000), d.max_soa_checks_in_flight
        ),
        timeout=_or(t.duration("timeout", 1, 7 * 86400), d.timeout),
        idle_timeout=_or(t.duration("idle-timeout", 0.1, 86400), d.idle_timeout),
    )
    t.finish()
    return transfer


def _read_validation(t: _Table) -> ValidationConfig:
    d = ValidationConfig()
    validation = ValidationConfig(
        processes=_or(t.integer("processes", 1, 256), d.processes),
        nice=_or(t.integer("nice", 0, 19), d.nice),
        idle=_or(t.boolean("idle"), d.idle),
    )
    t.finish()
    return validation


def _read_rrl(t: _Table) -> RrlConfig:
    d = RrlConfig()
    exempt: list[IPNetwork] = []
    for key_path, text in t.string_list("exempt") or []:
        try:
            exempt.append(parse_network(text))
        except ValueError as exc:
            t.ctx.error(key_path, str(exc))
    rrl = RrlConfig(
        rate=_or(t.integer("rate", 0, 10_000_000), d.rate),
        slip=_or(t.integer("slip", 0, 100), d.slip),
        ipv4_prefix=_or(t.integer("ipv4-prefix", 0, 32), d.ipv4_prefix),
        ipv6_prefix=_or(t.integer("ipv6-prefix", 0, 128), d.ipv6_prefix),
        exempt=tuple(exempt),
    )
    t.finish()
    return rrl


def _read_log(t: _Table) -> LogConfig:
    log = LogConfig(
        query_sample_rate=_or(t.number("query-sample-rate", 0.0, 1.0), 0.0),
    )
    t.finish()
    return log


def _read_export(t: _Table) -> ExportConfig:
    d = ExportConfig()
    export = ExportConfig(
        dir=t.path_value("dir"),
        interval=_or(t.duration("interval", 1, 365 * 86400), d.interval),
    )
    if export.dir is None and t.has("interval"):
        t.error("interval", "needs [export] dir (where the exports go)")
    t.finish()
    return export


def _read_cookies(t: _Table) -> CookiesConfig:
    """`secret` / `previous-secret` as 32 hex digits (a "0x" prefix allowed, as Knot's
    mod-cookies `secret`), or `secret-file` / `previous-secret-file` holding them (as
    NSD's cookie-secret-file: the hex on the first line)."""
    secret = _cookie_secret(t, "secret")
    previous = _cookie_secret(t, "previous-secret")
    if previous is not None and secret is None:
        t.error("previous-secret", "needs a secret (or secret-file) too: it only verifies")
    cookies = CookiesConfig(
        enabled=_or(t.boolean("enabled"), True),
        secret=secret,
        previous_secret=previous,
    )
    t.finish()
    return cookies


def _cookie_secret(t: _Table, name: str) -> bytes | None:
    file_key = f"{name}-file"
    if t.has(name) and t.has(file_key):
        t.get(name)
        t.get(file_key)
        t.error(file_key, f"give {name} or {file_key}, not both")
        return None
    key = name
    text = t.string(name)
    if text is None:
        path = t.path_value(file_key)
        if path is None:
            return None
        key = file_key
        try:
            lines = path.read_text(encoding="ascii").split()
        except (OSError, UnicodeDecodeError) as exc:
            t.error(file_key, f"cannot read {path}: {exc}")
            return None
        text = lines[0] if lines else ""
    digits = text[2:] if text.lower().startswith("0x") else text
    try:
        value = bytes.fromhex(digits)
    except ValueError:
        t.error(key, "not hex: a cookie secret is 32 hex digits (16 octets)")
        return None
    if len(value) != 16:
        t.error(key, f"a cookie secret is 32 hex digits (16 octets), got {len(value)} octets")
        return None
    return value
