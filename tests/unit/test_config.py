"""authd.config: every key parsed, every error reported with file, key path and reason."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import dns.name
import pytest

from authd.config import (
    Config,
    ConfigError,
    CookiesConfig,
    Endpoint,
    load_config,
    parse_duration,
    parse_endpoint,
)
from authd.keys import generate_tsig_key
from tests.support.config import PREAMBLE, errors_of, only_error, write_config

REPO = Path(__file__).resolve().parents[2]

# DS of a made-up key, the right length for digest type 2 (SHA-256).
DS_LINE = "example.com. 3600 IN DS 12345 13 2 " + "AB" * 32 + "\n"


# --- the shipped config ---------------------------------------------------------------------------


def test_repository_default_config_loads() -> None:
    config = load_config(REPO / "authd.toml")
    assert config.server.listen == (Endpoint("127.0.0.1", 5300), Endpoint("::1", 5300))
    assert config.server.workers == 1
    assert config.server.state_dir == REPO / "zones" / "state"
    assert config.server.control_socket == REPO / "authd.sock"
    assert config.server.metrics == Endpoint("127.0.0.1", 9853)
    [zone] = config.zones
    assert zone.name == "example.test"
    assert zone.file == REPO / "zones" / "example.test.zone"
    assert zone.file.exists()
    assert not zone.is_secondary


def test_defaults_of_an_almost_empty_config(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, '[[zone]]\nname = "a.test"\nfile = "x.zone"\n'))
    server = config.server
    assert server.listen == (Endpoint("127.0.0.1", 53), Endpoint("::1", 53))
    assert (server.workers, server.udp_payload, server.log_format) == (0, 1232, "text")
    assert server.state_dir == tmp_path / "state"
    assert (server.tcp_idle_timeout, server.tcp_max_clients) == (10.0, 1000)
    zone = config.zones[0]
    assert zone.dnssec_validation == "auto" and zone.zonemd == "auto"
    assert zone.on_expire == "serve-stale" and zone.ixfr is True
    assert (zone.signature_warning_days, zone.clock_skew, zone.serial_rollback_after) == (3, 300, 0)
    assert zone.unknown_algorithm == "reject"
    assert zone.limits.max_records > 0 and zone.limits.max_bytes > 0
    assert zone.timers.refresh_min <= zone.timers.refresh_max
    assert config.rrl.rate == 0 and config.rrl.slip == 2
    assert (config.rrl.ipv4_prefix, config.rrl.ipv6_prefix) == (24, 56)
    assert config.log.query_sample_rate == 0.0
    assert config.validation.processes == 1
    assert config.transfer.max_concurrent >= config.transfer.max_per_primary
    # A missing zone file is no config error: check-config reports it, and loading
    # fails for that zone alone.
    assert not any("x.zone" in warning for warning in config.warnings)


def test_every_section_is_read(tmp_path: Path) -> None:
    text = (
        PREAMBLE
        + """
[server]
listen = ["0.0.0.0", "::@5300"]
workers = 4
identity = "ns1"
nsid = "0x6e7331"
version = "authd"
udp-payload = 1400
state-dir = "/var/lib/authd"
control-socket = ""
metrics = ""
tcp-idle-timeout = "500ms"
tcp-max-clients = 200
tcp-max-clients-per-ip = 20
log-format = "json"
log-level = "debug"

[transfer]
max-concurrent = 3
max-per-primary = 1
max-soa-checks-in-flight = 7
timeout = "2h"
idle-timeout = 15

[validation]
processes = 2
nice = 5

[rrl]
rate = 20
slip = 0
ipv4-prefix = 32
ipv6-prefix = 64
exempt = ["10.0.0.0/8", "2001:db8::/32"]

[log]
query-sample-rate = 0.01

[[zone]]
name = "Example.COM."
primaries = ["provider", "backup"]
"""
    )
    config = load_config(write_config(tmp_path, text))
    server = config.server
    assert server.listen == (Endpoint("0.0.0.0", 53), Endpoint("::", 5300))
    assert (server.workers, server.identity, server.version) == (4, "ns1", "authd")
    assert server.nsid == b"ns1"
    assert server.udp_payload == 1400
    assert server.state_dir == Path("/var/lib/authd")
    assert server.control_socket is None and server.metrics is None
    assert server.tcp_idle_timeout == 0.5
    assert (server.tcp_max_clients, server.tcp_max_clients_per_ip) == (200, 20)
    assert (server.log_format, server.log_level) == ("json", "debug")
    assert config.transfer.timeout == 7200 and config.transfer.idle_timeout == 15
    assert config.transfer.max_soa_checks_in_flight == 7
    assert (config.validation.processes, config.validation.nice) == (2, 5)
    assert config.rrl.exempt == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert config.log.query_sample_rate == 0.01
    [zone] = config.zones
    assert zone.name == "example.com" and zone.origin == b"\x07example\x03com\x00"
    assert [r.id for r in zone.primaries] == ["provider", "backup"]
    provider = zone.primaries[0]
    assert provider.addresses == (Endpoint("192.0.2.53", 53), Endpoint("2001:db8::53", 5353))
    assert provider.key is not None and provider.key.name == "xfr-key."
    assert zone.primaries[1].key is None
    assert config.zone("EXAMPLE.com") is zone and config.zone("example.org") is None
    assert dns.name.from_text("xfr-key") in config.keyring()


# --- durations and addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (300, 300.0),
        (2.5, 2.5),
        ("300", 300.0),
        ("30s", 30.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["1x", "h", "", "1h 30m", "-5", "1h-", True, -1, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("192.0.2.1", Endpoint("192.0.2.1", 53)),
        ("192.0.2.1@5300", Endpoint("192.0.2.1", 5300)),
        ("2001:DB8::1", Endpoint("2001:db8::1", 53)),
        ("2001:db8::1@53", Endpoint("2001:db8::1", 53)),
        ("::", Endpoint("::", 53)),
    ],
)
def test_endpoints(text: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(text, 53) == endpoint


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("example.com", "not an IP address"),
        ("127.0.0.1:53", "not an IP address"),
        ("[::1]@53", "not an IP address"),
        ("127.0.0.1@", "bad port"),
        ("127.0.0.1@0", "bad port"),
        ("127.0.0.1@65536", "bad port"),
        ("127.0.0.1@x", "bad port"),
        ("300.1.1.1", "not an IP address"),
    ],
)
def test_bad_endpoints(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_endpoint(text, 53)


def test_source_may_have_port_zero() -> None:
    assert parse_endpoint("192.0.2.1@0", 0, allow_port_zero=True) == Endpoint("192.0.2.1", 0)


# --- templates ------------------------------------------------------------------------------------


def test_template_resolution(tmp_path: Path) -> None:
    text = (
        PREAMBLE
        + """
[[template]]
id = "default"
primaries = ["provider"]
on-expire = "servfail"
refresh-min = "5m"
max-records = 5000

[[template]]
id = "strict"
primaries = ["backup"]
dnssec-validation = "required"
zonemd = "required"

[[zone]]
name = "plain.test"

[[zone]]
name = "override.test"
on-expire = "serve-stale"
max-records = 10

[[zone]]
name = "strict.test"
template = "strict"
ixfr = false

[[zone]]
name = "local.test"
file = "zones/local.zone"
"""
    )
    config = load_config(write_config(tmp_path, text))
    plain, override, strict, local = config.zones
    assert plain.template == "default"
    assert [r.id for r in plain.primaries] == ["provider"]
    assert plain.on_expire == "servfail"
    assert plain.timers.refresh_min == 300
    assert plain.limits.max_records == 5000
    # The zone's own keys override the template's; the rest still comes from the template.
    assert override.on_expire == "serve-stale"
    assert override.limits.max_records == 10
    assert override.timers.refresh_min == 300
    # A named template replaces "default" entirely.
    assert strict.template == "strict"
    assert [r.id for r in strict.primaries] == ["backup"]
    assert (strict.dnssec_validation, strict.zonemd, strict.ixfr) == ("required", "required", False)
    assert strict.on_expire == "serve-stale" and strict.limits.max_records == 10_000_000
    # A zone's own file wins over primaries its template names.
    assert local.file == tmp_path / "zones" / "local.zone"
    assert local.primaries == () and local.notify_from == ()
    assert local.on_expire == "servfail"
    assert config.warnings == ()


def test_notify_from_defaults_to_the_primaries_with_their_keys(tmp_path: Path) -> None:
    text = PREAMBLE + '[[zone]]\nname = "a.test"\nprimaries = ["provider", "backup"]\n'
    [zone] = load_config(write_config(tmp_path, text)).zones
    provider = zone.primaries[0]
    assert [(str(s.network), s.key, s.remote_id) for s in zone.notify_from] == [
        ("192.0.2.53/32", provider.key, "provider"),
        ("2001:db8::53/128", provider.key, "provider"),
        ("198.51.100.1/32", None, "backup"),
    ]


def test_notify_from_ids_prefixes_and_keys(tmp_path: Path) -> None:
    text = (
        PREAMBLE
        + """
[[zone]]
name = "a.test"
primaries = ["provider"]
notify-from = [
  "backup",
  "203.0.113.0/24",
  { from = "2001:db8:1::/48", key = "other-key" },
  { from = "provider", key = "other-key" },
]
"""
    )
    [zone] = load_config(write_config(tmp_path, text)).zones
    rows = [(str(s.network), s.key.name if s.key else None, s.remote_id) for s in zone.notify_from]
    assert rows == [
        ("198.51.100.1/32", None, "backup"),
        ("203.0.113.0/24", None, None),
        ("2001:db8:1::/48", "other-key.", None),
        ("192.0.2.53/32", "other-key.", "provider"),
        ("2001:db8::53/128", "other-key.", "provider"),
    ]


# --- paths, keys, anchors -------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path, PREAMBLE + '[[zone]]\nname = "a.test"\nfile = "zones/local.zone"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(path, elsewhere))
    assert config.zones[0].file == tmp_path / "zones" / "local.zone"
    assert config.server.state_dir == tmp_path / "state"
    assert config.source == path


def test_key_file_readable_by_others_is_a_warning(tmp_path: Path) -> None:
    path = write_config(tmp_path, PREAMBLE + '[[zone]]\nname = "a.test"\nprimaries = ["backup"]\n')
    (tmp_path / "xfr.key").chmod(0o644)
    config = load_config(path)
    assert [w for w in config.warnings if "readable by group or others" in w]
    assert config.remotes[0].key is not None


def test_trust_anchor_is_loaded_and_implies_validation(tmp_path: Path) -> None:
    (tmp_path / "example.com.ds").write_text(DS_LINE)
    text = (
        PREAMBLE
        + '[[zone]]\nname = "example.com"\nprimaries = ["provider"]\n'
        + 'trust-anchor = "example.com.ds"\n'
    )
    [zone] = load_config(write_config(tmp_path, text)).zones
    assert zone.trust_anchor == tmp_path / "example.com.ds"
    assert zone.dnssec_validation == "required"
    [anchor] = zone.trust_anchors
    assert anchor.owner == zone.origin and anchor.rdtype == 43


# --- every error path -----------------------------------------------------------------------------

ZONE = '[[zone]]\nname = "a.test"\nprimaries = ["provider"]\n'

ERROR_CASES: list[tuple[str, str, str]] = [
    # (config after PREAMBLE, key path, reason fragment)
    ("[server]\nlisten = []\n" + ZONE, "server.listen", "at least one address"),
    ('[server]\nlisten = ["127.0.0.1", "localhost"]\n' + ZONE, "server.listen[1]", "not an IP"),
    ('[server]\nlisten = ["::1@53", "::1"]\n' + ZONE, "server.listen[1]", "listed twice"),
    ('[server]\nlisten = "127.0.0.1"\n' + ZONE, "server.listen", "expected a list"),
    ("[server]\nlisten = [53]\n" + ZONE, "server.listen[0]", "expected a string"),
    ("[server]\nworkers = -1\n" + ZONE, "server.workers", "out of range"),
    ('[server]\nworkers = "2"\n' + ZONE, "server.workers", "expected an integer"),
    ("[server]\nworkers = true\n" + ZONE, "server.workers", "expected an integer"),
    ("[server]\nudp-payload = 511\n" + ZONE, "server.udp-payload", "out of range 512..4096"),
    ("[server]\nudp-payload = 4097\n" + ZONE, "server.udp-payload", "out of range"),
    ('[server]\nidentity = "' + "x" * 256 + '"\n' + ZONE, "server.identity", "255 bytes"),
    ('[server]\nnsid = "0xzz"\n' + ZONE, "server.nsid", "not valid hex"),
    ('[server]\nmetrics = "localhost@9853"\n' + ZONE, "server.metrics", "not an IP"),
    ('[server]\nstate-dir = ""\n' + ZONE, "server.state-dir", "must not be empty"),
    ('[server]\ntcp-idle-timeout = "soon"\n' + ZONE, "server.tcp-idle-timeout", "bad duration"),
    (
        "[server]\ntcp-max-clients = 10\ntcp-max-clients-per-ip = 11\n" + ZONE,
        "server.tcp-max-clients-per-ip",
        "more than tcp-max-clients",
    ),
    ('[server]\nlog-format = "xml"\n' + ZONE, "server.log-format", "not one of: text, json"),
    ('[server]\nlog-level = "loud"\n' + ZONE, "server.log-level", "not one of"),
    ("[server]\nlisten-on = []\n" + ZONE, "server.listen-on", "did you mean 'listen'"),
    ("[transfer]\nmax-concurrent = 0\n" + ZONE, "transfer.max-concurrent", "out of range"),
    ('[transfer]\ntimeout = "0s"\n' + ZONE, "transfer.timeout", "out of range"),
    ("[validation]\nnice = 20\n" + ZONE, "validation.nice", "out of range 0..19"),
    ("[rrl]\nipv4-prefix = 33\n" + ZONE, "rrl.ipv4-prefix", "out of range 0..32"),
    ('[rrl]\nexempt = ["10.0.0.1/8"]\n' + ZONE, "rrl.exempt[0]", "host bits set"),
    ("[rrl]\nrate = -1\n" + ZONE, "rrl.rate", "out of range"),
    ("[log]\nquery-sample-rate = 2\n" + ZONE, "log.query-sample-rate", "out of range"),
    ('[cookies]\nsecret = "00ff"\n' + ZONE, "cookies.secret", "32 hex digits (16 octets), got 2"),
    ('[cookies]\nsecret = "zz" \n' + ZONE, "cookies.secret", "not hex"),
    (
        '[cookies]\nprevious-secret = "' + "00" * 16 + '"\n' + ZONE,
        "cookies.previous-secret",
        "needs a secret",
    ),
    (
        '[cookies]\nsecret = "' + "00" * 16 + '"\nsecret-file = "s"\n' + ZONE,
        "cookies.secret-file",
        "not both",
    ),
    ('[cookies]\nsecret-file = "missing"\n' + ZONE, "cookies.secret-file", "cannot read"),
    ("[cookies]\nenable = true\n" + ZONE, "cookies.enable", "unknown key"),
    ("[logging]\nlevel = 1\n" + ZONE, "logging", "unknown key"),
    # remotes
    ('[[remote]]\naddresses = ["192.0.2.1"]\n' + ZONE, "remote[2].id", "needs an id"),
    ('[[remote]]\nid = "x"\n' + ZONE, "remote[2].addresses", "at least one address"),
    ('[[remote]]\nid = "x"\naddresses = []\n' + ZONE, "remote[2].addresses", "at least one"),
    (
        '[[remote]]\nid = "x"\naddresses = ["192.0.2.1@99999"]\n' + ZONE,
        "remote[2].addresses[0]",
        "bad port",
    ),
    (
        '[[remote]]\nid = "x"\naddresses = ["192.0.2.1"]\nkey = "nokey"\n' + ZONE,
        "remote[2].key",
        'TSIG key "nokey" is not defined in any [tsig] key-files (defined: other-key, xfr-key)',
    ),
    (
        '[[remote]]\nid = "x"\naddresses = ["2001:db8::1"]\nsource = "192.0.2.9"\n' + ZONE,
        "remote[2].source",
        "other IP family",
    ),
    (
        '[[remote]]\nid = "provider"\naddresses = ["192.0.2.1"]\n' + ZONE,
        "remote[2].id",
        "defined twice",
    ),
    (
        '[[remote]]\nid = "x"\naddresses = ["192.0.2.1"]\nport = 53\n' + ZONE,
        "remote[2].port",
        "unknown key",
    ),
    # templates
    ('[[template]]\nid = "t"\nfile = "x"\n' + ZONE, "template[0].file", "unknown key"),
    ('[[template]]\nprimaries = ["provider"]\n' + ZONE, "template[0].id", "needs an id"),
    (
        '[[template]]\nid = "t"\n[[template]]\nid = "t"\n' + ZONE,
        "template[1].id",
        "defined twice",
    ),
    (
        '[[template]]\nid = "t"\nprimaries = ["nowhere"]\n' + ZONE,
        "template[0].primaries[0]",
        'no [[remote]] with id "nowhere" (defined: backup, provider)',
    ),
    (
        '[[template]]\nid = "t"\non-expire = "panic"\n' + ZONE,
        "template[0].on-expire",
        "not one of: serve-stale, servfail",
    ),
    # zones
    ('[[zone]]\nfile = "zones/local.zone"\n', "zone[0].name", "needs a name"),
    ('[[zone]]\nname = "a..test"\nfile = "x"\n', "zone[0].name", "not a valid domain name"),
    ('[[zone]]\nname = "a.test"\n', "zone[0].file", "needs file (served locally) or primaries"),
    (
        '[[zone]]\nname = "a.test"\nfile = "x"\nprimaries = ["provider"]\n',
        "zone[0].file",
        "either file or primaries, not both",
    ),
    (ZONE + 'template = "nope"\n', "zone[0].template", 'no [[template]] with id "nope"'),
    ('[[zone]]\nname = "a.test"\nprimaries = ["gone"]\n', "zone[0].primaries[0]", "no [[remote]]"),
    ('[[zone]]\nname = "a.test"\nprimaries = []\n', "zone[0].primaries", "at least one remote"),
    (
        '[[zone]]\nname = "a.test"\nprimaries = ["provider", "provider"]\n',
        "zone[0].primaries[1]",
        "listed twice",
    ),
    (
        ZONE + "[[zone]]\nname = 'A.TEST.'\nfile = 'x'\n",
        "zone[1].name",
        "already defined at zone[0]",
    ),
    (ZONE + 'notify-from = ["stranger"]\n', "zone[0].notify-from[0]", "not an address prefix"),
    (ZONE + 'notify-from = ["192.0.2.1/24"]\n', "zone[0].notify-from[0]", "host bits set"),
    (
        ZONE + 'notify-from = [{ from = "192.0.2.0/24", key = "nokey" }]\n',
        "zone[0].notify-from[0].key",
        'TSIG key "nokey" is not defined',
    ),
    (ZONE + 'notify-from = [{ key = "xfr-key" }]\n', "zone[0].notify-from[0].from", "missing"),
    (
        ZONE + 'notify-from = [{ from = "provider", tsig = "x" }]\n',
        "zone[0].notify-from[0].tsig",
        "unknown key",
    ),
    (ZONE + "notify-from = [5]\n", "zone[0].notify-from[0]", "expected a remote id"),
    (
        '[[zone]]\nname = "a.test"\nfile = "x"\nnotify-from = ["provider"]\n',
        "zone[0].notify-from",
        "takes no NOTIFY",
    ),
    (ZONE + 'dnssec-validation = "maybe"\n', "zone[0].dnssec-validation", "not one of"),
    (ZONE + 'zonemd = "yes"\n', "zone[0].zonemd", "not one of: auto, required, off"),
    (ZONE + 'unknown-algorithm = "ignore"\n', "zone[0].unknown-algorithm", "not one of"),
    (ZONE + 'ixfr = "yes"\n', "zone[0].ixfr", "expected true or false"),
    (ZONE + "refresh-min = 1.5\n", "zone[0].refresh-min", "whole seconds"),
    (ZONE + 'retry-max = "0s"\n', "zone[0].retry-max", "out of range"),
    (
        ZONE + 'refresh-min = "2h"\nrefresh-max = "1h"\n',
        "zone[0].refresh-min",
        "refresh-min (7200) is greater than refresh-max (3600)",
    ),
    (ZONE + "max-records = 0\n", "zone[0].max-records", "out of range"),
    (ZONE + "max-rrset-records = 70000\n", "zone[0].max-rrset-records", "out of range"),
    (ZONE + "serial-rollback-after = -1\n", "zone[0].serial-rollback-after", "out of range"),
    (ZONE + 'clock-skew = "1y"\n', "zone[0].clock-skew", "bad duration"),
    (ZONE + "signature-warning-days = 9999\n", "zone[0].signature-warning-days", "out of range"),
    (ZONE + "primary = ['provider']\n", "zone[0].primary", "did you mean 'primaries'"),
    (ZONE + 'trust-anchor = "missing.ds"\n', "zone[0].trust-anchor", "cannot read trust anchor"),
]


LOCAL_ZONE = '[[zone]]\nname = "a.test"\nfile = "zones/local.zone"\n'

# Cases that need the top level to themselves (no PREAMBLE before them).
TOP_LEVEL_CASES: list[tuple[str, str, str]] = [
    ('server = "x"\n' + LOCAL_ZONE, "server", "expected a table"),
    ('remote = "x"\n' + LOCAL_ZONE, "remote", "array of tables"),
    ('[remote]\nid = "x"\n' + LOCAL_ZONE, "remote", "array of tables"),
    ("zone = [1]\n", "zone[0]", "expected a table"),
    ('[tsig]\nkey-files = ["nothere.key"]\n' + LOCAL_ZONE, "tsig.key-files[0]", "cannot read"),
    ('[tsig]\nkey-file = ["x.key"]\n' + LOCAL_ZONE, "tsig.key-file", "did you mean 'key-files'"),
    ('[tsig]\nkey-files = [""]\n' + LOCAL_ZONE, "tsig.key-files[0]", "must not be empty"),
]


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [(PREAMBLE + body, key, reason) for body, key, reason in ERROR_CASES] + TOP_LEVEL_CASES,
)
def test_error_names_file_key_and_reason(tmp_path: Path, body: str, key: str, reason: str) -> None:
    issue = only_error(tmp_path, body)
    assert issue.key == key
    assert reason in issue.reason
    assert str(issue) == f"{tmp_path / 'authd.toml'}: {key}: {issue.reason}"


def test_trust_anchor_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.ds").write_text("example.com. IN A 192.0.2.1\n")
    (tmp_path / "other.ds").write_text(DS_LINE.replace("example.com.", "example.org."))
    (tmp_path / "good.ds").write_text(DS_LINE)
    text = (
        PREAMBLE
        + '[[zone]]\nname = "example.com"\nprimaries = ["provider"]\ntrust-anchor = "bad.ds"\n'
        + '[[zone]]\nname = "example.net"\nprimaries = ["provider"]\ntrust-anchor = "other.ds"\n'
        + '[[template]]\nid = "off"\ndnssec-validation = "off"\ntrust-anchor = "good.ds"\n'
        + '[[zone]]\nname = "example.com.x"\ntemplate = "off"\nprimaries = ["provider"]\n'
    )
    errors = errors_of(tmp_path, text)
    assert [e.key for e in errors] == [
        "zone[0].trust-anchor",
        "zone[1].trust-anchor",
        "template[0].trust-anchor",
    ]
    assert "bad.ds:1: A record in a trust anchor file" in errors[0].reason
    assert "example.org. is not the zone example.net." in errors[1].reason
    assert 'dnssec-validation = "off"' in errors[2].reason


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = (
        PREAMBLE
        + '[server]\nworkers = -1\nlisten = ["nope"]\n'
        + '[[zone]]\nname = "a.test"\nprimaries = ["gone"]\nzonemd = "x"\n'
        + '[[zone]]\nname = "b.test"\n'
        + "[bogus]\n"
    )
    errors = errors_of(tmp_path, text)
    assert sorted(e.key for e in errors) == sorted(
        [
            "server.workers",
            "server.listen[0]",
            "zone[0].primaries[0]",
            "zone[0].zonemd",
            "zone[1].file",
            "bogus",
        ]
    )


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    [issue] = info.value.errors
    assert issue.file == str(missing) and "not found" in issue.reason

    issue = only_error(tmp_path, "[server\nworkers = 1\n")
    assert issue.key == "" and "TOML syntax error" in issue.reason and "line 1" in issue.reason


def test_key_file_syntax_error_names_both_files(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[tsig]\nkey-files = ["broken.key"]\n' + ZONE)
    (tmp_path / "broken.key").write_text('key "k" {\n  algorithm hmac-sha256;\n};\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    messages = [str(e) for e in info.value.errors]
    assert messages[0].startswith(f"{path}: tsig.key-files[0]: {tmp_path / 'broken.key'}:1:")
    assert "has no secret" in messages[0]


def test_a_key_defined_in_two_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "again.key").write_text(generate_tsig_key("xfr-key"))
    (tmp_path / "again.key").chmod(0o600)
    body = '[tsig]\nkey-files = ["xfr.key", "again.key"]\n[[zone]]\nname = "a.test"\nfile = "x"\n'
    issue = only_error(tmp_path, body)
    assert issue.key == "tsig.key-files[1]" and 'key "xfr-key." is also defined in' in issue.reason


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, '[[zone]]\nname = "a.test"\nfile = "x"\n'))
    assert isinstance(config, Config)
    with pytest.raises(AttributeError):
        config.server.workers = 3  # type: ignore[misc]


def test_cookies_section(tmp_path: Path) -> None:
    default = load_config(write_config(tmp_path, PREAMBLE + ZONE))
    assert default.cookies == CookiesConfig(enabled=True, secret=None, previous_secret=None)
    (tmp_path / "cookie.secret").write_text("e5e973e5a6b2a43f48e7dc849e37bfcf\nnext line ignored\n")
    text = (
        PREAMBLE
        + '[cookies]\nsecret-file = "cookie.secret"\n'
        + 'previous-secret = "0x000102030405060708090A0B0C0D0E0F"\n'
        + ZONE
    )
    config = load_config(write_config(tmp_path, text))
    assert config.cookies.secret == bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
    assert config.cookies.previous_secret == bytes(range(16))
    off = load_config(write_config(tmp_path, PREAMBLE + "[cookies]\nenabled = false\n" + ZONE))
    assert not off.cookies.enabled
