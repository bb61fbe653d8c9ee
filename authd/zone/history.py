"""Version history (issue 14): which versions a zone published, and how to see them again.

One small index per zone, `<zone>.zstate/history.jsonl`, one JSON object per published
version, oldest first:

    {"serial": 2026120705, "time": 1765152000.0, "source": "IXFR from 192.0.2.53@53",
     "records": 1234, "digest": "<SHA-384 of the canonical zone, hex, as ZONEMD>"}

The versions themselves are not copied here: the store keeps them (its full copy and
journal, plus retired segments; see store.py) and `Store.load_version` rebuilds any of
them. This module keeps the index bounded to the last `history-versions` entries and
tells the store which serials it must still be able to rebuild.

Invariants:
- An entry is appended (fsynced) after its version is durable in the store, so every
  entry of the index names a version the store held when it was written.
- The index never holds more than 2 x `keep` lines: past that it is rewritten atomically
  (temp + fsync + rename) with the last `keep`.
- The digest is the RFC 8976 SIMPLE/SHA-384 digest of the whole version (the apex ZONEMD
  RRset and its signatures left out), so it equals what dnspython's
  `Zone.compute_digest(SHA384)` gives for the same records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from authd.zone import names
from authd.zone.dnssec import zonemd_digest
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import SOA, Record, Snapshot
from authd.zone.store import TEMP_SUFFIX, _fsync_dir

INDEX_NAME = "history.jsonl"
DEFAULT_VERSIONS = 20


class HistoryError(Exception):
    """A history request that cannot be answered; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class VersionRecord:
    serial: int
    time: float
    source: str
    records: int
    digest: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> VersionRecord:
        fields = json.loads(line)
        record = cls(**fields)
        if not (
            isinstance(record.serial, int)
            and isinstance(record.time, int | float)
            and isinstance(record.source, str)
            and isinstance(record.records, int)
            and isinstance(record.digest, str)
        ):
            raise ValueError("fields have the wrong types")
        return record


# -- pure -----------------------------------------------------------------------------------


def digest_hex(snapshot: Snapshot) -> str:
    """SHA-384 of the canonical zone as ZONEMD computes it (scheme SIMPLE); CPU-bound:
    call it from a thread."""
    return zonemd_digest(snapshot, 1).hex()


def source_of(meta: VersionMeta) -> str:
    """ "IXFR from 192.0.2.53@53", "AXFR from provider", "file", "approval", "rollback"."""
    return f"{meta.transfer} from {meta.primary}" if meta.primary else meta.transfer


def record_for(snapshot: Snapshot, meta: VersionMeta, digest: str) -> VersionRecord:
    return VersionRecord(
        snapshot.serial, meta.received_at, source_of(meta), snapshot.record_count, digest
    )


def find(records: Sequence[VersionRecord], serial: int) -> VersionRecord | None:
    """The newest entry with this serial (a serial can come back, e.g. after a rollback)."""
    return next((r for r in reversed(records) if r.serial == serial), None)


def record_lines(records: Sequence[Record]) -> list[str]:
    """Records as master-file lines (absolute names), sorted for a stable diff."""
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    lines = []
    for owner, rtype, ttl, rdata in records:
        kind = dns.rdatatype.RdataType.make(rtype)
        value = dns.rdata.from_wire(dns.rdataclass.IN, kind, rdata, 0, len(rdata))
        lines.append(
            f"{names.to_text(owner)} {ttl} IN {dns.rdatatype.to_text(kind)} {value.to_text()}"
        )
    return sorted(lines)


def diff_lines(old: Snapshot, new: Snapshot) -> tuple[list[str], list[str]]:
    """(removed, added) master-file lines from `old` to `new`, the apex SOA included."""
    from authd.serve.xfrout import diff

    deleted, added = diff(old, new)
    old_soa = (old.origin, SOA, old.soa_ttl, old.soa_rdata)
    new_soa = (new.origin, SOA, new.soa_ttl, new.soa_rdata)
    if old_soa != new_soa:
        deleted = [old_soa, *deleted]
        added = [new_soa, *added]
    return record_lines(deleted), record_lines(added)


def format_history(zone: str, records: Sequence[VersionRecord], served: int | None) -> str:
    """The table `authd zone history` prints, newest first."""
    import datetime

    lines = [f"zone {zone}: {len(records)} versions kept (newest first)"]
    for record in reversed(records):
        when = datetime.datetime.fromtimestamp(record.time, datetime.UTC)
        mark = " (served)" if record.serial == served else ""
        lines.append(
            f"  {record.serial:>10}  {when:%Y-%m-%dT%H:%M:%SZ}  {record.records:>8} records  "
            f"{record.source}{mark}\n              sha384 {record.digest}"
        )
    return "\n".join(lines)


# -- the index file -----------------------------------------------------------------------


class HistoryIndex:
    """The index of one zone; one writer (the main process), any number of readers."""

    def __init__(self, zone_dir: Path) -> None:
        self.path = zone_dir / INDEX_NAME

    def read(self) -> list[VersionRecord]:
        """Every readable entry, oldest first; a torn or damaged line is skipped."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return list(_parse(data))

    def append(self, record: VersionRecord, keep: int) -> list[VersionRecord]:
        """Add one entry (fsynced); returns the last `keep` entries, which the store
        must still be able to rebuild."""
        records = [*self.read(), record]
        if len(records) > 2 * max(keep, 1) or not self.path.exists():
            self._rewrite(records[-keep:] if keep else [])
        else:
            with self.path.open("ab") as handle:
                handle.write(record.to_json().encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        return records[-keep:] if keep else []

    def _rewrite(self, records: Sequence[VersionRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + TEMP_SUFFIX)
        with temp.open("wb") as handle:
            handle.write(b"".join(r.to_json().encode() + b"\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        _fsync_dir(self.path.parent)


def _parse(data: bytes) -> Iterator[VersionRecord]:
    for line in data.splitlines():
        try:
            yield VersionRecord.from_json(line)
        except (ValueError, TypeError):
            continue
