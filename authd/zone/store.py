"""The last good version of every zone on disk: full copy + journal + timers.

Layout under `state-dir`, one directory per zone (name from `zone_dir_name`):

    <zone>.zstate/full         the full copy: checksummed header + marshal payload
    <zone>.zstate/journal      IXFR diffs on top of it (format in journal.py)
    <zone>.zstate/timers.json  refresh timers (format in timerstore.py)
    <zone>.zstate/history/     retired segments (a full copy + its journal, hard links):
                               what `load_version` rebuilds older versions from
    .authd-store.lock          flock: one process owns a state-dir

Durable before visible: every write is done before the caller publishes. A full
copy or timers record is written to `<name>.authd-tmp` in the same directory,
fsynced, renamed over the old file, and the directory fsynced. A diff is one
append + fsync. Compaction (a new full copy, then the journal removed) is safe at
any crash point because a journal names the generation of the full copy it
extends; a stale one is skipped whole. Temp files left by a crash are removed
when the store is opened.

History (issue 14): when a full copy is replaced (AXFR or compaction), the old full copy
and its journal are first hard-linked into `history/NNNNNNNN.full` / `.journal` (a
*segment*, numbered in the order retired), so every version the old pair could rebuild
still can be. `prune_history` drops the segments that hold none of the serials the caller
still wants (zone/history.py keeps the last `history-versions`). A crash between the
links and the replacement leaves a segment sharing the live files' inodes: harmless, the
next retirement sees it is the same file and does not link it twice.

The full copy payload is marshal of the owner -> packed-node dict *and* the
derived indexes (canonical order, ENTs, cuts, DNAMEs, NSEC3 index): re-deriving the
canonical order alone costs more than loading everything else.

The encoding and decoding of the full copy are pure functions at the top; the
Store class below them does the file I/O. Errors are StoreError (path, what
failed, errno) or, for unusable stored data, an `Unusable` value with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import logging
import marshal
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from authd.zone import journal, names, timerstore
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import Record, Snapshot, ZoneError, snapshot_from_fields
from authd.zone.timerstore import TimerValue

__all__ = [
    "AppendResult",
    "LoadedZone",
    "Store",
    "StoreError",
    "Unusable",
    "VersionMeta",
    "decode_full",
    "encode_full",
    "zone_dir_name",
    "zone_from_dir_name",
]

log = logging.getLogger("authd.zone.store")

FULL_MAGIC = b"AUTHDZON"
FULL_FORMAT = 1
TEMP_SUFFIX = ".authd-tmp"
ZONE_DIR_SUFFIX = ".zstate"
LOCK_NAME = ".authd-store.lock"
FULL_NAME = "full"
JOURNAL_NAME = "journal"
TIMERS_NAME = "timers.json"
HISTORY_DIR = "history"

# magic, format, flags, generation, serial, payload length, payload crc32, origin length
_FULL_FIXED = struct.Struct(">8sHHQIQIB")
_CRC = struct.Struct(">I")
_FULL_HEADER_MAX = _FULL_FIXED.size + 255 + _CRC.size
_MARSHAL_VERSION = 4
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-")
_MAX_DIR_NAME = 200


# -- pure: names ----------------------------------------------------------------------


def zone_dir_name(origin: bytes) -> str:
    """A file-system-safe directory name for a zone, e.g. "example.com.zstate".

    Each label keeps [a-z0-9-]; any other byte (including "." and "_" inside a
    label) becomes "_xx" in hex, so distinct zones never share a name. The root zone
    is "_root". Over-long names are cut and end in "_h" + a hash ("_h" is never
    an escape), still unique.
    """
    parts = names.labels(origin)
    if not parts:
        text = "_root"
    else:
        text = ".".join(
            "".join(chr(b) if b in _SAFE else f"_{b:02x}" for b in label) for label in parts
        )
    if len(text) > _MAX_DIR_NAME:
        text = text[: _MAX_DIR_NAME - 18] + "_h" + hashlib.sha256(origin).hexdigest()[:16]
    return text + ZONE_DIR_SUFFIX


def zone_from_dir_name(dir_name: str) -> bytes | None:
    """The origin key a directory name stands for, or None when it cannot be decoded
    (not ours, or a hashed over-long name: read the origin from the full copy)."""
    if not dir_name.endswith(ZONE_DIR_SUFFIX):
        return None
    text = dir_name[: -len(ZONE_DIR_SUFFIX)]
    if text == "_root":
        return names.ROOT
    out = bytearray()
    for part in text.split("."):
        label = bytearray()
        pos = 0
        while pos < len(part):
            char = part[pos]
            if char == "_":
                try:
                    label.append(int(part[pos + 1 : pos + 3], 16))
                except ValueError:
                    return None
                pos += 3
            elif ord(char) in _SAFE:
                label.append(ord(char))
                pos += 1
            else:
                return None
        if not 0 < len(label) < 64:
            return None
        out.append(len(label))
        out += label
    out.append(0)
    return bytes(out) if len(out) <= 255 else None


# -- pure: the full copy --------------------------------------------------------------


class FullCopyError(ValueError):
    """A stored full copy that cannot be used; the message is the precise reason."""


@dataclass(frozen=True, slots=True)
class FullHeader:
    generation: int
    serial: int
    payload_length: int
    payload_crc: int
    origin: bytes
    size: int
    """Header length in bytes; the payload follows."""


def encode_full(snapshot: Snapshot, meta: VersionMeta, generation: int) -> tuple[bytes, bytes]:
    """(header, payload) of a full copy; written back to back."""
    payload = marshal.dumps((*snapshot.fields(), meta.to_tuple()), _MARSHAL_VERSION)
    origin = snapshot.origin
    fixed = _FULL_FIXED.pack(
        FULL_MAGIC,
        FULL_FORMAT,
        0,
        generation,
        snapshot.serial,
        len(payload),
        zlib.crc32(payload),
        len(origin),
    )
    head = fixed + origin
    return head + _CRC.pack(zlib.crc32(head)), payload


def decode_full_header(data: bytes | memoryview) -> FullHeader:
    if len(data) < _FULL_FIXED.size:
        raise FullCopyError(f"header truncated ({len(data)} bytes)")
    magic, version, _flags, generation, serial, length, crc, origin_length = (
        _FULL_FIXED.unpack_from(data, 0)
    )
    if magic != FULL_MAGIC:
        raise FullCopyError("not a full copy (bad magic)")
    size = _FULL_FIXED.size + origin_length + _CRC.size
    if len(data) < size:
        raise FullCopyError(f"header truncated ({len(data)} of {size} bytes)")
    (header_crc,) = _CRC.unpack_from(data, size - _CRC.size)
    if header_crc != zlib.crc32(data[: size - _CRC.size]):
        raise FullCopyError("header checksum mismatch")
    if version != FULL_FORMAT:
        raise FullCopyError(f"format {version} is not supported (expected {FULL_FORMAT})")
    origin = bytes(data[_FULL_FIXED.size : _FULL_FIXED.size + origin_length])
    return FullHeader(generation, serial, length, crc, origin, size)


def decode_full(
    data: bytes | memoryview, origin: bytes
) -> tuple[Snapshot, VersionMeta, FullHeader]:
    """The snapshot stored in a full copy; FullCopyError says precisely what is wrong."""
    header = decode_full_header(data)
    if header.origin != origin:
        raise FullCopyError(
            f"holds zone {names.to_text(header.origin)}, not {names.to_text(origin)}"
        )
    end = header.size + header.payload_length
    if len(data) != end:
        raise FullCopyError(f"size {len(data)} bytes, header says {end} (truncated or extended)")
    payload = memoryview(data)[header.size : end]
    if zlib.crc32(payload) != header.payload_crc:
        raise FullCopyError("payload checksum mismatch")
    try:
        fields = marshal.loads(payload)
    except (EOFError, ValueError, TypeError) as exc:
        raise FullCopyError(f"payload does not decode: {exc}") from None
    if not (isinstance(fields, tuple) and len(fields) == 9):
        raise FullCopyError("payload has the wrong shape")
    blobs, order, ents, cuts, dnames, hashes, owners, count, meta = fields
    if not (
        isinstance(blobs, dict)
        and isinstance(order, list)
        and isinstance(hashes, list)
        and isinstance(owners, list)
        and all(isinstance(x, frozenset) for x in (ents, cuts, dnames))
        and isinstance(count, int)
    ):
        raise FullCopyError("payload fields have the wrong types")
    try:
        snapshot = snapshot_from_fields(
            origin, (blobs, order, ents, cuts, dnames, hashes, owners, count)
        )
        version_meta = VersionMeta.from_tuple(meta)
    except (ZoneError, ValueError) as exc:
        raise FullCopyError(str(exc)) from None
    if snapshot.serial != header.serial:
        raise FullCopyError(f"apex SOA serial {snapshot.serial} != header serial {header.serial}")
    return snapshot, version_meta, header


# -- results ----------------------------------------------------------------------------


class StoreError(Exception):
    """A store operation that failed; names the path, what was being done and why."""

    def __init__(self, path: Path | str, action: str, cause: OSError | str) -> None:
        self.path = str(path)
        self.action = action
        self.errno = cause.errno if isinstance(cause, OSError) else None
        if isinstance(cause, OSError):
            code = errno.errorcode.get(cause.errno or 0, "?")
            why = f"{cause.strerror or cause} ({code})"
        else:
            why = cause
        self.reason = why
        super().__init__(f"{self.path}: {action}: {why}")

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True, slots=True)
class LoadedZone:
    snapshot: Snapshot
    meta: VersionMeta
    """Where the loaded (latest) version came from."""
    base_serial: int
    """Serial of the full copy the journal was replayed onto."""
    journal_entries: int
    """Diffs replayed from the journal."""
    warnings: tuple[str, ...]
    """Anything cut or skipped on the way (torn tail, corruption, stale journal)."""


@dataclass(frozen=True, slots=True)
class Unusable:
    """A stored copy exists but cannot be used: transfer the zone afresh."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    serial: int
    journal_bytes: int
    journal_entries: int
    compacted: bool
    """True when the version went into a new full copy instead of the journal."""
    warning: str | None = None
    """A compaction that failed (the diff was journaled instead), or None."""


@dataclass(slots=True)
class _ZoneState:
    """What the store knows about a zone's files, so appends need no re-reading."""

    generation: int
    base_serial: int
    full_size: int
    journal_valid: bool
    """The journal file exists, matches the full copy's generation and is clean to
    `journal_end` (else the next append replaces it)."""
    journal_end: int
    journal_entries: int
    tip_serial: int


# -- file helpers -------------------------------------------------------------------------


def _write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if offset is not None:
            offset += written
        view = view[written:]


def _syncfs(path: Path) -> bool:
    """syncfs(2) on the file system holding `path` (Linux); False where it is unavailable."""
    function = getattr(_libc(), "syncfs", None)
    if function is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if function(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), str(path))
    finally:
        os.close(fd)
    return True


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_replace(path: Path, chunks: Sequence[bytes], what: str) -> int:
    """Write chunks to path so that a crash leaves the old file or the new one."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    size = 0
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
                size += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        kept = "the previous file is unchanged" if path.exists() else "nothing was stored"
        raise StoreError(path, f"writing the {what} ({kept})", exc) from exc
    try:
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StoreError(
            path.parent, f"syncing the directory after writing the {what}", exc
        ) from exc
    return size


def _read(path: Path, limit: int | None = None) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read() if limit is None else handle.read(limit)
    except FileNotFoundError:
        return None


# -- the store --------------------------------------------------------------------------


class Store:
    """Persistence of zones under one state directory, owned by one process.

    Methods block on file I/O (a 1M-record full copy takes about a second): call
    them from a worker thread in async code. Calls for different zones may run in
    parallel; calls for one zone are serialized.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        compact_ratio: float = 0.5,
        compact_min_bytes: int = 1 << 20,
        compact_max_entries: int = 5000,
        lock: bool = True,
    ) -> None:
        """Open (creating it if needed) and lock the state directory; remove stale temp files.

        With `lock=False` the store is a reader for another process's state directory:
        no lock, no clean-up; use only the load methods.

        Compaction is due once the journal exceeds both `compact_min_bytes` and
        `compact_ratio` times the full copy's size, or holds `compact_max_entries` diffs.
        """
        self.state_dir = Path(state_dir)
        self.compact_ratio = compact_ratio
        self.compact_min_bytes = compact_min_bytes
        self.compact_max_entries = compact_max_entries
        self._states: dict[bytes, _ZoneState | None] = {}
        self._locks: dict[bytes, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._lock_fd: int | None = None
        self.owner = lock
        """False for a reader: it never writes, cuts or removes anything."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(self.state_dir, "creating the state directory", exc) from exc
        if lock:
            self._lock_fd = self._acquire_lock()
        # Without the lock this is a reader (a serving worker): the owner may be writing
        # a temp file right now, so only the owner cleans them up.
        self.removed_temp_files = self._remove_temp_files() if lock else []

    def _acquire_lock(self) -> int:
        path = self.state_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(path, "opening the lock file", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(
                    path, "locking the state directory", "another process is using it"
                ) from exc
            raise StoreError(path, "locking the state directory", exc) from exc
        return fd

    def _remove_temp_files(self) -> list[str]:
        removed: list[str] = []
        for zone_dir in self.state_dir.glob("*" + ZONE_DIR_SUFFIX):
            for temp in zone_dir.glob("*" + TEMP_SUFFIX):
                try:
                    temp.unlink()
                    removed.append(str(temp))
                except OSError as exc:
                    raise StoreError(temp, "removing a stale temp file", exc) from exc
            if removed:
                with contextlib.suppress(OSError):
                    _fsync_dir(zone_dir)
        for path in removed:
            log.info("removed stale temp file %s (left by an interrupted write)", path)
        return removed

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- paths and per-zone state ----------------------------------------------------------

    def zone_dir(self, zone: bytes) -> Path:
        return self.state_dir / zone_dir_name(zone)

    def _zone_lock(self, zone: bytes) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(zone)
            if lock is None:
                lock = self._locks[zone] = threading.Lock()
            return lock

    def _ensure_zone_dir(self, zone: bytes, *, sync: bool = True) -> Path:
        """The zone's directory, created if needed (sync=False: the caller syncs later)."""
        path = self.zone_dir(zone)
        if not path.is_dir():
            try:
                path.mkdir(mode=0o750)
                if sync:
                    _fsync_dir(self.state_dir)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(path, "creating the zone directory", exc) from exc
        return path

    def stored_zones(self) -> list[bytes]:
        """Origins of every zone with a full copy here (read from the copies' headers)."""
        found: list[bytes] = []
        for zone_dir in sorted(self.state_dir.glob("*" + ZONE_DIR_SUFFIX)):
            head = _read(zone_dir / FULL_NAME, _FULL_HEADER_MAX)
            if head is None:
                continue
            try:
                found.append(decode_full_header(head).origin)
            except FullCopyError:
                origin = zone_from_dir_name(zone_dir.name)
                if origin is not None:
                    found.append(origin)
        return found

    def _state(self, zone: bytes) -> _ZoneState | None:
        """The zone's file state, read from disk (headers and journal scan) if unknown."""
        if zone in self._states:
            return self._states[zone]
        zone_dir = self.zone_dir(zone)
        head = _read(zone_dir / FULL_NAME, _FULL_HEADER_MAX)
        state: _ZoneState | None = None
        if head is not None:
            try:
                header = decode_full_header(head)
            except FullCopyError:
                header = None
            if header is not None and header.origin == zone:
                state = _ZoneState(
                    header.generation,
                    header.serial,
                    header.size + header.payload_length,
                    False,
                    0,
                    0,
                    header.serial,
                )
                data = _read(zone_dir / JOURNAL_NAME)
                if data is not None:
                    for warning in self._adopt_journal(zone, state, journal.scan(data), len(data)):
                        log.warning("%s", warning)
        self._states[zone] = state
        return state

    def _adopt_journal(
        self, zone: bytes, state: _ZoneState, scanned: journal.JournalScan, file_size: int
    ) -> list[str]:
        """Take a scanned journal as the zone's, cutting whatever is unusable at its end.

        Returns warnings. A journal for another generation is stale (a compaction was
        interrupted after the new full copy was in place) and is removed.
        """
        path = self.zone_dir(zone) / JOURNAL_NAME
        warnings: list[str] = []
        header = scanned.header
        if header is None or header.generation != state.generation:
            if header is None:
                warnings.append(f"{path}: {scanned.problem}; it is ignored and will be replaced")
            else:
                warnings.append(f"{path}: left from an earlier full copy (stale); removed")
                try:
                    self._check_owner(path, "removing a stale journal")
                    self._unlink(path, "removing a stale journal")
                except StoreError as exc:  # harmless: the next append replaces it
                    warnings.append(str(exc))
            return warnings
        if header.base_serial != state.base_serial:
            warnings.append(
                f"{path}: starts at serial {header.base_serial} but the full copy is at "
                f"{state.base_serial}; it is ignored and will be replaced"
            )
            return warnings
        if scanned.problem is not None:
            warnings.append(f"{path}: {scanned.problem}")
        elif scanned.torn_bytes:
            warnings.append(
                f"{path}: torn last entry ({scanned.torn_bytes} bytes, an interrupted append) cut"
            )
        if scanned.valid_end < file_size:
            try:
                # A reader may see the owner's append half done: only the owner cuts.
                self._check_owner(path, "cutting the journal")
                self._truncate(path, scanned.valid_end)
            except StoreError as exc:  # harmless: the next append cuts it first
                warnings.append(str(exc))
        state.journal_valid = True
        state.journal_end = scanned.valid_end
        state.journal_entries = len(scanned.entries)
        state.tip_serial = (
            scanned.tip_serial if scanned.tip_serial is not None else state.tip_serial
        )
        return warnings

    def _check_owner(self, path: Path, action: str) -> None:
        if not self.owner:
            raise StoreError(path, action, "this store is a reader (opened with lock=False)")

    def _truncate(self, path: Path, size: int) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(path, f"cutting the journal to {size} bytes", exc) from exc

    def _unlink(self, path: Path, action: str) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(path, action, exc) from exc
        try:
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(path.parent, f"syncing the directory after {action}", exc) from exc

    # -- loading --------------------------------------------------------------------------

    def load(self, zone: bytes) -> LoadedZone | None:
        """The last good version of a zone, or None when there is none to serve.

        An unusable stored copy is logged (with the precise reason) and gives None,
        so the zone is transferred afresh; `try_load` returns that reason as a value.
        """
        result = self.try_load(zone)
        if isinstance(result, Unusable):
            log.warning("stored copy of %s ignored: %s", names.to_text(zone), result.reason)
            return None
        return result

    def try_load(self, zone: bytes) -> LoadedZone | Unusable | None:
        """Full copy (checksum verified) plus the journal replayed; None when nothing is
        stored, Unusable with the reason when the full copy cannot be used."""
        with self._zone_lock(zone):
            return self._load(zone)

    def _load(self, zone: bytes) -> LoadedZone | Unusable | None:
        zone_dir = self.zone_dir(zone)
        full_path = zone_dir / FULL_NAME
        try:
            data = _read(full_path)
        except OSError as exc:
            self._states.pop(zone, None)
            return Unusable(str(full_path), f"cannot read: {exc}")
        if data is None:
            self._states[zone] = None
            return None
        try:
            snapshot, meta, header = decode_full(data, zone)
        except FullCopyError as exc:
            self._states[zone] = None
            return Unusable(str(full_path), str(exc))
        del data
        state = _ZoneState(
            header.generation,
            header.serial,
            header.size + header.payload_length,
            False,
            0,
            0,
            header.serial,
        )
        self._states[zone] = state
        journal_path = zone_dir / JOURNAL_NAME
        try:
            journal_data = _read(journal_path)
        except OSError as exc:
            return LoadedZone(
                snapshot, meta, header.serial, 0, (f"{journal_path}: cannot read: {exc}",)
            )
        if journal_data is None:
            return LoadedZone(snapshot, meta, header.serial, 0, ())
        scanned = journal.scan(journal_data)
        if scanned.header is None or scanned.header.generation != header.generation:
            warnings = self._adopt_journal(zone, state, scanned, len(journal_data))
            return LoadedZone(snapshot, meta, header.serial, 0, tuple(warnings))
        replayed, meta, problem = _replay(snapshot, meta, journal_data, scanned)
        if problem is not None:
            # Entries from the failing one on are unusable, like a bad checksum.
            bad = scanned.entries[replayed.count]
            scanned = journal.JournalScan(
                scanned.header, scanned.entries[: replayed.count], bad.offset, 0, problem
            )
        warnings = self._adopt_journal(zone, state, scanned, len(journal_data))
        if not state.journal_valid:
            return LoadedZone(snapshot, meta, header.serial, 0, tuple(warnings))
        return LoadedZone(replayed.snapshot, meta, header.serial, replayed.count, tuple(warnings))

    # -- saving ---------------------------------------------------------------------------

    def save_full(self, snapshot: Snapshot, meta: VersionMeta) -> int:
        """Store `snapshot` as the zone's full copy (AXFR, or compaction); bytes written.

        Raises StoreError; the previous full copy and journal are then intact.
        """
        with self._zone_lock(snapshot.origin):
            return self._save_full(snapshot, meta)

    def _save_full(self, snapshot: Snapshot, meta: VersionMeta) -> int:
        zone = snapshot.origin
        self._check_owner(self.zone_dir(zone), "saving a full copy")
        zone_dir = self._ensure_zone_dir(zone)
        previous = self._state(zone)
        generation = secrets.randbits(64)
        while previous is not None and generation == previous.generation:
            generation = secrets.randbits(64)
        retired = self._retire(zone_dir) if previous is not None else None
        try:
            size = _atomic_replace(
                zone_dir / FULL_NAME, encode_full(snapshot, meta, generation), "full copy"
            )
        except StoreError:
            # A failed store changes nothing: the live copy stays, so its history link goes.
            if retired is not None:
                self._remove_segment(retired)
            raise
        # From here the new copy is durable; a journal left behind is stale (other
        # generation) and would be skipped, so failing to remove it is not an error.
        self._states[zone] = _ZoneState(
            generation, snapshot.serial, size, False, 0, 0, snapshot.serial
        )
        try:
            self._unlink(zone_dir / JOURNAL_NAME, "removing the journal of the old copy")
        except StoreError as exc:
            log.warning("%s (it is stale and will be replaced)", exc)
        return size

    def tip_serial(self, zone: bytes) -> int | None:
        """The serial of the newest stored version (full copy plus journal), None if none."""
        with self._zone_lock(zone):
            state = self._state(zone)
            return state.tip_serial if state is not None else None

    def compaction_due(self, zone: bytes, entry_size: int = 0) -> bool:
        """The journal, with an entry of `entry_size` bytes appended, is over its limit."""
        state = self._state(zone)
        if state is None:
            return False
        entries, journal_bytes = 0, journal.HEADER_SIZE
        if state.journal_valid:
            entries, journal_bytes = state.journal_entries, state.journal_end
        if entry_size:
            entries, journal_bytes = entries + 1, journal_bytes + entry_size
        if entries >= self.compact_max_entries:
            return True
        limit = max(self.compact_min_bytes, int(state.full_size * self.compact_ratio))
        return journal_bytes > limit

    def append_diff(
        self,
        zone: bytes,
        from_serial: int,
        to_serial: int,
        deleted: Iterable[Record],
        added: Iterable[Record],
        meta: VersionMeta,
        *,
        snapshot: Snapshot | None = None,
    ) -> AppendResult:
        """Make one IXFR step durable: append it to the journal (checksummed, fsynced).

        `snapshot` is the version after the diff; when given and the journal has grown
        past its limit, that version is written as a new full copy instead (compaction).
        Raises StoreError (the stored state is then unchanged).
        """
        with self._zone_lock(zone):
            return self._append_diff(zone, from_serial, to_serial, deleted, added, meta, snapshot)

    def _append_diff(
        self,
        zone: bytes,
        from_serial: int,
        to_serial: int,
        deleted: Iterable[Record],
        added: Iterable[Record],
        meta: VersionMeta,
        snapshot: Snapshot | None,
    ) -> AppendResult:
        zone_dir = self.zone_dir(zone)
        path = zone_dir / JOURNAL_NAME
        self._check_owner(path, "appending a diff")
        state = self._state(zone)
        if state is None:
            raise StoreError(zone_dir / FULL_NAME, "appending a diff", "no full copy to extend")
        if from_serial != state.tip_serial:
            raise StoreError(
                path,
                "appending a diff",
                f"the stored version is serial {state.tip_serial}, "
                f"the diff starts at {from_serial}",
            )
        if snapshot is not None and (snapshot.origin != zone or snapshot.serial != to_serial):
            raise StoreError(path, "appending a diff", "the snapshot is not the diff's result")
        try:
            entry = journal.encode_entry(from_serial, to_serial, deleted, added, meta)
        except ValueError as exc:
            raise StoreError(path, "encoding a diff", str(exc)) from exc
        warning = None
        if snapshot is not None and self.compaction_due(zone, len(entry)):
            try:
                self._save_full(snapshot, meta)
                return AppendResult(to_serial, 0, 0, True)
            except StoreError as exc:
                warning = f"compaction failed, diff journaled instead: {exc}"
                log.warning("%s", warning)
        if not state.journal_valid:
            header = journal.encode_header(state.generation, state.base_serial)
            if state.tip_serial != state.base_serial:  # pragma: no cover - guarded above
                raise StoreError(path, "appending a diff", "journal lost but tip moved")
            _atomic_replace(path, (header, entry), "journal")
            state.journal_valid = True
            state.journal_end = len(header) + len(entry)
        else:
            self._append(path, state.journal_end, entry)
            state.journal_end += len(entry)
        state.journal_entries += 1
        state.tip_serial = to_serial
        return AppendResult(to_serial, state.journal_end, state.journal_entries, False, warning)

    def _append(self, path: Path, offset: int, entry: bytes) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(path, "opening the journal to append", exc) from exc
        try:
            if os.fstat(fd).st_size != offset:
                os.ftruncate(fd, offset)  # leftovers of an append whose cleanup failed
            _write_all(fd, entry, offset)
            os.fdatasync(fd)
        except OSError as exc:
            # Cut the partial entry so the journal ends at the last good one; if even
            # that fails, load() cuts it as a torn tail.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
                os.fsync(fd)
            raise StoreError(
                path, "appending a diff (the journal still ends at the previous version)", exc
            ) from exc
        finally:
            os.close(fd)

    def compact(self, snapshot: Snapshot, meta: VersionMeta) -> int:
        """Write the current version as a new full copy and drop the journal."""
        return self.save_full(snapshot, meta)

    def remove(self, zone: bytes) -> None:
        """Delete everything stored for a zone (it left the configuration)."""
        with self._zone_lock(zone):
            zone_dir = self.zone_dir(zone)
            self._check_owner(zone_dir, "removing a zone")
            for name in (JOURNAL_NAME, FULL_NAME, TIMERS_NAME):
                self._unlink(zone_dir / name, f"removing {name}")
            for segment in _segments(zone_dir / HISTORY_DIR):
                self._remove_segment(segment)
            with contextlib.suppress(FileNotFoundError):
                (zone_dir / HISTORY_DIR).rmdir()
            with contextlib.suppress(FileNotFoundError):
                zone_dir.rmdir()
            self._states.pop(zone, None)

    def set_aside(self, zone: bytes, into: Path, name: str) -> Path | None:
        """Move everything stored for a zone to `into`/`name` (a removed catalog member,
        deleted later); None when nothing is stored for it."""
        with self._zone_lock(zone):
            zone_dir = self.zone_dir(zone)
            self._check_owner(zone_dir, "setting a zone aside")
            target = into / name
            try:
                into.mkdir(mode=0o750, exist_ok=True)
                zone_dir.rename(target)
                _fsync_dir(into)
                _fsync_dir(self.state_dir)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StoreError(zone_dir, f"moving to {target}", exc) from exc
            finally:
                self._states.pop(zone, None)
            return target

    # -- history (issue 14): retired segments, older versions rebuilt -------------------

    def _retire(self, zone_dir: Path) -> Path | None:
        """Hard-link the live full copy and journal into history/ before they are replaced;
        the segment made (None: none, or already linked by an interrupted retirement)."""
        full = zone_dir / FULL_NAME
        history = zone_dir / HISTORY_DIR
        segments = _segments(history)
        if segments and _same_file(segments[-1].with_suffix(".full"), full):
            return None  # linked already by a retirement a crash interrupted
        number = int(segments[-1].name) + 1 if segments else 1
        base = history / f"{number:08d}"
        try:
            history.mkdir(mode=0o750, exist_ok=True)
            os.link(full, base.with_suffix(".full"))
            with contextlib.suppress(FileNotFoundError):
                os.link(zone_dir / JOURNAL_NAME, base.with_suffix(".journal"))
            _fsync_dir(history)
        except OSError as exc:  # history is lost for this segment; the version is not
            log.warning("%s: old versions not kept in history: %s", history, exc)
            return None
        return base

    def history_segments(self, zone: bytes) -> list[tuple[int, list[int]]]:
        """Each retired segment (oldest first) and then the live pair: (number, serials it
        can rebuild, base first). The live pair is number 0."""
        with self._zone_lock(zone):
            zone_dir = self.zone_dir(zone)
            found = [
                (
                    int(seg.name),
                    _segment_serials(seg.with_suffix(".full"), seg.with_suffix(".journal")),
                )
                for seg in _segments(zone_dir / HISTORY_DIR)
            ]
            live = _segment_serials(zone_dir / FULL_NAME, zone_dir / JOURNAL_NAME)
            return [*found, (0, live)]

    def prune_history(self, zone: bytes, keep: Iterable[int]) -> int:
        """Remove the retired segments older than the oldest one that can rebuild a serial
        in `keep` (all of them when `keep` is empty); returns how many were removed.

        Segments are retired in version order, so those are exactly the ones holding only
        older versions; newer segments stay even when they hold no wanted serial (their
        versions may not be recorded yet)."""
        wanted = set(keep)
        removed = 0
        with self._zone_lock(zone):
            zone_dir = self.zone_dir(zone)
            history = zone_dir / HISTORY_DIR
            self._check_owner(history, "pruning history")
            segments = _segments(history)
            holds = [
                bool(
                    wanted.intersection(
                        _segment_serials(s.with_suffix(".full"), s.with_suffix(".journal"))
                    )
                )
                for s in segments
            ]
            if wanted and True not in holds:
                live = _segment_serials(zone_dir / FULL_NAME, zone_dir / JOURNAL_NAME)
                if not wanted.intersection(live):
                    return 0  # nothing wanted is here at all: keep everything
            first_needed = holds.index(True) if True in holds else len(segments)
            for seg in segments[:first_needed]:
                self._remove_segment(seg)
                removed += 1
        return removed

    def _remove_segment(self, seg: Path) -> None:
        for suffix in (".journal", ".full"):
            self._unlink(seg.with_suffix(suffix), "removing a history segment")

    def load_version(
        self, zone: bytes, serial: int, accept: Callable[[Snapshot], bool] | None = None
    ) -> tuple[Snapshot, VersionMeta] | None:
        """Rebuild the newest stored version with this serial (live pair first, then the
        retired segments, newest first) that `accept` takes (e.g. the digest matches: a
        serial can come back with other contents); None when no segment holds one."""
        with self._zone_lock(zone):
            zone_dir = self.zone_dir(zone)
            pairs = [(zone_dir / FULL_NAME, zone_dir / JOURNAL_NAME)]
            pairs += [
                (seg.with_suffix(".full"), seg.with_suffix(".journal"))
                for seg in reversed(_segments(zone_dir / HISTORY_DIR))
            ]
            for full, journal_path in pairs:
                found = _rebuild(zone, full, journal_path, serial)
                if found is not None and (accept is None or accept(found[0])):
                    return found
        return None

    # -- timers -------------------------------------------------------------------------

    def save_timers(self, zone: bytes, timers: Mapping[str, TimerValue]) -> None:
        """Replace the zone's timers record atomically (fsynced); StoreError on failure."""
        path = self.zone_dir(zone) / TIMERS_NAME
        try:
            data = timerstore.encode_timers(names.to_text(zone), timers)
        except ValueError as exc:
            raise StoreError(path, "encoding timers", str(exc)) from exc
        with self._zone_lock(zone):
            self._check_owner(path, "saving timers")
            self._ensure_zone_dir(zone)
            _atomic_replace(path, (data,), "timers")

    def save_timers_batch(
        self, records: Mapping[bytes, Mapping[str, TimerValue]]
    ) -> dict[bytes, StoreError]:
        """Replace many zones' timers records with a constant number of syncs.

        Each record is written to a temp file, then the file system is synced once, the
        temps renamed over the records, and synced once more: two syncfs() calls per
        batch instead of two fsyncs per zone (10,000 fsyncs for 5,000 zones at shutdown).
        A crash leaves each record old or new; the failures are returned per zone.
        """
        failures: dict[bytes, StoreError] = {}
        written: list[tuple[bytes, Path, Path]] = []
        for zone, timers in records.items():
            path = self.zone_dir(zone) / TIMERS_NAME
            temp = path.with_name(path.name + TEMP_SUFFIX)
            try:
                data = timerstore.encode_timers(names.to_text(zone), timers)
                with self._zone_lock(zone):
                    self._check_owner(path, "saving timers")
                    self._ensure_zone_dir(zone, sync=False)  # covered by the syncs below
                    temp.write_bytes(data)
                written.append((zone, temp, path))
            except ValueError as exc:
                failures[zone] = StoreError(path, "encoding timers", str(exc))
            except OSError as exc:
                failures[zone] = StoreError(path, "writing the timers", exc)
                with contextlib.suppress(OSError):
                    temp.unlink()  # disk full: no half-written temp left behind
            except StoreError as exc:
                failures[zone] = exc
        if not written:
            return failures
        try:
            self._sync_all([temp for _, temp, _ in written])
        except OSError as exc:
            for zone, temp, path in written:
                failures[zone] = StoreError(path, "syncing the timers", exc)
                with contextlib.suppress(OSError):
                    temp.unlink()
            return failures
        for zone, temp, path in written:
            try:
                with self._zone_lock(zone):
                    os.replace(temp, path)
            except OSError as exc:
                failures[zone] = StoreError(path, "renaming the timers", exc)
                with contextlib.suppress(OSError):
                    temp.unlink()
        try:
            self._sync_all([path.parent for _, _, path in written] + [self.state_dir])
        except OSError as exc:
            for zone, _, path in written:
                failures.setdefault(zone, StoreError(path, "syncing the directory", exc))
        return failures

    def _sync_all(self, paths: Sequence[Path]) -> None:
        """Make `paths` (files or directories) durable: one syncfs, else one fsync each."""
        if _syncfs(self.state_dir):
            return
        for path in paths:
            flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
            fd = os.open(path, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def load_timers(self, zone: bytes) -> dict[str, TimerValue] | None:
        """The zone's timers record, or None when there is none or it is damaged (logged)."""
        path = self.zone_dir(zone) / TIMERS_NAME
        try:
            data = _read(path)
        except OSError as exc:
            log.warning("%s: cannot read timers: %s", path, exc)
            return None
        if data is None:
            return None
        try:
            return timerstore.decode_timers(data, names.to_text(zone))
        except ValueError as exc:
            log.warning("%s: timers ignored: %s", path, exc)
            return None


@dataclass(frozen=True, slots=True)
class _Replayed:
    snapshot: Snapshot
    count: int


def _replay(
    base: Snapshot, meta: VersionMeta, data: bytes, scanned: journal.JournalScan
) -> tuple[_Replayed, VersionMeta, str | None]:
    """Fold the scanned entries onto base; stops at the first one that does not apply."""
    if scanned.header is None or scanned.header.base_serial != base.serial:
        return _Replayed(base, 0), meta, None
    fold = journal.Fold(base)
    count = 0
    problem = None
    for ref in scanned.entries:
        try:
            deleted, added, entry_meta = journal.decode_entry(data, ref)
            fold.apply(deleted, added, ref.to_serial)
        except (ValueError, EOFError, TypeError) as exc:
            problem = f"journal entry {count + 1} at offset {ref.offset} does not apply: {exc}"
            break
        meta = entry_meta
        count += 1
    if count == 0:
        return _Replayed(base, 0), meta, problem
    deleted_net, added_net = fold.net_diff()
    return _Replayed(base.apply_diff(deleted_net, added_net), count), meta, problem


# -- history segments ---------------------------------------------------------------------


def _segments(history: Path) -> list[Path]:
    """history/NNNNNNNN (suffix-less stems) of every retired full copy, oldest first."""
    try:
        names_found = os.listdir(history)
    except FileNotFoundError:
        return []
    stems = sorted(
        {n[: -len(".full")] for n in names_found if n.endswith(".full") and n[:-5].isdigit()}
    )
    return [history / stem for stem in stems]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _segment_serials(full: Path, journal_path: Path) -> list[int]:
    """Serials a full copy + journal pair can rebuild (only the headers are decoded)."""
    head = _read(full, _FULL_HEADER_MAX)
    if head is None:
        return []
    try:
        header = decode_full_header(head)
    except FullCopyError:
        return []
    serials = [header.serial]
    data = _read(journal_path)
    if data is not None:
        scanned = journal.scan(data)
        if (
            scanned.header is not None
            and scanned.header.generation == header.generation
            and scanned.header.base_serial == header.serial
        ):
            serials += [ref.to_serial for ref in scanned.entries]
    return serials


def _rebuild(
    zone: bytes, full: Path, journal_path: Path, serial: int
) -> tuple[Snapshot, VersionMeta] | None:
    """The version `serial` from one full copy + journal pair (the newest one in it), or
    None when the pair does not hold it or cannot be read."""
    serials = _segment_serials(full, journal_path)
    if serial not in serials:
        return None
    data = _read(full)
    if data is None:
        return None
    try:
        snapshot, meta, _header = decode_full(data, zone)
    except FullCopyError as exc:
        log.warning("%s: cannot rebuild serial %d: %s", full, serial, exc)
        return None
    last = len(serials) - 1 - serials[::-1].index(serial)
    if last == 0:
        return snapshot, meta
    journal_data = _read(journal_path)
    assert journal_data is not None  # serials came from it
    scanned = journal.scan(journal_data)
    prefix = journal.JournalScan(scanned.header, scanned.entries[:last], 0, 0, None)
    replayed, meta, problem = _replay(snapshot, meta, journal_data, prefix)
    if problem is not None or replayed.count != last:
        log.warning("%s: cannot rebuild serial %d: %s", journal_path, serial, problem)
        return None
    return replayed.snapshot, meta
