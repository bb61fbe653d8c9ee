"""The control commands of the change guard and rollback (issue 14): approve, reject,
rollback, unpin. The daemon answers them (App.handle_control); each checks what it can
at once and answers with one line (ControlError for bad input), then posts one event to
the zone's lifecycle machine and, for approve and rollback, waits until every worker
serves the version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authd.control import ControlError
from authd.horizon import earliest_signature_expiration, rfc3339
from authd.versions import VersionsError, parse_serial
from authd.xfr.operations import is_signed
from authd.zone import lifecycle as lc

if TYPE_CHECKING:
    from authd.app import App, ZoneRuntime
    from authd.xfr.secondary import ZoneEntry

WAIT = 120.0  # seconds an approve or rollback waits to be served by every worker


def _serial(value: object, what: str) -> int:
    try:
        return parse_serial(value, what)
    except VersionsError as exc:
        raise ControlError(str(exc)) from None


def _entry(runtime: ZoneRuntime, command: str) -> ZoneEntry:
    if runtime.secondary is None:
        raise ControlError(
            f"zone {runtime.name} is served from a file: nothing to {command} "
            "(edit the file, or use `authd zone refresh`)"
        )
    return runtime.secondary


async def guard_command(app: App, command: str, runtime: ZoneRuntime, args: dict[str, Any]) -> str:
    entry = _entry(runtime, command)
    record = entry.record
    name = runtime.name
    held = record.held.serial if record.held is not None else None
    if command == "approve":
        serial = None if args.get("serial") is None else _serial(args["serial"], "SERIAL")
        if held is None:
            raise ControlError(f"zone {name}: nothing is held")
        if serial is not None and serial != held:
            raise ControlError(f"zone {name}: serial {serial} is not held (held: {held})")
        app.post(runtime, lc.Approve(held))
        await _served(app, runtime, entry, held, f"approve {held}")
        return f"zone {name}: serial {held} approved and served"
    if command == "reject":
        if args.get("serial") is None:
            raise ControlError("reject needs the held SERIAL")
        serial = _serial(args["serial"], "SERIAL")
        if record.release:
            raise ControlError(f"zone {name}: an {record.release} is being published; try again")
        if serial != held:
            what = f"held: {held}" if held is not None else "nothing is held"
            raise ControlError(f"zone {name}: serial {serial} is not held ({what})")
        app.post(runtime, lc.Reject(serial))
        await _durable(app)
        return f"zone {name}: serial {serial} rejected: dropped, and refused from now on"
    if command == "unpin":
        if record.pinned is None:
            raise ControlError(f"zone {name} is not pinned")
        pinned = record.pinned
        app.post(runtime, lc.Unpin())
        await _durable(app)
        return f"zone {name}: unpinned from serial {pinned}: following the primary again"
    if command == "rollback":
        if args.get("to") is None:
            raise ControlError("rollback needs --to SERIAL")
        serial = _serial(args["to"], "--to")
        return await _rollback(app, runtime, entry, serial)
    raise ControlError(f"unknown command {command}")


async def _rollback(app: App, runtime: ZoneRuntime, entry: ZoneEntry, serial: int) -> str:
    name = runtime.name
    snapshot = await app.load_version(runtime.config.origin, serial)  # ControlError if not kept
    until = ""
    if is_signed(snapshot):
        now = app.clock.now()
        expires = earliest_signature_expiration(snapshot, now)
        if expires is not None and expires <= now:
            raise ControlError(
                f"zone {name}: serial {serial} cannot be rolled back to: its signatures "
                f"expired at {rfc3339(expires)} (validating resolvers would fail it)"
            )
        if expires is not None:
            until = f"; its signatures validate until {rfc3339(expires)}"
    entry.staged = snapshot  # the Load takes it instead of rebuilding it again
    app.post(runtime, lc.Rollback(serial))
    await _served(app, runtime, entry, serial, f"rollback to {serial}")
    return f"zone {name}: rolled back to serial {serial}, served and pinned{until}"


async def _served(app: App, runtime: ZoneRuntime, entry: ZoneEntry, serial: int, what: str) -> None:
    """Wait until the machine has published `serial` (or given up), then for the workers."""
    error = entry.record.last_error

    def settled(zone: lc.Zone) -> bool:
        if zone.busy:
            return False
        served = zone.served.serial if zone.served is not None else None
        return served == serial or zone.last_error != error

    if not await entry.until(settled, WAIT):
        raise ControlError(f"zone {runtime.name}: {what}: not served after {WAIT:.0f} s")
    record = entry.record
    if record.served is None or record.served.serial != serial:
        raise ControlError(f"zone {runtime.name}: {what} failed: {record.last_error}")
    await app.wait_published(app.publish_ticket(runtime.config.origin))
    await _durable(app)


async def _durable(app: App) -> None:
    """The record (pin, rejection, approval) is on disk before the command answers."""
    if app.secondaries is not None:
        await app.secondaries.writer.flush()
