"""authd.cli through click's CliRunner: commands, messages, exit codes, log formats."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from authd.cli import (
    EXIT_DAEMON_UNREACHABLE,
    EXIT_USER_ERROR,
    DaemonUnreachable,
    JsonFormatter,
    TextFormatter,
    call_daemon,
    configure_logging,
    explain_os_error,
    format_duration,
    format_verify,
    format_zone_status,
    is_journal_stream,
    main,
    package_version,
    serial_lag,
)
from authd.config import load_config
from authd.keys import parse_key_text

REPO = Path(__file__).resolve().parents[2]
BAD_CONFIG = """
[server]
workers = -1
[[zone]]
name = "a.test"
primaries = ["nowhere"]
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version_flag_and_command() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"authd {package_version()}"
    code, out, _ = run("version")
    assert code == 0 and out.startswith(f"authd {package_version()} (dnspython 2.")


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["check-config"],
        ["keygen"],
        ["keygen", "tsig"],
        ["version"],
        ["zone"],
        ["zone", "status"],
        ["zone", "refresh"],
        ["zone", "retransfer"],
        ["zone", "verify"],
        ["zone", "dump"],
        ["reload"],
        ["bench"],
    ],
)
def test_every_help_shows_an_example(command: list[str]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0
    assert "Example:" in out and "authd " in out.split("Example:")[1]


def test_check_config_accepts_the_shipped_config() -> None:
    code, out, err = run("check-config", "-c", str(REPO / "authd.toml"))
    assert (code, out) == (0, "ok: 1 zone\n")
    assert "error" not in err


def test_check_config_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    code, out, err = run("check-config", "-c", str(path))
    assert code == EXIT_USER_ERROR and out == ""
    lines = err.splitlines()
    assert lines[0] == f"error: {path}: server.workers: -1 is out of range 0..1024"
    assert lines[1].startswith(f"error: {path}: zone[0].primaries[0]: no [[remote]] with id")
    assert lines[2] == f"{path}: 2 errors"


GOOD_ZONE = """$ORIGIN a.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A 127.0.0.1
"""
SECRET = "aTfldB0aBM5ZBCu5tXhlWGgVSZaDAUNvhYo2qaybnCM="


def write_key(path: Path, mode: int = 0o600) -> None:
    path.write_text(f'key "xfr" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n')
    path.chmod(mode)


def test_check_config_prints_warnings_but_passes(tmp_path: Path) -> None:
    write_key(tmp_path / "xfr.key", 0o644)
    (tmp_path / "a.zone").write_text(GOOD_ZONE)
    path = tmp_path / "authd.toml"
    path.write_text('[tsig]\nkey-files = ["xfr.key"]\n[[zone]]\nname = "a.test"\nfile = "a.zone"\n')
    code, out, err = run("check-config", "-c", str(path))
    assert (code, out) == (0, "ok: 1 zone\n")
    assert err.startswith("warning: ") and "readable by group or others" in err


def test_check_config_parses_every_zone_file(tmp_path: Path) -> None:
    """Issue 12: `AAA` on a line gave `ok: 1 zone`, then the zone answered SERVFAIL."""
    (tmp_path / "a.zone").write_text(GOOD_ZONE + "www AAA 192.0.2.1\n")
    (tmp_path / "b.zone").write_text(GOOD_ZONE.replace("a.test.", "b.test."))
    path = tmp_path / "authd.toml"
    path.write_text(
        '[[zone]]\nname = "a.test"\nfile = "a.zone"\n'
        '[[zone]]\nname = "b.test"\nfile = "b.zone"\n'
        '[[zone]]\nname = "c.test"\nfile = "missing.zone"\n'
    )
    code, out, err = run("check-config", "-c", str(path))
    assert (code, out) == (EXIT_USER_ERROR, "")
    assert err.splitlines() == [
        f"error: {tmp_path / 'a.zone'}:6: unknown rdatatype 'AAA'",
        f"error: {tmp_path / 'missing.zone'}: zone file of c.test not found",
        f"{path}: 2 errors",
    ]
    # --no-zone-files checks the config alone (one written for another machine).
    assert run("check-config", "--no-zone-files", "-c", str(path))[:2] == (0, "ok: 3 zones\n")


def test_check_config_shows_warnings_with_errors(tmp_path: Path) -> None:
    write_key(tmp_path / "xfr.key", 0o644)
    path = tmp_path / "authd.toml"
    path.write_text('[tsig]\nkey-files = ["xfr.key"]\n[server]\nworkers = -1\n')
    code, _, err = run("check-config", "-c", str(path))
    lines = err.splitlines()
    assert code == EXIT_USER_ERROR and lines[0].startswith("error: ") and "workers" in lines[0]
    assert lines[1].startswith("warning: ") and "readable by group or others" in lines[1]
    assert lines[2] == f"{path}: 1 error"


@pytest.mark.parametrize(
    ("tsig", "remote", "cause"),
    [
        ("", 'addresses = ["127.0.0.999"]', '"127.0.0.999" is not an IP address'),
        ('key-files = ["missing.key"]', 'addresses = ["127.0.0.1"]\nkey = "xfr"', "missing.key"),
        ('key-files = ["bad.key"]', 'addresses = ["127.0.0.1"]\nkey = "xfr"', "bad.key:1"),
        ("", 'addresses = ["127.0.0.1"]\nkey = "xfr"', 'TSIG key "xfr" is not defined'),
    ],
)
def test_check_config_reports_each_root_cause_once(
    tmp_path: Path, tsig: str, remote: str, cause: str
) -> None:
    """A broken remote or key file is one error, not also `no [[remote]] with id "knot"`."""
    (tmp_path / "bad.key").write_text('key "xfr" { algorithm hmac-sha256; secret "%%%"; };\n')
    path = tmp_path / "authd.toml"
    path.write_text(
        f'[tsig]\n{tsig}\n[[remote]]\nid = "knot"\n{remote}\n'
        '[[zone]]\nname = "a.test"\nprimaries = ["knot"]\n'
        '[[zone]]\nname = "b.test"\nprimaries = ["knot"]\nnotify-from = ["knot"]\n'
    )
    code, _, err = run("check-config", "-c", str(path))
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == EXIT_USER_ERROR and len(errors) == 1, err
    assert cause in errors[0]
    assert err.splitlines()[-1] == f"{path}: 1 error"


def test_config_defaults_to_authd_toml_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run("check-config")
    assert code == EXIT_USER_ERROR
    assert err.startswith("error: authd.toml: config file not found")
    (tmp_path / "authd.toml").write_text('[[zone]]\nname = "a.test"\nfile = "a.zone"\n')
    (tmp_path / "a.zone").write_text(GOOD_ZONE)
    assert run("check-config")[:2] == (0, "ok: 1 zone\n")


def test_serve_with_a_bad_config_exits_1_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    code, _, err = run("serve", "-c", str(path), "--log-format", "json")
    assert code == EXIT_USER_ERROR
    assert f"{path}: server.workers:" in err


def test_usage_errors_exit_2() -> None:
    assert run("serve", "--log-format", "xml")[0] == 2
    assert run("keygen", "tsig", "k", "--algorithm", "hmac-md5")[0] == 2
    assert run("no-such-command")[0] == 2


def test_keygen_prints_a_key_file() -> None:
    code, out, _ = run("keygen", "tsig", "xfr-key", "--algorithm", "hmac-sha512")
    assert code == 0
    [key], warnings = parse_key_text(out)
    assert (key.name, key.algorithm, len(key.secret), warnings) == (
        "xfr-key.",
        "hmac-sha512",
        64,
        [],
    )


def test_keygen_writes_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "xfr.key"
    code, out, err = run("keygen", "tsig", "xfr-key", "-o", str(path))
    assert code == 0 and out == "" and str(path) in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    [key], _ = parse_key_text(first)
    assert key.algorithm == "hmac-sha256"
    code, _, err = run("keygen", "tsig", "xfr-key", "-o", str(path))
    assert code == EXIT_USER_ERROR and "already exists" in err
    assert path.read_text() == first


@pytest.mark.parametrize("name", ["a..b", "bad key name!!", 'a"b', "xfr-", "x\\032y", "."])
def test_keygen_refuses_a_bad_name_in_one_line(name: str) -> None:
    """Names BIND, Knot and NSD configs all spell the same way: host-name labels and '_'."""
    code, out, err = run("keygen", "tsig", name)
    assert (code, out) == (EXIT_USER_ERROR, "")
    assert err.startswith(f"Error: bad key name '{name}'") and err.count("\n") == 1


@pytest.mark.parametrize("name", ["xfr-key", "xfr_key.example.com.", "K1"])
def test_keygen_accepts_host_name_like_key_names(name: str) -> None:
    code, out, _ = run("keygen", "tsig", name)
    [key], _ = parse_key_text(out)
    assert code == 0 and key.name == name.rstrip(".").lower() + "."


def test_a_generated_key_works_in_a_config(tmp_path: Path) -> None:
    assert run("keygen", "tsig", "xfr", "-o", str(tmp_path / "xfr.key"))[0] == 0
    (tmp_path / "authd.toml").write_text(
        '[tsig]\nkey-files = ["xfr.key"]\n'
        '[[remote]]\nid = "p"\naddresses = ["127.0.0.1@5399"]\nkey = "xfr"\n'
        '[[zone]]\nname = "a.test"\nprimaries = ["p"]\n'
    )
    code, out, err = run("check-config", "-c", str(tmp_path / "authd.toml"))
    assert (code, out, err) == (0, "ok: 1 zone\n", "")


def test_unreachable_daemon_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "authd.toml"
    path.write_text(
        '[server]\ncontrol-socket = "nobody.sock"\n[[zone]]\nname = "a.test"\nfile = "a.zone"\n'
    )
    config = load_config(path)
    with pytest.raises(DaemonUnreachable) as info:
        call_daemon(config, "status")
    assert info.value.exit_code == EXIT_DAEMON_UNREACHABLE
    assert "nobody.sock" in str(info.value)


def test_os_errors_are_explained_with_the_fix() -> None:
    in_use = explain_os_error(OSError(errno.EADDRINUSE, "Address already in use"))
    assert "already in use" in in_use and "server.listen" in in_use
    denied = explain_os_error(PermissionError(errno.EACCES, "Permission denied"))
    assert "CAP_NET_BIND_SERVICE" in denied
    state = explain_os_error(PermissionError(errno.EACCES, "Permission denied", "/var/lib/authd"))
    assert "/var/lib/authd" in state and "writable" in state


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "authd.xfr", logging.INFO, __file__, 1, "zone %s", ("updated",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_log_lines_carry_the_extra_fields() -> None:
    line = JsonFormatter().format(_record(zone="example.com", serial=7, primary="192.0.2.1"))
    event = json.loads(line)
    assert "\n" not in line
    assert event["msg"] == "zone updated" and event["level"] == "info"
    assert event["logger"] == "authd.xfr" and event["ts"].endswith("Z")
    assert (event["zone"], event["serial"], event["primary"]) == ("example.com", 7, "192.0.2.1")


def test_text_log_lines_are_one_line_with_key_values() -> None:
    line = TextFormatter().format(_record(zone="example.com", reason="bad tsig"))
    assert line.endswith(' info authd.xfr: zone updated zone=example.com reason="bad tsig"')


NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def test_durations_keep_the_two_largest_units() -> None:
    assert [format_duration(s) for s in (0, 59.6, 61, 3600 * 5 + 7, 86400 * 3 + 3600 * 4 + 5)] == [
        "0s",
        "1m",
        "1m 1s",
        "5h 7s",
        "3d 4h",
    ]
    assert format_duration(-90) == "1m 30s"


def test_serial_lag_uses_serial_number_arithmetic() -> None:
    assert serial_lag(7, 7) == 0
    assert serial_lag(7, 10) == 3
    assert serial_lag(2**32 - 2, 1) == 3  # the primary wrapped around
    assert serial_lag(10, 7) is None  # the primary went backwards
    assert serial_lag(0, 2**31) is None  # undefined in RFC 1982


def test_status_of_a_file_zone_has_no_timer_lines() -> None:
    text = format_zone_status(
        {
            "zone": "example.test",
            "kind": "file",
            "state": "ok",
            "serial": 5,
            "source": "file",
            "transfer": "file",
            "loaded_at": NOW - 300,
            "records": 26,
            "last_error": None,
            "last_rejection": None,
        },
        NOW,
    )
    assert text.splitlines() == [
        "example.test: OK, serial 5 (file zone)",
        "  source        file",
        "  loaded        2027-01-15 07:55:00Z (5m ago)",
        "  records       26",
        "  last error    none",
        "  rejection     none",
    ]


def test_status_of_an_expired_secondary_says_it_serves_stale() -> None:
    text = format_zone_status(
        {
            "zone": "example.com",
            "kind": "secondary",
            "state": "expired",
            "serial": 2024010101,
            "source": "192.0.2.53",
            "transfer": "IXFR",
            "loaded_at": NOW - 15 * 86400,
            "records": 1000,
            "primary_serial": 2024010103,
            "primary": "192.0.2.53@53",
            "notified_serial": None,
            "in_flight": "soa-query",
            "last_attempt": NOW - 60,
            "last_success": NOW - 15 * 86400,
            "next_refresh": NOW + 840,
            "expires_at": NOW - 86400,
            "signature_horizon": NOW + 2 * 86400,
            "last_error": "timeout from 192.0.2.53",
            "last_rejection": "dnssec: RRSIG expired",
        },
        NOW,
    )
    lines = text.splitlines()
    assert lines[0] == "example.com: EXPIRED, serial 2024010101 (secondary zone)"
    assert "  source        192.0.2.53 via IXFR" in lines
    assert (
        "  primary       serial 2024010103 at 192.0.2.53@53 (2 ahead of the served serial)" in lines
    )
    assert "  in progress   soa-query" in lines
    assert not any(line.startswith("  notified") for line in lines)
    assert "  last attempt  2027-01-15 07:59:00Z (1m ago)" in lines
    assert "  next refresh  2027-01-15 08:14:00Z (in 14m)" in lines
    assert (
        "  expires       EXPIRED since 2027-01-14 08:00:00Z (1d ago), serving the stale copy"
        in lines
    )
    assert "  signatures    valid until 2027-01-17 08:00:00Z (in 2d)" in lines
    assert not any(line.startswith("  usable until") for line in lines)
    assert lines[-2:] == [
        "  last error    timeout from 192.0.2.53",
        "  rejection     dnssec: RRSIG expired",
    ]


def test_status_shows_the_validity_horizon() -> None:
    """`valid_until` and `signatures_valid_until` are RFC 3339 strings from the daemon."""
    text = format_zone_status(
        {
            "zone": "example.com",
            "state": "ok",
            "serial": 7,
            "valid_until": "2027-01-16T08:00:00Z",
            "signatures_valid_until": "2027-01-17T08:00:00Z",
            "signature_horizon": NOW + 2 * 86400,
        },
        NOW,
    )
    lines = text.splitlines()
    assert "  usable until  2027-01-16 08:00:00Z (in 1d)" in lines
    assert "  signatures    valid until 2027-01-17 08:00:00Z (in 2d)" in lines


def test_status_says_what_is_held_and_pinned() -> None:
    text = format_zone_status(
        {
            "zone": "example.com",
            "state": "held",
            "serial": 7,
            "held_serial": 9,
            "held_reason": "held by the change guard: rrsets-removed: 90 of 100 RRsets",
            "held_until": NOW + 3600,
            "pinned": 7,
        },
        NOW,
    )
    lines = text.splitlines()
    assert lines[0].startswith("example.com: HELD, serial 7")
    assert (
        "  held          serial 9: held by the change guard: rrsets-removed: 90 of 100 RRsets"
        in lines
    )
    assert any(line.startswith("  published at ") and "(in 1h)" in line for line in lines), lines
    assert "  pinned        to serial 7 (authd zone unpin to follow the primary)" in lines


def test_status_of_a_never_loaded_secondary() -> None:
    text = format_zone_status(
        {
            "zone": "new.example",
            "kind": "secondary",
            "state": "never-loaded",
            "serial": None,
            "primary_serial": None,
            "last_success": None,
            "expires_at": None,
        },
        NOW,
    )
    assert text.splitlines()[:4] == [
        "new.example: NEVER-LOADED, nothing served (secondary zone)",
        "  primary       not seen yet",
        "  last success  never",
        "  expires       -",
    ]


def test_verify_results_read_as_one_line() -> None:
    ok = {
        "ok": True,
        "signed": True,
        "horizon": NOW + 86400 * 10,
        "seconds": 0.4213,
        "serial": 7,
        "warnings": ["NSEC3 iterations 10 > 0 (RFC 9276)"],
    }
    assert format_verify("example.com", ok, NOW).splitlines() == [
        "example.com serial 7: ok (signed, signatures valid until "
        "2027-01-25 08:00:00Z (in 10d), 0.42 s)",
        "  warning: NSEC3 iterations 10 > 0 (RFC 9276)",
    ]
    failed = {
        "ok": False,
        "check": "dnssec",
        "reason": "www.example.com A: RRSIG expired",
        "signed": True,
        "warnings": [],
    }
    assert format_verify("example.com", failed, NOW) == (
        "example.com: FAILED dnssec: www.example.com A: RRSIG expired"
    )


def _error_record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("authd", level, __file__, 1, message, None, None)


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_multi_line_message_is_one_log_line() -> None:
    """Issue 12: a refused SIGHUP reload logged its errors on lines without time or level."""
    message = "reload failed: config not reloaded:\na.toml: x: bad\na.toml: y: worse"
    line = TextFormatter().format(_error_record(message))
    assert "\n" not in line
    assert line.endswith(
        "error authd: reload failed: config not reloaded: a.toml: x: bad; a.toml: y: worse"
    )
    try:
        raise ValueError("boom")
    except ValueError:
        record = _error_record("failed")
        record.exc_info = sys.exc_info()
    line = TextFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in line


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
    ],
)
@pytest.mark.usefixtures("restore_root_logger")
def test_journal_lines_carry_the_syslog_priority(tmp_path: Path, level: int, prefix: str) -> None:
    for log_format in ("text", "json"):
        path = tmp_path / f"{log_format}.log"
        with path.open("w") as stream:
            stat = os.fstat(stream.fileno())
            environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
            configure_logging(log_format, "debug", stream=stream, environ=environ)
            logging.getLogger("authd.test").log(level, "one event")
        line = path.read_text()
        assert line.startswith(prefix) and line.count("\n") == 1
        assert line[len(prefix) :].startswith("{" if log_format == "json" else "20")


@pytest.mark.usefixtures("restore_root_logger")
def test_no_priority_prefix_off_the_journal(tmp_path: Path) -> None:
    """JOURNAL_STREAM inherited by a process whose stderr goes elsewhere (sd-daemon(3))."""
    other = tmp_path / "other"
    other.write_text("")
    stat = os.stat(other)
    with (tmp_path / "log").open("w") as stream:
        assert not is_journal_stream({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, stream)
        assert not is_journal_stream({"JOURNAL_STREAM": "garbage"}, stream)
        assert not is_journal_stream({}, stream)
        configure_logging("text", "info", stream=stream, environ={"JOURNAL_STREAM": "1:2"})
        logging.getLogger("authd.test").error("plain")
    assert (tmp_path / "log").read_text().startswith("20")


def _secondary_status(**fields: object) -> dict[str, object]:
    status: dict[str, object] = {
        "zone": "example.com",
        "kind": "secondary",
        "state": "ok",
        "serial": 7,
        "primary_serial": 7,
        "notified_serial": None,
        "last_error": None,
    }
    status.update(fields)
    return status


def test_status_never_says_a_served_notified_serial_is_not_yet_transferred() -> None:
    served = format_zone_status(_secondary_status(notified_serial=7), NOW)
    assert "  notified      serial 7 (NOTIFY, served)" in served.splitlines()
    pending = format_zone_status(_secondary_status(notified_serial=8), NOW)
    assert "  notified      serial 8 (NOTIFY, not yet transferred)" in pending.splitlines()
    verifying = format_zone_status(
        _secondary_status(notified_serial=8, downloaded_serial=8, in_flight="verify"), NOW
    )
    assert "transferred, being verified and stored" in verifying
    older = format_zone_status(_secondary_status(notified_serial=6), NOW)
    assert "older than the served serial" in older


def test_status_shows_the_last_outcome_word() -> None:
    text = format_zone_status(
        _secondary_status(last_outcome="soa-check-failed", last_error="p0: timeout"), NOW
    )
    lines = text.splitlines()
    assert "  last outcome  soa-check-failed" in lines
    assert "  last error    p0: timeout" in lines


def test_status_shows_the_edns_expire_received() -> None:
    text = format_zone_status(
        _secondary_status(edns_expire=600, edns_expire_received_at=NOW - 30), NOW
    )
    (line,) = [x for x in text.splitlines() if x.startswith("  edns expire")]
    assert line.startswith("  edns expire   600 s left at the primary, said ") and "ago" in line
    assert "edns expire" not in format_zone_status(_secondary_status(edns_expire=None), NOW)
