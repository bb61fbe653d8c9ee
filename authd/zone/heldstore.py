"""The held version of a zone on disk: a verified version the change guard (or a pin) kept
back, stored durably but never served (issue 14).

    <zone>.zstate/held     the held version, in the store's full-copy format

It lives beside the served copy and never replaces it: a restart serves the full copy
and journal as before, and the lifecycle record (timers.json) says a version is held.
Written like the full copy: a temp file, fsync, rename, fsync of the directory, so a
crash at any moment leaves the old held version or the new one. The temp name ends in
the store's temp suffix, so a crash's leftover is removed when the store is opened.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from authd.zone.journal import VersionMeta
from authd.zone.snapshot import Snapshot
from authd.zone.store import (
    TEMP_SUFFIX,
    FullCopyError,
    Store,
    decode_full,
    decode_full_header,
    encode_full,
)

HELD_NAME = "held"


class HeldError(Exception):
    """The held version cannot be written or read; one line for logs and the user."""


def held_path(store: Store, origin: bytes) -> Path:
    return store.zone_dir(origin) / HELD_NAME


def save_held(store: Store, snapshot: Snapshot, meta: VersionMeta) -> None:
    """Store `snapshot` as the zone's held version (replacing any); HeldError on failure."""
    path = held_path(store, snapshot.origin)
    temp = path.with_name(path.name + TEMP_SUFFIX)
    chunks = encode_full(snapshot, meta, secrets.randbits(64))
    try:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise HeldError(f"{path}: cannot store the held version: {exc.strerror or exc}") from exc


def load_held(store: Store, origin: bytes) -> tuple[Snapshot, VersionMeta] | None:
    """The held version, or None when there is none; HeldError when it is damaged."""
    path = held_path(store, origin)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeldError(f"{path}: cannot read the held version: {exc.strerror or exc}") from exc
    try:
        snapshot, meta, _header = decode_full(data, origin)
    except FullCopyError as exc:
        raise HeldError(f"{path}: held version unusable: {exc}") from exc
    return snapshot, meta


def held_serial(store: Store, origin: bytes) -> int | None:
    """The serial of the stored held version (its header only), or None when there is
    none or it is unreadable (load_held says why)."""
    try:
        with open(held_path(store, origin), "rb") as handle:
            head = handle.read(_HEADER_MAX)
        return decode_full_header(head).serial
    except (OSError, FullCopyError):
        return None


_HEADER_MAX = 4096  # the fixed header, the origin (at most 255 octets) and a CRC


def drop_held(store: Store, origin: bytes) -> None:
    """Remove the held version (nothing when there is none)."""
    path = held_path(store, origin)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise HeldError(f"{path}: cannot remove the held version: {exc.strerror or exc}") from exc
    with contextlib.suppress(OSError):
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
