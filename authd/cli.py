"""The `authd` command line: thin, it parses arguments, calls into the package and prints.

Exit codes: 0 ok, 1 user error (bad config, unknown zone, file exists...), 2 usage error
(click's own), 3 daemon not reachable on the control socket.
"""

from __future__ import annotations

import datetime
import errno
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import dns.version

from authd.config import Config, ConfigError, load_config
from authd.keys import DEFAULT_ALGORITHM, DEPRECATED_ALGORITHMS, TSIG_ALGORITHMS, generate_tsig_key

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
    """Load the config; on errors print every one of them to stderr and exit 1."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for error in exc.errors:
            click.echo(f"error: {error}", err=True)
        count = len(exc.errors)
        click.echo(f"{path}: {count} error{'s' if count != 1 else ''}", err=True)
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
    from authd import control

    socket_path = config.server.control_socket
    if socket_path is None:
        raise UserError(f'{config.source}: server.control-socket is "" (control is turned off)')
    with daemon_errors():
        return control.call(socket_path, command, **args)


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


class TextFormatter(logging.Formatter):
    """`2026-01-02T03:04:05.678Z info authd.xfr: zone updated zone=example.com serial=7`"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname.lower(), f"{record.name}:"]
        parts.append(record.getMessage())
        parts.extend(f"{key}={_text_value(value)}" for key, value in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


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


def configure_logging(log_format: str, level: str) -> None:
    """Every event to stderr, one line each (journald and docker logs take it from there)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


# --- commands -------------------------------------------------------------------------------------


class _Group(click.Group):
    """Lists commands in the order they were added, which is the order they matter in."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


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
def check_config(config_path: Path) -> None:
    """Check a config file: exit 0, or print every error and exit 1.

    Each error names the file, the key and the reason; warnings do not fail the check.

    \b
    Example:
      authd check-config -c authd.toml
    """
    config = load_or_exit(config_path)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    count = len(config.zones)
    click.echo(f"ok: {count} zone{'s' if count != 1 else ''}")


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


if __name__ == "__main__":
    main()
