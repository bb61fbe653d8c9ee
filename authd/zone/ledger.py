"""The ledger: an append-only, hash-chained record of every version a zone received and
what became of it (published, held, approved, rejected, rolled back, pinned, unpinned).

One file per zone in the state directory, `<zone>.ledger`, one JSON object per line:

    {"seq": 7, "time": 1765152000.0, "event": "held", "serial": 2026120702,
     "digest": "<SHA-384 of the canonical zone, hex>", "source": "AXFR from 192.0.2.53@53",
     "reason": "rrsets-removed: ...", "prev": "<hash of entry 6>", "hash": "<hash of this>"}

`hash` is SHA-256 over the entry's other fields as canonical JSON (sorted keys, no spaces),
`prev` the hash of the entry before, so changing, removing or reordering any entry breaks the
chain at a place `verify` names.

Invariants:
- An entry is durable before `append` returns (written, then fsync; the directory is synced
  when a file is created or rotated), as the store does for versions.
- A crash can leave at most a torn last line. Opening the ledger for writing cuts it away and
  appends a `repaired` entry that records the torn bytes' length and hash, so the repair is
  itself on the chain; `verify` on a torn file (before any repair) reports it as truncated.
- Size is bounded: past `max_bytes` the file is rotated to `.1` (older to `.2`, ... up to
  `keep` files, the oldest dropped). The first entry of the oldest kept file is the anchor:
  its `prev` cannot be checked any more; everything after it can.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from authd.zone.store import _fsync_dir  # one way to make a new directory entry durable

EVENTS = frozenset(
    {
        "received",
        "published",
        "held",
        "approved",
        "rejected",
        "rolled-back",
        "pinned",
        "unpinned",
        "repaired",
    }
)
GENESIS = "0" * 64
SUFFIX = ".ledger"


class LedgerError(Exception):
    """The ledger cannot be read or written; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    time: float
    event: str
    serial: int | None
    digest: str
    source: str
    reason: str
    prev: str
    hash: str = ""

    def body(self) -> dict[str, object]:
        fields = asdict(self)
        del fields["hash"]
        return fields


def entry_hash(body: dict[str, object]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def ledger_path(state_dir: Path, zone_file_stem: str) -> Path:
    """`zone_file_stem` is the zone's name as the store names its files."""
    return state_dir / f"{zone_file_stem}{SUFFIX}"


class Ledger:
    """The writer of one zone's ledger (one writer per zone: the main process)."""

    def __init__(self, path: Path, now: float, *, max_bytes: int = 1 << 20, keep: int = 4) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.last_seq = 0
        self.last_hash = GENESIS
        self._open_tail(now)

    def _open_tail(self, now: float) -> None:
        """Read the last entry (or the rotated file's), cutting a torn last line away."""
        torn = b""
        if self.path.exists():
            data = self.path.read_bytes()
            good = data.rfind(b"\n") + 1
            torn = data[good:]
            lines = data[:good].splitlines()
            if torn:
                with self.path.open("r+b") as handle:
                    handle.truncate(good)
                    handle.flush()
                    os.fsync(handle.fileno())
            if lines:
                last = _parse(lines[-1], self.path, len(lines))
                self.last_seq, self.last_hash = last.seq, last.hash
        if self.last_seq == 0:
            older = _rotated(self.path, 1)
            if older.exists():
                lines = older.read_bytes().splitlines()
                if lines:
                    last = _parse(lines[-1], older, len(lines))
                    self.last_seq, self.last_hash = last.seq, last.hash
        if torn:
            digest = hashlib.sha256(torn).hexdigest()
            self.append(
                "repaired",
                None,
                "",
                "",
                f"cut a torn last entry ({len(torn)} bytes, {digest})",
                now,
            )

    def append(
        self,
        event: str,
        serial: int | None,
        digest: str,
        source: str,
        reason: str,
        now: float,
    ) -> Entry:
        if event not in EVENTS:
            raise LedgerError(f"{self.path}: unknown ledger event {event!r}")
        entry = Entry(self.last_seq + 1, now, event, serial, digest, source, reason, self.last_hash)
        entry = replace(entry, hash=entry_hash(entry.body()))
        line = json.dumps(asdict(entry), sort_keys=True, separators=(",", ":")) + "\n"
        if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
            self._rotate()
        created = not self.path.exists()
        try:
            with self.path.open("ab") as handle:
                handle.write(line.encode())
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            raise LedgerError(f"{self.path}: entry {entry.seq} not written: {exc}") from exc
        self.last_seq, self.last_hash = entry.seq, entry.hash
        return entry

    def _rotate(self) -> None:
        for index in range(self.keep - 1, 0, -1):
            source = self.path if index == 1 else _rotated(self.path, index - 1)
            if source.exists():
                os.replace(source, _rotated(self.path, index))
        _fsync_dir(self.path.parent)


def _rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def _parse(line: bytes, path: Path, number: int) -> Entry:
    try:
        fields = json.loads(line)
        entry = Entry(**fields)
    except (ValueError, TypeError) as exc:
        raise LedgerError(f"{path}:{number}: not a ledger entry: {exc}") from exc
    return entry


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    problem: str  # "" when ok: which entry, in which file and line, and what is wrong
    anchor: int  # seq of the first entry kept (1 unless older files were rotated away)


def files(path: Path) -> list[Path]:
    """The ledger's files, oldest first."""
    rotated = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    return [*rotated, path] if path.exists() else rotated


def read(path: Path) -> Iterator[tuple[Path, int, Entry]]:
    """Every entry with its file and line number, oldest first (no checks but parsing)."""
    for file in files(path):
        for number, line in enumerate(file.read_bytes().splitlines(), 1):
            yield file, number, _parse(line, file, number)


def verify(path: Path, head: tuple[int, str] | None = None) -> Verification:
    """Check every kept entry: its own hash, its link to the one before, the numbering.

    `head`, the (seq, hash) of the last entry as recorded elsewhere (the zone's timers),
    also catches whole entries cut from the end, which no chain can show by itself.
    """
    previous: Entry | None = None
    count = 0
    anchor = 0
    for file in files(path):
        data = file.read_bytes()
        if data and not data.endswith(b"\n"):
            lines = data.count(b"\n")
            return Verification(
                False, count, f"{file}:{lines + 1}: truncated entry (a torn last line)", anchor
            )
        for number, line in enumerate(data.splitlines(), 1):
            where = f"{file}:{number}"
            try:
                entry = _parse(line, file, number)
            except LedgerError as exc:
                return Verification(False, count, str(exc), anchor)
            if entry_hash(entry.body()) != entry.hash:
                return Verification(
                    False, count, f"{where}: entry {entry.seq} was changed (hash mismatch)", anchor
                )
            if previous is None:
                anchor = entry.seq
                if entry.seq == 1 and entry.prev != GENESIS:
                    return Verification(
                        False, count, f"{where}: entry 1 does not start the chain", anchor
                    )
            else:
                if entry.seq != previous.seq + 1:
                    return Verification(
                        False,
                        count,
                        f"{where}: entry {entry.seq} follows entry {previous.seq} "
                        f"(entries {previous.seq + 1}..{entry.seq - 1} missing)",
                        anchor,
                    )
                if entry.prev != previous.hash:
                    return Verification(
                        False,
                        count,
                        f"{where}: entry {entry.seq} does not link to entry {previous.seq}",
                        anchor,
                    )
            previous = entry
            count += 1
    if head is not None and (previous is None or (previous.seq, previous.hash) != head):
        last = 0 if previous is None else previous.seq
        return Verification(
            False, count, f"{path}: ends at entry {last}, but entry {head[0]} was written", anchor
        )
    return Verification(True, count, "", anchor)
