"""The journal of IXFR diffs kept on top of a stored full copy: its format, pure.

A journal file belongs to exactly one full copy, named by that copy's random
*generation* and serial in the journal header. Compaction writes a new full copy
(new generation) and only then removes the journal, so a crash in between leaves
a journal whose generation no longer matches: it is stale and skipped whole,
never replayed onto the wrong base.

Layout (big-endian):

    header  28 B   magic "AUTHDJNL", format u16, reserved u16, base generation u64,
                   base serial u32, crc32 of the 24 bytes before it u32
    entry   20 B   magic "JENT", payload length u32, from serial u32, to serial u32,
                   crc32 over the first 16 header bytes and the payload u32
            payload  marshal of (deleted records, added records, meta tuple)

Appends are single writes followed by fsync. A crash can leave the last entry
short or zero-filled (a *torn tail*): it is cut. A bad entry with more data after
it is corruption: everything from it on is unusable and reported.

Replay folds any number of entries into one net diff per RRset, so loading a
journal of N diffs costs one `Snapshot.apply_diff` (one copy of the owner dict),
not N of them.
"""

from __future__ import annotations

import marshal
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from authd.zone import names
from authd.zone.snapshot import (
    RRSIG,
    SOA,
    Node,
    Record,
    Snapshot,
    covered_type,
    is_sig_type,
    parse_soa,
    sig_type,
)

JOURNAL_MAGIC = b"AUTHDJNL"
JOURNAL_FORMAT = 1
ENTRY_MAGIC = b"JENT"

_HEADER = struct.Struct(">8sHHQI")
_HEADER_CRC = struct.Struct(">I")
HEADER_SIZE = _HEADER.size + _HEADER_CRC.size
_ENTRY = struct.Struct(">4sIII")
_ENTRY_CRC = struct.Struct(">I")
ENTRY_HEADER_SIZE = _ENTRY.size + _ENTRY_CRC.size
_MARSHAL_VERSION = 4


@dataclass(frozen=True, slots=True)
class VersionMeta:
    """Where a zone version came from: kept with every full copy and journal entry."""

    transfer: str
    """How it arrived: "AXFR", "IXFR", "AXFR-style IXFR", "file", ..."""
    received_at: float
    """Unix time at which it was received (the caller's clock)."""
    primary: str | None = None
    """The primary it came from ("IP@PORT" or a remote id), None for a local file."""

    def to_tuple(self) -> tuple[str, float, str | None]:
        return (self.transfer, self.received_at, self.primary)

    @classmethod
    def from_tuple(cls, value: object) -> VersionMeta:
        if not (isinstance(value, tuple) and len(value) == 3):
            raise ValueError("version meta is not a 3-tuple")
        transfer, received_at, primary = value
        if not isinstance(transfer, str) or not isinstance(received_at, int | float):
            raise ValueError("version meta has wrong field types")
        if primary is not None and not isinstance(primary, str):
            raise ValueError("version meta primary is not a string")
        return cls(transfer, float(received_at), primary)


@dataclass(frozen=True, slots=True)
class JournalHeader:
    generation: int
    base_serial: int


@dataclass(frozen=True, slots=True)
class EntryRef:
    """Where one checksummed entry sits in the journal bytes."""

    offset: int
    end: int
    from_serial: int
    to_serial: int


@dataclass(frozen=True, slots=True)
class JournalScan:
    """The usable prefix of a journal and what, if anything, was wrong after it."""

    header: JournalHeader | None
    entries: tuple[EntryRef, ...]
    valid_end: int
    """Byte offset where the usable journal ends; appends go here."""
    torn_bytes: int
    """Bytes of a torn (partially written) last entry, cut at load."""
    problem: str | None
    """Corruption that made the rest unusable (not a torn tail), or None."""

    @property
    def tip_serial(self) -> int | None:
        if self.header is None:
            return None
        return self.entries[-1].to_serial if self.entries else self.header.base_serial


# -- encoding -----------------------------------------------------------------------


def encode_header(generation: int, base_serial: int) -> bytes:
    head = _HEADER.pack(JOURNAL_MAGIC, JOURNAL_FORMAT, 0, generation, base_serial)
    return head + _HEADER_CRC.pack(zlib.crc32(head))


def encode_entry(
    from_serial: int,
    to_serial: int,
    deleted: Iterable[Record],
    added: Iterable[Record],
    meta: VersionMeta,
) -> bytes:
    payload = marshal.dumps(
        (tuple(map(tuple, deleted)), tuple(map(tuple, added)), meta.to_tuple()), _MARSHAL_VERSION
    )
    if len(payload) >= 1 << 32:
        raise ValueError(f"a diff of {len(payload)} bytes does not fit one journal entry")
    head = _ENTRY.pack(ENTRY_MAGIC, len(payload), from_serial, to_serial)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + _ENTRY_CRC.pack(crc) + payload


def decode_header(data: bytes | memoryview) -> JournalHeader:
    """The header of a journal; ValueError says what is wrong with it."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"journal header truncated ({len(data)} of {HEADER_SIZE} bytes)")
    magic, version, _reserved, generation, base_serial = _HEADER.unpack_from(data, 0)
    if magic != JOURNAL_MAGIC:
        raise ValueError("not a journal (bad magic)")
    (crc,) = _HEADER_CRC.unpack_from(data, _HEADER.size)
    if crc != zlib.crc32(data[: _HEADER.size]):
        raise ValueError("journal header checksum mismatch")
    if version != JOURNAL_FORMAT:
        raise ValueError(f"journal format {version} is not supported (expected {JOURNAL_FORMAT})")
    return JournalHeader(generation, base_serial)


def scan(data: bytes | memoryview) -> JournalScan:
    """Verify every entry's checksum and the serial chain; find the usable prefix.

    Does not decode payloads, so it is cheap enough to run before every first append.
    """
    try:
        header = decode_header(data)
    except ValueError as exc:
        return JournalScan(None, (), 0, 0, f"journal unusable: {exc}")
    size = len(data)
    entries: list[EntryRef] = []
    pos = HEADER_SIZE
    serial = header.base_serial
    while pos < size:
        problem = _entry_problem(data, pos, size, serial)
        if problem is None:
            _magic, length, from_serial, to_serial = _ENTRY.unpack_from(data, pos)
            end = pos + ENTRY_HEADER_SIZE + length
            entries.append(EntryRef(pos, end, from_serial, to_serial))
            serial = to_serial
            pos = end
            continue
        torn, reason = problem
        if torn:
            return JournalScan(header, tuple(entries), pos, size - pos, None)
        return JournalScan(
            header,
            tuple(entries),
            pos,
            0,
            f"journal entry {len(entries) + 1} at offset {pos}: {reason}; "
            f"{size - pos} bytes from there on are unusable",
        )
    return JournalScan(header, tuple(entries), pos, 0, None)


def _entry_problem(
    data: bytes | memoryview, pos: int, size: int, serial: int
) -> tuple[bool, str] | None:
    """None for a good entry at pos, else (is_torn_tail, reason)."""
    if size - pos < ENTRY_HEADER_SIZE:
        return True, "entry header truncated"
    magic, length, from_serial, _to_serial = _ENTRY.unpack_from(data, pos)
    if magic != ENTRY_MAGIC:
        # A crash can leave zero-filled blocks after the last complete entry.
        return not any(data[pos:size]), "bad entry magic"
    end = pos + ENTRY_HEADER_SIZE + length
    if end > size:
        return True, "entry extends past the end of the file"
    (crc,) = _ENTRY_CRC.unpack_from(data, pos + _ENTRY.size)
    head = data[pos : pos + _ENTRY.size]
    if crc != zlib.crc32(data[pos + ENTRY_HEADER_SIZE : end], zlib.crc32(head)):
        # The last entry with a bad checksum is one whose write did not complete.
        return end == size, "entry checksum mismatch"
    if from_serial != serial:
        return False, f"entry starts at serial {from_serial}, expected {serial} (chain broken)"
    return None


def decode_entry(
    data: bytes | memoryview, ref: EntryRef
) -> tuple[tuple[Record, ...], tuple[Record, ...], VersionMeta]:
    """The deleted records, added records and meta of one entry found by scan()."""
    payload = marshal.loads(data[ref.offset + ENTRY_HEADER_SIZE : ref.end])
    if not (isinstance(payload, tuple) and len(payload) == 3):
        raise ValueError(f"journal entry at offset {ref.offset}: payload is not a 3-tuple")
    deleted, added, meta = payload
    if not (isinstance(deleted, tuple) and isinstance(added, tuple)):
        raise ValueError(f"journal entry at offset {ref.offset}: records are not tuples")
    return deleted, added, VersionMeta.from_tuple(meta)


# -- replay -------------------------------------------------------------------------


class Fold:
    """Folds a sequence of diffs into one net diff against a base snapshot.

    Each diff is applied to working copies of the nodes it touches with exactly the
    semantics of Snapshot.apply_diff (deletions first; deleting an absent record is an
    error; an added duplicate is ignored; an RRset keeps the lowest TTL), so
    `base.apply_diff(*fold.net_diff())` equals applying every diff in turn.
    """

    def __init__(self, base: Snapshot) -> None:
        self.base = base
        self._nodes: dict[bytes, Node] = {}

    def apply(self, deleted: Sequence[Record], added: Sequence[Record], to_serial: int) -> None:
        """Apply one diff that must end at `to_serial`, all or nothing.

        ValueError names the offending record, or the serial actually reached.
        """
        staged: dict[bytes, Node] = {}

        def working(key: bytes) -> Node:
            node = staged.get(key)
            if node is None:
                current = self._nodes.get(key)
                if current is None:
                    current = self.base.node(key) or {}
                node = staged[key] = dict(current)
            return node

        for key, rtype, _ttl, rdata in deleted:
            node = working(key)
            slot = sig_type(covered_type(rdata)) if rtype == RRSIG else rtype
            entry = node.get(slot)
            if entry is None or rdata not in entry[1]:
                raise ValueError(f"deletes {names.to_text(key)} type {rtype}, which is absent")
            remaining = tuple(r for r in entry[1] if r != rdata)
            if remaining:
                node[slot] = (entry[0], remaining)
            else:
                del node[slot]
        origin = self.base.origin
        for key, rtype, ttl, rdata in added:
            if not names.is_subdomain(key, origin):
                raise ValueError(f"adds {names.to_text(key)}, outside the zone")
            node = working(key)
            slot = sig_type(covered_type(rdata)) if rtype == RRSIG else rtype
            entry = node.get(slot)
            if entry is None:
                node[slot] = (ttl, (rdata,))
            elif rdata not in entry[1]:
                node[slot] = (min(entry[0], ttl), (*entry[1], rdata))
        apex = staged.get(origin) or self._nodes.get(origin) or self.base.node(origin) or {}
        soa = apex.get(SOA)
        if soa is None or len(soa[1]) != 1:
            raise ValueError("leaves the apex without exactly one SOA")
        serial = parse_soa(soa[1][0]).serial
        if serial != to_serial:
            raise ValueError(f"leaves serial {serial}, the entry says {to_serial}")
        self._nodes.update(staged)

    def net_diff(self) -> tuple[list[Record], list[Record]]:
        """Whole changed RRsets: every old record of each, then every new one."""
        deleted: list[Record] = []
        added: list[Record] = []
        for key, final in self._nodes.items():
            base = self.base.node(key) or {}
            for slot in base.keys() | final.keys():
                old = base.get(slot)
                new = final.get(slot)
                if old == new:
                    continue
                wire_type = RRSIG if is_sig_type(slot) else slot
                if old is not None:
                    deleted.extend((key, wire_type, old[0], rdata) for rdata in old[1])
                if new is not None:
                    added.extend((key, wire_type, new[0], rdata) for rdata in new[1])
        return deleted, added
