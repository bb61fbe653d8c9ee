"""A lookup Result to response wire bytes: name compression and truncation.

Compression follows Knot DNS: owner names and the suffixes of names already
written (starting with the question, at offset 12, so names under the question
carry the query's case) are reused by pointer; inside RDATA, names are
compressed only for the RFC 1035 types (NS, MD, MF, CNAME, SOA, MB, MG, MR,
PTR, MINFO, MX), never for DNAME, SRV, RRSIG, NSEC and the rest (RFC 3597 4).

Truncation, as Knot does it: each section is written as its data RRsets in
order followed by the RRSIGs of the RRsets written; RRsets are whole or absent.
The first RRset of the answer or authority section that does not fit ends the
response with TC=1; what fit before it is kept. In the additional section each
RRset that does not fit is skipped and the next one tried; skipping in-bailiwick
glue (Result.required_additional) sets TC (RFC 9471), skipping anything else
does not. The trailer
(OPT, TSIG) is reserved first, so it always fits.
"""

from __future__ import annotations

import struct

from authd import wire
from authd.zone.answer import Result, RRsetOut
from authd.zone.names import wire_name_length

RRSIG = 46
_RR_FIXED = struct.Struct(">HHIH")
_POINTER_LIMIT = 0x4000  # offsets a 14-bit compression pointer can reach

# Where the names sit in the RDATA of types whose RDATA names may be compressed.
_SINGLE_NAME = frozenset({2, 3, 4, 5, 7, 8, 9, 12})  # NS MD MF CNAME MB MG MR PTR
_TWO_NAMES = frozenset({6, 14})  # SOA (+ 20 octets), MINFO
_MX = 15
# Types whose RDATA holds a name that must not be compressed but may later be
# pointed at (an SRV target owning additional A/AAAA, as Knot's hints do), by offset.
_REFERENCED_NAME_AT = {33: 6, 64: 2, 65: 2, 18: 2, 21: 2, 36: 2}


class _Writer:
    """Appends records to a response under a size budget, with rollback."""

    __slots__ = ("budget", "journal", "parts", "size", "table")

    def __init__(self, question: bytes, qkey: bytes, budget: int) -> None:
        self.parts: list[bytes] = []
        self.size = wire.HEADER_LEN + len(question)
        self.budget = budget
        self.table: dict[bytes, int] = {}
        self.journal: list[bytes] = []
        if qkey:
            pos = 0
            while qkey[pos]:
                self.table[qkey[pos:]] = wire.HEADER_LEN + pos
                pos += qkey[pos] + 1

    def name(self, raw: bytes, key: bytes, at: int) -> bytes:
        """raw compressed against the table (key = raw lowercased), written at offset at."""
        table = self.table
        pos = 0
        found = -1
        while key[pos]:
            ptr = table.get(key[pos:])
            if ptr is not None:
                found = ptr
                break
            pos += key[pos] + 1
        self.remember(key, pos, at)
        if found < 0:
            return raw
        return raw[:pos] + bytes((0xC0 | (found >> 8), found & 0xFF))

    def remember(self, key: bytes, end: int, at: int) -> None:
        """Record the suffixes of key written in full (labels before `end`) at offset at."""
        table = self.table
        label = 0
        while label < end and at + label < _POINTER_LIMIT:
            suffix = key[label:]
            if suffix not in table:
                table[suffix] = at + label
                self.journal.append(suffix)
            label += key[label] + 1

    def rdata(self, rtype: int, rdata: bytes, at: int) -> bytes:
        if rtype in _SINGLE_NAME:
            return self.name(rdata, wire.lower(rdata), at)
        if rtype == _MX:
            exchange = rdata[2:]
            return rdata[:2] + self.name(exchange, wire.lower(exchange), at + 2)
        if rtype in _TWO_NAMES:
            first_len = wire_name_length(rdata, 0)
            first = rdata[:first_len]
            first_out = self.name(first, wire.lower(first), at)
            second_len = wire_name_length(rdata, first_len)
            second = rdata[first_len : first_len + second_len]
            second_out = self.name(second, wire.lower(second), at + len(first_out))
            return first_out + second_out + rdata[first_len + second_len :]
        offset = _REFERENCED_NAME_AT.get(rtype)
        if offset is not None and offset < len(rdata):
            name_len = wire_name_length(rdata, offset)
            self.remember(wire.lower(rdata[offset : offset + name_len]), name_len - 1, at + offset)
        return rdata

    def rrset(
        self, owner: bytes, rtype: int, rclass: int, ttl: int, rdatas: tuple[bytes, ...]
    ) -> bool:
        """Write one RRset whole, or nothing (returning False) if it does not fit."""
        parts_mark = len(self.parts)
        journal_mark = len(self.journal)
        size = self.size
        compressible = (
            rtype in _SINGLE_NAME
            or rtype in _TWO_NAMES
            or rtype == _MX
            or rtype in _REFERENCED_NAME_AT
        )
        for rdata in rdatas:
            owner_out = self.name(owner, owner, size)
            at = size + len(owner_out) + 10
            rdata_out = self.rdata(rtype, rdata, at) if compressible else rdata
            record = owner_out + _RR_FIXED.pack(rtype, rclass, ttl, len(rdata_out)) + rdata_out
            size += len(record)
            if size > self.budget:
                self._rollback(parts_mark, journal_mark)
                return False
            self.parts.append(record)
        self.size = size
        return True

    def _rollback(self, parts_mark: int, journal_mark: int) -> None:
        del self.parts[parts_mark:]
        for suffix in self.journal[journal_mark:]:
            del self.table[suffix]
        del self.journal[journal_mark:]


def _additional(writer: _Writer, result: Result, rclass: int) -> tuple[int, bool]:
    """Additional data, then its RRSIGs; each RRset that does not fit is skipped and
    the next one tried (as Knot does). Truncated only if glue was skipped."""
    count = 0
    truncated = False
    written: list[RRsetOut] = []
    for position, rrset in enumerate(result.additional):
        if writer.rrset(rrset.owner, rrset.rtype, rclass, rrset.ttl, rrset.rdatas):
            written.append(rrset)
            count += len(rrset.rdatas)
        elif position < result.required_additional:
            truncated = True
    for rrset in written:
        sigs = rrset.sigs
        if sigs and sigs[1] and writer.rrset(rrset.owner, RRSIG, rclass, sigs[0], sigs[1]):
            count += len(sigs[1])
    return count, truncated


def render(
    query_flags: int,
    question: bytes,
    qkey: bytes,
    result: Result,
    limit: int,
    trailer: bytes = b"",
    trailer_count: int = 0,
    *,
    ident: int = 0,
    rclass: int = wire.CLASS_IN,
) -> bytes:
    """The response bytes for `result`, at most `limit` octets (unless the bare
    header, question and trailer alone exceed it)."""
    writer = _Writer(question, qkey, limit - len(trailer))
    truncated = False
    counts = [0, 0, 0]
    sections = (result.answer, result.authority, result.additional)
    for index, rrsets in enumerate(sections[:2]):
        written: list[RRsetOut] = []
        for rrset in rrsets:
            if not writer.rrset(rrset.owner, rrset.rtype, rclass, rrset.ttl, rrset.rdatas):
                truncated = True
                break
            written.append(rrset)
            counts[index] += len(rrset.rdatas)
        if truncated:
            break
        for rrset in written:
            sigs = rrset.sigs
            if sigs is None or not sigs[1]:
                continue
            if not writer.rrset(rrset.owner, RRSIG, rclass, sigs[0], sigs[1]):
                truncated = True
                break
            counts[index] += len(sigs[1])
        if truncated:
            break
    if not truncated:
        counts[2], truncated = _additional(writer, result, rclass)
    flags = wire.response_flags(query_flags, aa=result.aa, rcode=result.rcode)
    if truncated:
        flags |= wire.TC
    head = wire.header(
        ident, flags, 1 if question else 0, counts[0], counts[1], counts[2] + trailer_count
    )
    return b"".join((head, question, *writer.parts, trailer))


def render_empty(
    ident: int,
    query_flags: int,
    question: bytes,
    rcode: int,
    trailer: bytes = b"",
    trailer_count: int = 0,
    *,
    aa: bool = False,
) -> bytes:
    """A response without records (errors, REFUSED, FORMERR...), the question echoed."""
    flags = wire.response_flags(query_flags, aa=aa, rcode=rcode)
    head = wire.header(ident, flags, 1 if question else 0, 0, 0, trailer_count)
    return head + question + trailer


def _suffixes(key: bytes, out: set[bytes]) -> None:
    pos = 0
    while key[pos]:
        out.add(key[pos:])
        pos += key[pos] + 1


def compression_names(result: Result) -> frozenset[bytes]:
    """Every name suffix render() may look up in its compression table for `result`.

    render() depends on the question only through which of these suffixes the
    question's name ends with (and through its length): two questions of equal
    length that end with the same ones get the same bytes after the question.
    The responder uses that to share one rendered negative answer between names.
    """
    out: set[bytes] = set()
    for section in (result.answer, result.authority, result.additional):
        for rrset in section:
            _suffixes(rrset.owner, out)
            rtype = rrset.rtype
            for rdata in rrset.rdatas:
                if rtype in _SINGLE_NAME:
                    _suffixes(wire.lower(rdata), out)
                elif rtype == _MX:
                    _suffixes(wire.lower(rdata[2:]), out)
                elif rtype in _TWO_NAMES:
                    first_len = wire_name_length(rdata, 0)
                    second_len = wire_name_length(rdata, first_len)
                    _suffixes(wire.lower(rdata[:first_len]), out)
                    _suffixes(wire.lower(rdata[first_len : first_len + second_len]), out)
                elif rtype in _REFERENCED_NAME_AT and _REFERENCED_NAME_AT[rtype] < len(rdata):
                    offset = _REFERENCED_NAME_AT[rtype]
                    name_len = wire_name_length(rdata, offset)
                    _suffixes(wire.lower(rdata[offset : offset + name_len]), out)
    return frozenset(out)
