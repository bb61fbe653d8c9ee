"""Small state changes sent from the main process to the serving workers, and how a worker
applies them.

Versions never travel this way: a version is built once, in the main process, and reaches
the workers by a re-fork (workers.WorkerPool.publish). What remains are changes that
rebuild nothing: SERVFAIL or stale (past expire) switched on or off, the expire deadline and
signature horizon EDNS EXPIRE answers count down to (sent when they change: about once per
refresh), a configured zone added or removed. The main process applies the same change to
its own table first, so a worker forked later has it.
"""

from __future__ import annotations

from dataclasses import dataclass

from authd.serve.zonetable import ZoneTable


@dataclass(frozen=True)
class SetState:
    origin: bytes
    servfail: bool
    expired_at: float | None = None  # set while the zone is past expire
    expires_at: float | None = None  # the expire deadline (None: no timer, a file zone)
    signatures_until: float | None = None  # earliest RRSIG expiration of the served version


@dataclass(frozen=True)
class AddZone:
    origin: bytes


@dataclass(frozen=True)
class RemoveZone:
    origin: bytes


class UpdateError(RuntimeError):
    """The worker could not apply a message of the main process."""


def apply_update(message: object, table: ZoneTable) -> None:
    """Runs in a worker for every message the main process broadcasts."""
    match message:
        case SetState(origin, servfail, expired_at, expires_at, signatures_until):
            table.set_state(origin, servfail, expired_at)
            table.set_expiry(origin, expires_at, signatures_until)
        case AddZone(origin):
            table.add_zone(origin)
        case RemoveZone(origin):
            table.remove_zone(origin)
        case _:
            raise UpdateError(f"unknown update {message!r}")
