"""Zone updates sent from the main process to the serving workers, and how a worker applies them.

Messages are small: a worker re-reads a stored version from the state directory (read
only) or re-parses a master file itself, and applies an IXFR diff to its own copy of the
previous version. A diff that does not fit the worker's version falls back to the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from authd.publish import DiffSteps
from authd.serve.zonetable import ZoneTable
from authd.zone.loader import load_zone_file
from authd.zone.snapshot import Snapshot
from authd.zone.store import Store

MAX_DIFF_RECORDS = 20_000  # larger diffs travel through the store instead


@dataclass(frozen=True)
class LoadStored:
    """Serve the version with `serial` from the state directory."""

    origin: bytes
    serial: int
    state_dir: str


@dataclass(frozen=True)
class LoadFile:
    origin: bytes
    name: str
    path: str
    serial: int


@dataclass(frozen=True)
class ApplyDiff:
    origin: bytes
    from_serial: int
    to_serial: int
    steps: DiffSteps
    state_dir: str


@dataclass(frozen=True)
class SetState:
    origin: bytes
    servfail: bool
    expired_at: float | None = None  # set while the zone is past expire


@dataclass(frozen=True)
class AddZone:
    origin: bytes


@dataclass(frozen=True)
class RemoveZone:
    origin: bytes


class UpdateError(RuntimeError):
    """The worker could not bring a zone to the version the main process serves."""


def diff_message(
    origin: bytes, old: Snapshot, new: Snapshot, steps: DiffSteps, state_dir: str
) -> ApplyDiff | LoadStored:
    size = sum(len(deleted) + len(added) for deleted, added in steps)
    if size > MAX_DIFF_RECORDS:
        return LoadStored(origin, new.serial, state_dir)
    return ApplyDiff(origin, old.serial, new.serial, steps, state_dir)


def _load_stored(origin: bytes, serial: int, state_dir: str) -> Snapshot:
    loaded = Store(state_dir, lock=False).load(origin)
    if loaded is None or loaded.snapshot.serial != serial:
        found = None if loaded is None else loaded.snapshot.serial
        raise UpdateError(f"stored version has serial {found}, expected {serial}")
    return loaded.snapshot


def apply_update(message: object, table: ZoneTable) -> None:
    """Runs in a worker for every message the main process broadcasts."""
    match message:
        case LoadStored(origin, serial, state_dir):
            table.publish(origin, _load_stored(origin, serial, state_dir))
        case LoadFile(origin, name, path, serial):
            snapshot = load_zone_file(Path(path), name)
            if snapshot.serial != serial:
                raise UpdateError(f"{path} changed again: serial {snapshot.serial}, not {serial}")
            table.publish(origin, snapshot)
        case ApplyDiff(origin, from_serial, to_serial, steps, state_dir):
            published = table.get(origin)
            current = published.snapshot if published is not None else None
            if current is None or current.serial != from_serial:
                table.publish(origin, _load_stored(origin, to_serial, state_dir))
                return
            for deleted, added in steps:
                current = current.apply_diff(deleted, added)
            if current.serial != to_serial:
                raise UpdateError(f"diff ends at serial {current.serial}, expected {to_serial}")
            table.publish(origin, current)
        case SetState(origin, servfail, expired_at):
            table.set_state(origin, servfail, expired_at)
        case AddZone(origin):
            table.add_zone(origin)
        case RemoveZone(origin):
            table.remove_zone(origin)
        case _:
            raise UpdateError(f"unknown update {message!r}")
