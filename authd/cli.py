"""The `authd` command line: thin, it parses arguments, calls into the package and prints.

Exit codes: 0 ok, 1 user error (bad config, unknown zone, file exists...), 2 usage error
(click's own), 3 daemon not reachable on the control socket.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
import dns.version

from authd.config import Config, ConfigError, control_socket_of, load_config
from authd.keys import DEFAULT_ALGORITHM, DEPRECATED_ALGORITHMS, TSIG_ALGORITHMS, generate_tsig_key
from authd.wording import plural

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_DAEMON_UNREACHABLE = 3

DEFAULT_CONFIG = "authd.toml"
log = logging.getLogger("authd")


def package_version() -> str:
    try:
        return importlib.metadata.version("authd")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class UserError(click.ClickException):
    """A mistake the user can fix; printed as one line, exit code 1."""

    exit_code = EXIT_USER_ERROR


class DaemonUnreachable(click.ClickException):
    """No daemon answers on the control socket; exit code 3."""

    exit_code = EXIT_DAEMON_UNREACHABLE


def config_option(function: Any) -> Any:
    return click.option(
        "-c",
        "--config",
        "config_path",
        default=DEFAULT_CONFIG,
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Configuration file.",
    )(function)


def load_or_exit(path: Path) -> Config:
    """Load the config; on errors print every one of them (and the warnings) and exit 1."""
    try:
        return load_config(path)
    except ConfigError as exc:
        fail_with([str(error) for error in exc.errors], exc.warnings, path)


def fail_with(errors: list[str], warnings: Iterable[str], path: Path) -> NoReturn:
    """Print errors, then warnings (a warning may explain an error), then the count; exit 1."""
    for error in errors:
        click.echo(f"error: {error}", err=True)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{path}: {plural(len(errors), 'error')}", err=True)
    sys.exit(EXIT_USER_ERROR)


@contextmanager
def daemon_errors() -> Iterator[None]:
    """For control commands: an unreachable daemon exits 3, a refused request exits 1."""
    from authd import control

    try:
        yield
    except control.ControlUnreachable as exc:
        raise DaemonUnreachable(str(exc)) from exc
    except control.ControlError as exc:
        raise UserError(str(exc)) from exc


def call_daemon(config: Config, command: str, **args: Any) -> Any:
    """Send one control command to the running daemon named by `config`'s control-socket."""
    return call_daemon_within(config, command, 30.0, args)


def call_daemon_within(config: Config, command: str, timeout: float, args: dict[str, Any]) -> Any:
    """call_daemon for commands that may take longer than the default 30 s to answer."""
    from authd import control

    socket_path = config.server.control_socket
    if socket_path is None:
        raise UserError(f'{config.source}: server.control-socket is "" (control is turned off)')
    try:
        with daemon_errors():
            return control.call(socket_path, command, timeout=timeout, **args)
    except DaemonUnreachable as exc:
        hint = f"start it with: authd serve -c {config.source}"
        raise DaemonUnreachable(f"{exc.message} ({hint})") from exc.__cause__


# --- logging --------------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else was passed with extra={...} and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


def _timestamp(record: logging.LogRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def one_line(text: str) -> str:
    """A multi-line message (a list of config errors, a traceback) as one log line: a line
    break becomes "; " (none after a colon), so a reader and journald see one event."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    out = lines[0] if lines else ""
    for line in lines[1:]:
        out += (" " if out.endswith(":") else "; ") + line
    return out


class TextFormatter(logging.Formatter):
    """`2026-01-02T03:04:05.678Z info authd.xfr: zone updated zone=example.com serial=7`"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname.lower(), f"{record.name}:"]
        parts.append(one_line(record.getMessage()))
        parts.extend(f"{key}={_text_value(value)}" for key, value in _fields(record).items())
        if record.exc_info:
            parts.append("exc=" + json.dumps(self.formatException(record.exc_info)))
        return " ".join(parts)


def _text_value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c == '"' for c in text)) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(_fields(record))
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str, ensure_ascii=False)


# sd-daemon(3): a line written to a journal stream may start with "<N>", N the syslog
# priority; journald strips it and files the line under that priority (journalctl -p err).
SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (custom levels take the next standard one up)."""
    for level in sorted(SYSLOG_PRIORITY):
        if levelno <= level:
            return SYSLOG_PRIORITY[level]
    return SYSLOG_PRIORITY[logging.CRITICAL]


class JournalPrefix(logging.Formatter):
    """Wraps a formatter: every line gets its `<N>` priority prefix."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{self.inner.format(record)}"


def is_journal_stream(environ: Mapping[str, str], stream: Any) -> bool:
    """True when `stream` is the journal connection systemd set up (sd-daemon(3)): the
    device and inode in JOURNAL_STREAM are those of the stream's file descriptor. A child
    whose stderr was redirected elsewhere inherits the variable but fails the check."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def configure_logging(
    log_format: str,
    level: str,
    stream: Any = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Every event to stderr, one line each, with time and level; under systemd each line
    also carries its syslog priority (journald and docker logs take it from there)."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    if is_journal_stream(os.environ if environ is None else environ, stream):
        formatter = JournalPrefix(formatter)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python warnings (a library's deprecation notice, say) become log lines too, with
    # time and level, instead of raw multi-line text on stderr.
    logging.captureWarnings(True)
    # dnspython names cryptography's DSA classes at import; DSA (algorithms 3 and 6) is
    # deprecated for DNSSEC (RFC 8624), and the notice says nothing an operator can act on.
    warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"dns\.dnssecalgs")


# --- commands -------------------------------------------------------------------------------------


class _Group(click.Group):
    """Lists commands in the order they were added, which is the order they matter in.

    Commands registered with `lazy` are imported only when used, so `authd zone status`
    does not pay for importing the benchmark harness.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Callable[[], click.Command]] = {}

    def add_lazy(self, name: str, load: Callable[[], click.Command]) -> None:
        self.lazy[name] = load

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands) + [name for name in self.lazy if name not in self.commands]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.lazy[cmd_name](), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_version(), "--version", prog_name="authd", message="%(prog)s %(version)s"
)
def main() -> None:
    """authd: a secondary authoritative DNS server.

    Pulls zones from primaries (AXFR/IXFR with TSIG), verifies every new version and keeps
    serving the last good copy.

    \b
    Example:
      authd check-config -c authd.toml && authd serve -c authd.toml

    \b
    Exit codes: 0 ok, 1 user error, 2 usage error, 3 daemon not reachable.
    """


@main.command()
@config_option
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log line format (default: server.log-format from the config).",
)
def serve(config_path: Path, log_format: str | None) -> None:
    """Run the server in the foreground, logging to stderr.

    Stops on SIGTERM or SIGINT; SIGHUP reloads the config.

    \b
    Example:
      authd serve -c /etc/authd/authd.toml --log-format json
    """
    config = load_or_exit(config_path)
    configure_logging(log_format or config.server.log_format, config.server.log_level)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    try:
        app = importlib.import_module("authd.app")  # imported late: the server is heavy
    except ModuleNotFoundError as exc:
        if exc.name != "authd.app":
            raise
        raise UserError("this build of authd has no server (authd.app is missing)") from exc
    try:
        result = app.run(config)
    except OSError as exc:
        raise UserError(explain_os_error(exc)) from exc
    sys.exit(result if isinstance(result, int) else EXIT_OK)


def explain_os_error(exc: OSError) -> str:
    """One line that says what went wrong at start-up and how to fix it."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"address already in use{where}: another server listens there; stop it or change "
            "server.listen"
        )
    if exc.errno == errno.EACCES and not exc.filename:  # bind() errors carry no file name
        return (
            f"permission denied{where}: ports below 1024 need root or CAP_NET_BIND_SERVICE "
            "(e.g. AmbientCapabilities=CAP_NET_BIND_SERVICE in systemd), or use a port >= 1024"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}: make it writable by the user authd runs as"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address not available{where}: no interface has it; fix server.listen"
    return str(exc)


@main.command("check-config")
@config_option
@click.option(
    "--no-zone-files",
    is_flag=True,
    help="Check the config alone, without reading the zone files it names "
    "(for a config written for another machine).",
)
def check_config(config_path: Path, no_zone_files: bool) -> None:
    """Check a config file and every zone file it names: exit 0, or print every error and exit 1.

    Each config error names the file, the key and the reason; each zone file error names the
    file and the line (`FILE:LINE: reason`). A missing zone file is an error. Warnings are
    printed too but do not fail the check.

    \b
    Example:
      authd check-config -c authd.toml
    """
    config = load_or_exit(config_path)
    errors = [] if no_zone_files else zone_file_errors(config)
    if errors:
        fail_with(errors, config.warnings, config_path)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"ok: {plural(len(config.zones), 'zone')}")


def zone_file_errors(config: Config) -> list[str]:
    """Read every zone file as `authd serve` would; one error per file that cannot be served."""
    from authd.zone.loader import ZoneLoadError, load_zone_file

    errors: list[str] = []
    for zone in config.zones:
        if zone.file is None:
            continue
        if not zone.file.is_file():
            errors.append(f"{zone.file}: zone file of {zone.name} not found")
            continue
        try:
            load_zone_file(zone.file, zone.name)
        except ZoneLoadError as exc:
            errors.append(str(exc))
        except OSError as exc:
            errors.append(f"{zone.file}: cannot read: {exc.strerror}")
    return errors


@main.group(cls=_Group)
def keygen() -> None:
    """Generate keys.

    \b
    Example:
      authd keygen tsig xfr-key -o keys/xfr-key.key
    """


_KEYGEN_ALGORITHMS = sorted(set(TSIG_ALGORITHMS) - DEPRECATED_ALGORITHMS)


@keygen.command("tsig")
@click.argument("name")
@click.option(
    "-a",
    "--algorithm",
    type=click.Choice(_KEYGEN_ALGORITHMS, case_sensitive=False),
    default=DEFAULT_ALGORITHM,
    show_default=True,
    help="HMAC algorithm.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the key file here (mode 0600, never overwritten) instead of printing it.",
)
def keygen_tsig(name: str, algorithm: str, output: Path | None) -> None:
    """Make a TSIG key file in BIND syntax (what tsig-keygen writes) with a random secret.

    \b
    Example:
      authd keygen tsig xfr-key --algorithm hmac-sha512 -o keys/xfr-key.key
    """
    try:
        text = generate_tsig_key(name, algorithm)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if output is None:
        click.echo(text, nl=False)
        return
    write_private_file(output, text)
    click.echo(f"wrote {output} (mode 0600)", err=True)


def write_private_file(path: Path, text: str) -> None:
    """Create `path` readable by its owner only; refuse to replace an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UserError(f"{path} already exists; remove it or choose another -o") from exc
    except OSError as exc:
        raise UserError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # the umask may have taken bits away, never added
        handle.write(text)


@main.command()
def version() -> None:
    """Print the versions of authd, dnspython and Python.

    \b
    Example:
      authd version
    """
    click.echo(
        f"authd {package_version()} (dnspython {dns.version.version}, "
        f"Python {platform.python_version()})"
    )


# --- control commands -----------------------------------------------------------------------------


@main.group(cls=_Group)
def zone() -> None:
    """Ask the running daemon about its zones, or make it act on one.

    The daemon is found through server.control-socket in the config (-c).

    \b
    Example:
      authd zone status -c /etc/authd/authd.toml
    """


def zone_argument(function: Any) -> Any:
    return click.argument("zone_name", metavar="ZONE")(function)


@zone.command("status")
@click.argument("zone_name", metavar="[ZONE]", required=False)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's raw status list.")
def zone_status(zone_name: str | None, config_path: Path, as_json: bool) -> None:
    """Show each zone's serial, primary, refresh timers, expiry and last errors.

    \b
    Example:
      authd zone status example.com -c authd.toml
      authd zone status --json | jq '.[] | select(.state != "ok")'
    """
    config = load_or_exit(config_path)
    args = {"zone": zone_name} if zone_name else {}
    zones = call_daemon(config, "status", **args)
    if as_json:
        click.echo(json.dumps(zones, indent=2))
        return
    if not zones:
        click.echo("no zones configured")
        return
    click.echo("\n\n".join(format_zone_status(z, time.time()) for z in zones))


def wait_options(function: Any) -> Any:
    function = click.option(
        "--timeout",
        metavar="SECONDS",
        type=click.FloatRange(min=0.1),
        default=60.0,
        show_default=True,
        help="With --wait: give up after this many seconds (exit 1).",
    )(function)
    return click.option(
        "--wait",
        is_flag=True,
        help="Wait for the outcome: exit 0 only when the zone serves the primary's serial, "
        "1 with the zone's last error otherwise.",
    )(function)


@zone.command("refresh")
@zone_argument
@config_option
@wait_options
def zone_refresh(zone_name: str, config_path: Path, wait: bool, timeout: float) -> None:
    """Check the primary's SOA serial now and transfer if it is newer (a file zone: re-read it).

    \b
    Example:
      authd zone refresh example.com -c authd.toml
      authd zone refresh example.com --wait --timeout 30 && echo up to date
    """
    run_zone_command(load_or_exit(config_path), "refresh", zone_name, wait, timeout)


@zone.command("retransfer")
@zone_argument
@config_option
@wait_options
def zone_retransfer(zone_name: str, config_path: Path, wait: bool, timeout: float) -> None:
    """Transfer the whole zone (AXFR) now, whatever the serials say.

    The new copy is verified like any other; the served version changes only if it passes.

    \b
    Example:
      authd zone retransfer example.com -c authd.toml
      authd zone retransfer example.com --wait
    """
    run_zone_command(load_or_exit(config_path), "retransfer", zone_name, wait, timeout)


POLL_INTERVAL = 0.2  # seconds between status requests while waiting


def run_zone_command(
    config: Config,
    command: str,
    zone_name: str,
    wait: bool,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Send refresh/retransfer; with wait, poll the zone's status until the attempt it
    started has ended (waiting.py says when and how), or until timeout."""
    from authd import waiting

    before = _zone_status(config, zone_name) if wait else {}
    click.echo(format_result(call_daemon(config, command, zone=zone_name)))
    if not wait:
        return
    deadline = clock() + timeout
    while True:
        status = _zone_status(config, zone_name)
        result = waiting.outcome(zone_name, before, status)
        if result is None and clock() >= deadline:
            result = waiting.timed_out(zone_name, timeout, status)
        if result is not None:
            if not result.ok:
                raise UserError(result.message)
            click.echo(result.message)
            return
        sleep(min(POLL_INTERVAL, max(0.0, deadline - clock())))


def _zone_status(config: Config, zone_name: str) -> Mapping[str, Any]:
    reply = call_daemon(config, "status", zone=zone_name)
    if not (isinstance(reply, list) and reply and isinstance(reply[0], Mapping)):
        raise UserError(f"the daemon sent no status for {zone_name} (got {reply!r})")
    return reply[0]


@zone.command("verify")
@zone_argument
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's raw result.")
def zone_verify(zone_name: str, config_path: Path, as_json: bool) -> None:
    """Run every check (structure, DNSSEC, ZONEMD) on the served version again.

    Exits 0 when it passes, 1 when a check fails.

    \b
    Example:
      authd zone verify example.com -c authd.toml
    """
    config = load_or_exit(config_path)
    result = call_daemon(config, "verify", zone=zone_name)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_verify(zone_name, result, time.time()))
    if not (isinstance(result, Mapping) and result.get("ok")):
        sys.exit(EXIT_USER_ERROR)


ASSURE_TIMEOUT = 120.0  # seconds: the drill verifies the whole zone, then asks (bounded)


@zone.command("report")
@zone_argument
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's raw report.")
def zone_report(zone_name: str, config_path: Path, as_json: bool) -> None:
    """Would the domain survive the provider's loss? The provider-independence report.

    The daemon groups the zone's NS set by operator (registered domain, /24 or /48 prefix,
    [[operator]] labels), checks in which zone each of authd's own NS names lives and who
    serves that zone (through server.resolver), asks each peer for its SOA and a sample of
    RRsets (drift), asks the parent servers for the NS set and DS, and prints one verdict
    line per finding, the overall one first. Exits 0 when independent, 1 otherwise.

    \b
    Example:
      authd zone report example.com -c authd.toml
      authd zone report example.com --json | jq -r '.verdicts[]'
    """
    config = load_or_exit(config_path)
    result = call_daemon_within(config, "report", ASSURE_TIMEOUT, {"zone": zone_name})
    if not isinstance(result, Mapping):
        raise UserError(f"the daemon sent no report for {zone_name} (got {result!r})")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        from authd.assure.text import format_report

        click.echo(format_report(result))
    if result.get("independent") != "yes":
        sys.exit(EXIT_USER_ERROR)


@zone.command("drill")
@zone_argument
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's raw result.")
def zone_drill(zone_name: str, config_path: Path, as_json: bool) -> None:
    """A provider-loss drill: would authd's copy alone carry the domain, and until when?

    The served version is verified whole against the parent's DS (parent servers) or the
    trust-anchor, as if no primary existed; authd's own listening addresses are asked over
    UDP and TCP for SOA, NS, DNSKEY and a sample of names (AA set, the served data, RRSIGs
    valid now). Every check is listed with ok/FAIL. Exits 0 when all pass, 1 otherwise.

    \b
    Example:
      authd zone drill example.com -c authd.toml || alert "extra NS set would fail"
    """
    config = load_or_exit(config_path)
    result = call_daemon_within(config, "drill", ASSURE_TIMEOUT, {"zone": zone_name})
    if not isinstance(result, Mapping):
        raise UserError(f"the daemon sent no drill result for {zone_name} (got {result!r})")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        from authd.assure.text import format_drill

        click.echo(format_drill(result))
    if not result.get("ok"):
        sys.exit(EXIT_USER_ERROR)


@zone.command("dump")
@zone_argument
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the master file here (replaced atomically) instead of printing it.",
)
def zone_dump(zone_name: str, config_path: Path, output: Path | None) -> None:
    """Print the served version of a zone as a master file (AXFR order).

    \b
    Example:
      authd zone dump example.com -o example.com.zone
      named-checkzone example.com example.com.zone
    """
    config = load_or_exit(config_path)
    text = call_daemon(config, "dump", zone=zone_name)
    if not isinstance(text, str):
        raise UserError(f"the daemon sent no master file for {zone_name} (got {type(text)})")
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    write_replacing(output, text)
    click.echo(f"wrote {output}", err=True)


# --- version history, ledger, export, promote (issue 14) ------------------------------------------


def _reply(result: object, what: str, zone_name: str) -> Mapping[str, Any]:
    if not isinstance(result, Mapping):
        raise UserError(f"the daemon sent no {what} for {zone_name} (got {result!r})")
    return result


@zone.command("history")
@zone_argument
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's raw answer.")
def zone_history(zone_name: str, config_path: Path, as_json: bool) -> None:
    """List the last published versions: serial, time, source, records, SHA-384 digest.

    The digest is the one ZONEMD (RFC 8976, SIMPLE, SHA-384) computes over the whole
    version. [[zone]]/[[template]] history-versions says how many are kept (20).

    \b
    Example:
      authd zone history example.com -c authd.toml
      authd zone history example.com --json | jq -r '.versions[-1].digest'
    """
    from authd.zone.history import VersionRecord, format_history

    config = load_or_exit(config_path)
    result = _reply(call_daemon(config, "history", zone=zone_name), "history", zone_name)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    records = [VersionRecord(**r) for r in result.get("versions", [])]
    click.echo(format_history(str(result.get("zone")), records, result.get("served")))


@zone.command("diff")
@zone_argument
@click.argument("serial_a", metavar="SERIAL_A")
@click.argument("serial_b", metavar="[SERIAL_B]", required=False)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's raw answer.")
def zone_diff(
    zone_name: str, serial_a: str, serial_b: str | None, config_path: Path, as_json: bool
) -> None:
    """Records removed (-) and added (+) from version SERIAL_A to SERIAL_B, as master-file
    lines. SERIAL_B defaults to the served version; both must be in `zone history`.

    \b
    Example:
      authd zone diff example.com 2026120701
      authd zone diff example.com 2026120701 2026120705 | grep '^-'
    """
    config = load_or_exit(config_path)
    args: dict[str, Any] = {"zone": zone_name, "from": serial_a}
    if serial_b is not None:
        args["to"] = serial_b
    result = _reply(call_daemon(config, "diff", **args), "diff", zone_name)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    lines = [f"--- {result.get('zone')} serial {result.get('from')}"]
    lines.append(f"+++ {result.get('zone')} serial {result.get('to')}")
    lines += [f"-{line}" for line in result.get("removed", [])]
    lines += [f"+{line}" for line in result.get("added", [])]
    click.echo("\n".join(lines))


@zone.command("ledger")
@zone_argument
@config_option
@click.option(
    "--verify", is_flag=True, help="Check the hash chain; exit 1 naming the first bad entry."
)
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's raw answer.")
def zone_ledger(zone_name: str, config_path: Path, verify: bool, as_json: bool) -> None:
    """Print the zone's ledger: every version published, held, approved, rejected, rolled
    back, and each pin and unpin, hash-chained, kept in the state-dir as <zone>.ledger.

    \b
    Example:
      authd zone ledger example.com
      authd zone ledger example.com --verify || alert "ledger changed"
    """
    config = load_or_exit(config_path)
    result = _reply(
        call_daemon(config, "ledger", zone=zone_name, verify=verify), "ledger", zone_name
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for entry in result.get("entries", []):
            click.echo(format_ledger_entry(entry))
        if verify:
            if result.get("ok"):
                click.echo(
                    f"ledger of {zone_name}: chain verified, {result.get('checked')} entries"
                )
            else:
                click.echo(f"ledger of {zone_name}: BROKEN: {result.get('problem')}")
    if verify and not result.get("ok"):
        sys.exit(EXIT_USER_ERROR)


def format_ledger_entry(entry: Mapping[str, Any]) -> str:
    when = datetime.datetime.fromtimestamp(float(entry.get("time", 0)), datetime.UTC)
    serial = entry.get("serial")
    parts = [
        f"{entry.get('seq'):>6}",
        f"{when:%Y-%m-%dT%H:%M:%SZ}",
        f"{entry.get('event')}",
        f"serial {serial}" if serial is not None else "-",
    ]
    if entry.get("source"):
        parts.append(str(entry["source"]))
    if entry.get("digest"):
        parts.append(f"sha384 {str(entry['digest'])[:16]}...")
    if entry.get("reason"):
        parts.append(str(entry["reason"]))
    return "  ".join(parts)


def dir_option(help_text: str) -> Callable[[Any], Any]:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


@zone.command("export")
@zone_argument
@config_option
@dir_option("Write into this directory (default: [export] dir).")
def zone_export(zone_name: str, config_path: Path, directory: Path | None) -> None:
    """Write the served version as DIR/ZONE.zone with its digest (header comment and
    DIR/ZONE.zone.sha384), atomically.

    \b
    Example:
      authd zone export example.com --dir /var/backups/zones
    """
    config = load_or_exit(config_path)
    args: dict[str, Any] = {"zone": zone_name}
    if directory is not None:
        args["dir"] = str(directory.absolute())
    result = _reply(call_daemon(config, "export", **args), "export", zone_name)
    click.echo(
        f"zone {result.get('zone')}: serial {result.get('serial')} written to "
        f"{result.get('path')} ({result.get('records')} records)\n"
        f"sha384 {result.get('digest')} ({result.get('digest_path')})"
    )


@zone.command("promote")
@zone_argument
@config_option
@dir_option("Write the zone file here (default: STATE-DIR/promoted).")
def zone_promote(zone_name: str, config_path: Path, directory: Path | None) -> None:
    """Turn a secondary zone into a file zone from its last good version (the provider
    is gone): writes the zone file and prints the config change to make, then `authd
    reload`. The serial stays the same: no gap for clients.

    \b
    Example:
      authd zone promote example.com -c authd.toml
    """
    config = load_or_exit(config_path)
    args: dict[str, Any] = {"zone": zone_name}
    if directory is not None:
        args["dir"] = str(directory.absolute())
    result = _reply(call_daemon(config, "promote", **args), "promote", zone_name)
    click.echo(
        f"zone {result.get('zone')}: serial {result.get('serial')} written to "
        f"{result.get('path')}\nsha384 {result.get('digest')}\n\n{result.get('config_change')}"
    )


# --- change guard and rollback (issue 14) -----------------------------------------------------


@zone.command("approve")
@zone_argument
@click.argument("serial", metavar="[SERIAL]", required=False)
@config_option
def zone_approve(zone_name: str, serial: str | None, config_path: Path) -> None:
    """Publish the version the change guard (or a pin) holds; answers once every worker
    serves it. SERIAL, when given, must be the held one. The approval is remembered for
    that version's digest: it is not held again (for example after an unpin).

    On a catalog zone it first applies a catalog update held for removing more than
    catalog-max-removed-share of the members (status: catalog_held).

    \b
    Example:
      authd zone status example.com    # state = held, held_serial, held_reason
      authd zone diff example.com 2026120705 2026120706   # what the held version changes
      authd zone approve example.com 2026120706
    """
    config = load_or_exit(config_path)
    args: dict[str, Any] = {"zone": zone_name}
    if serial is not None:
        args["serial"] = serial
    click.echo(call_daemon_within(config, "approve", 150.0, args))


@zone.command("reject")
@zone_argument
@click.argument("serial", metavar="SERIAL")
@config_option
def zone_reject(zone_name: str, serial: str, config_path: Path) -> None:
    """Drop the held version SERIAL and refuse that serial from now on (a newer serial
    from the primary is compared with the served version, as always).

    \b
    Example:
      authd zone reject example.com 2026120706
    """
    config = load_or_exit(config_path)
    click.echo(call_daemon(config, "reject", zone=zone_name, serial=serial))


@zone.command("rollback")
@zone_argument
@click.option("--to", "serial", required=True, metavar="SERIAL", help="A serial in `zone history`.")
@config_option
def zone_rollback(zone_name: str, serial: str, config_path: Path) -> None:
    """Serve an older version from the history (durable, every worker) and PIN the zone
    to it: refreshes go on, newer versions are held, until `authd zone unpin`. A signed
    version whose signatures have expired is refused; the answer says until when the
    rolled-back copy validates.

    \b
    Example:
      authd zone history example.com
      authd zone rollback example.com --to 2026120705
    """
    config = load_or_exit(config_path)
    click.echo(call_daemon_within(config, "rollback", 150.0, {"zone": zone_name, "to": serial}))


@zone.command("unpin")
@zone_argument
@config_option
def zone_unpin(zone_name: str, config_path: Path) -> None:
    """Follow the primary again after a rollback: a refresh starts at once, and the
    primary's version goes through the change guard like any other.

    \b
    Example:
      authd zone unpin example.com
    """
    config = load_or_exit(config_path)
    click.echo(call_daemon(config, "unpin", zone=zone_name))


def write_replacing(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a zone."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror}") from exc


@main.command()
@config_option
def reload(config_path: Path) -> None:
    """Make the daemon re-read its config: zones added, removed or changed; queries go on.

    The same as sending SIGHUP to `authd serve`. A config with errors is refused whole
    and the daemon keeps its running config (exit 1, the errors are printed).

    \b
    Example:
      authd check-config -c authd.toml && authd reload -c authd.toml
    """
    from authd import control

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        # Still ask the daemon: it reads the same file, refuses it, keeps its running config
        # and logs why, so the daemon's log tells the story too. The errors are printed
        # here either way.
        socket_path = control_socket_of(config_path)
        if socket_path is not None:
            with contextlib.suppress(control.ControlUnreachable, control.ControlError):
                click.echo(format_result(control.call(socket_path, "reload")))
                sys.exit(EXIT_OK)  # fixed between our read and the daemon's
        fail_with([str(error) for error in exc.errors], exc.warnings, config_path)
    click.echo(format_result(call_daemon(config, "reload")))


def _load_bench() -> click.Command:
    from authd.bench.cli import bench

    return click.Group(
        name="bench",
        commands=bench.commands,
        callback=bench.callback,
        help=(
            "Load-test authd and its peers (knotd, nsd), or a running server, with query mixes."
            "\n\nSee authd/bench/README.md for the mixes and how to read the report."
            "\n\n\b\nExample:\n  authd bench run --quick\n"
            "  authd bench run --target 127.0.0.1@5300 \\\n"
            "      --zone zones/example.test.zone --origin example.test"
        ),
        context_settings={"help_option_names": ["-h", "--help"]},
    )


main.add_lazy("bench", _load_bench)


# --- rendering of daemon replies (pure: values in, text out) -------------------------------------


def format_result(result: object) -> str:
    """A control reply for people: text as it is, anything else as indented JSON."""
    return result if isinstance(result, str) else json.dumps(result, indent=2)


def format_duration(seconds: float) -> str:
    """`3d 4h`, `12m 5s`, `40s`: the two largest units, enough to act on."""
    seconds = abs(round(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count or (unit == "s" and not parts):
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2])


def parse_rfc3339(value: object) -> object:
    """`2026-01-02T03:04:05Z` as epoch seconds; anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return value


def format_time(value: object, now: float) -> str:
    """An epoch time as UTC with how far away it is: `2026-01-02 03:04:05Z (in 5m)`."""
    if value is None:
        return "never"
    if not isinstance(value, int | float):
        return str(value)
    when = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    delta = value - now
    if abs(delta) < 1:
        relative = "now"
    elif delta > 0:
        relative = f"in {format_duration(delta)}"
    else:
        relative = f"{format_duration(delta)} ago"
    return f"{when:%Y-%m-%d %H:%M:%S}Z ({relative})"


def serial_lag(served: int, primary: int) -> int | None:
    """How many serials the primary is ahead (RFC 1982); None if ours is ahead or undefined."""
    difference = (primary - served) % 2**32
    return difference if difference < 2**31 else None


def _expiry_line(status: Mapping[str, Any], now: float) -> str:
    expires_at = status["expires_at"]
    if not isinstance(expires_at, int | float):
        return "-" if expires_at is None else str(expires_at)
    if expires_at > now:
        return format_time(expires_at, now)
    behaviour = "serving the stale copy" if status.get("serial") is not None else "not serving"
    return f"EXPIRED since {format_time(expires_at, now)}, {behaviour}"


def _primary_line(status: Mapping[str, Any]) -> str:
    primary, served = status["primary_serial"], status.get("serial")
    if primary is None:
        return "not seen yet"
    text = f"serial {primary}"
    if status.get("primary"):
        text += f" at {status['primary']}"
    if isinstance(primary, int) and isinstance(served, int):
        lag = serial_lag(served, primary)
        if lag == 0:
            text += " (same as served)"
        elif lag is None:
            text += " (older than the served serial: was the zone rolled back at the primary?)"
        else:
            text += f" ({lag} ahead of the served serial)"
    return text


def _notified_line(status: Mapping[str, Any]) -> str:
    """The NOTIFY'd serial, and whether it is still to come (never "not yet" once served)."""
    notified, served = status["notified_serial"], status.get("serial")
    text = f"serial {notified} (NOTIFY"
    if isinstance(notified, int) and isinstance(served, int):
        lag = serial_lag(served, notified)
        if lag == 0:
            return text + ", served)"
        if lag is None:
            return text + ", older than the served serial)"
        downloaded = status.get("downloaded_serial")
        if isinstance(downloaded, int) and serial_lag(downloaded, notified) == 0:
            return text + ", transferred, being verified and stored)"
    return text + ", not yet transferred)"


def format_zone_status(status: Mapping[str, Any], now: float) -> str:
    """One paragraph per zone; lines for fields the daemon does not report are left out."""
    serial = status.get("serial")
    head = f"{status.get('zone', '?')}: {str(status.get('state', '?')).upper()}"
    head += f", serial {serial}" if serial is not None else ", nothing served"
    head += f" ({status['kind']} zone)" if status.get("kind") else ""
    lines = [head]

    def line(label: str, value: object) -> None:
        lines.append(f"  {label:<13} {value}")

    if "source" in status:
        transfer = status.get("transfer")
        via = f" via {transfer}" if transfer and transfer != status["source"] else ""
        line("source", f"{status['source'] or '-'}{via}")
    if "loaded_at" in status:
        line("loaded", format_time(status["loaded_at"], now))
    if status.get("records") is not None:
        line("records", status["records"])
    if "primary_serial" in status:
        line("primary", _primary_line(status))
    if status.get("notified_serial") is not None:
        line("notified", _notified_line(status))
    if status.get("in_flight") not in (None, "none"):
        line("in progress", status["in_flight"])
    for key, label in (
        ("last_attempt", "last attempt"),
        ("last_success", "last success"),
        ("next_refresh", "next refresh"),
    ):
        if key in status:
            line(label, format_time(status[key], now))
    if "expires_at" in status:
        line("expires", _expiry_line(status, now))
    if status.get("edns_expire") is not None:  # RFC 7314: the primary's copy has this left
        received = format_time(status.get("edns_expire_received_at"), now)
        line("edns expire", f"{status['edns_expire']} s left at the primary, said {received}")
    if status.get("valid_until") is not None:
        line("usable until", format_time(parse_rfc3339(status["valid_until"]), now))
    horizon = status.get("signatures_valid_until")
    if horizon is None:
        horizon = status.get("signature_horizon", status.get("horizon"))
    if horizon is not None:
        line("signatures", f"valid until {format_time(parse_rfc3339(horizon), now)}")
    if status.get("last_outcome") not in (None, "none"):
        line("last outcome", status["last_outcome"])
    line("last error", status.get("last_error") or "none")
    line("rejection", status.get("last_rejection") or "none")
    if status.get("held_serial") is not None:  # issue 14: the change guard
        line("held", f"serial {status['held_serial']}: {status.get('held_reason') or '-'}")
        if status.get("held_until") is not None:
            line("published at", format_time(status["held_until"], now))
    if status.get("pinned") is not None:
        line("pinned", f"to serial {status['pinned']} (authd zone unpin to follow the primary)")
    for peer in (status.get("drift") or {}).get("peers") or ():  # issue 13: periodic checks
        kinds = ", ".join(f["kind"] for f in peer["findings"]) or "agrees"
        line("peer", f"{peer['peer']}: serial {peer['serial']}, {kinds}")
    findings = (status.get("delegation") or {}).get("findings")
    if findings is not None:
        line("delegation", ", ".join(f["kind"] for f in findings) or "ok")
    if status.get("catalog"):  # a catalog member
        group = status.get("group")
        line("catalog", f"{status['catalog']}" + (f" (group {group})" if group else ""))
    if "catalog_members" in status:  # a catalog zone
        line("members", str(status["catalog_members"]))
        for key, label in (("catalog_broken", "catalog broken"), ("catalog_held", "held")):
            if status.get(key):
                line(label, str(status[key]))
    return "\n".join(lines)


def format_verify(zone_name: str, result: object, now: float) -> str:
    """`example.com serial 7: ok (signed, signatures valid until ..., 0.42 s)` or the failure."""
    if not isinstance(result, Mapping):
        return format_result(result)
    name = result.get("zone", zone_name)
    serial = f" serial {result['serial']}" if result.get("serial") is not None else ""
    facts = ["signed" if result.get("signed") else "unsigned"]
    if result.get("horizon") is not None:
        facts.append(f"signatures valid until {format_time(result['horizon'], now)}")
    if isinstance(result.get("seconds"), int | float):
        facts.append(f"{result['seconds']:.2f} s")
    if result.get("ok"):
        lines = [f"{name}{serial}: ok ({', '.join(facts)})"]
    else:
        check = result.get("check") or "check"
        lines = [f"{name}{serial}: FAILED {check}: {result.get('reason') or 'no reason given'}"]
    lines.extend(f"  warning: {warning}" for warning in result.get("warnings") or ())
    return "\n".join(lines)


if __name__ == "__main__":
    main()
