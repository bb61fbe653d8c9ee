"""Hot-path DNS codec on raw bytes: header, question, OPT, TSIG position.

`parse_query` classifies a datagram the way Knot DNS does:
- None: no reply at all (header shorter than 12 bytes, QR=1, QDCOUNT > 1, a
  question that cannot be parsed: label > 63, name > 255, compression pointer,
  truncated);
- a Query with `formerr` set: answer FORMERR with the question echoed (QDCOUNT=0,
  malformed records after the question, a second OPT, OPT outside the
  additional section, TSIG not last, trailing bytes);
- a Query ready to be answered.

Only the header, the question and the OPT/TSIG records are decoded; other
records in a query are checked for structure and skipped. No dnspython here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_LEN = 12
MAX_NAME = 255
MAX_LABEL = 63

# Header flag bits in the 16-bit flags word.
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100

OPCODE_QUERY, OPCODE_NOTIFY, OPCODE_UPDATE = 0, 4, 5
OPT, TSIG = 41, 250
CLASS_IN, CLASS_CH, CLASS_ANY = 1, 3, 255
EDNS_DO = 0x8000
OPTION_NSID = 3
OPTION_EDE = 15

_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_HEADER = struct.Struct(">HHHHHH")
_RR_FIXED = struct.Struct(">HHIH")  # type, class, ttl, rdlength
_MAX_POINTER_HOPS = 64

# RDATA lengths Knot enforces for fixed-size types in queries (A, AAAA).
_FIXED_RDLEN = {1: 4, 28: 16}


@dataclass(frozen=True, slots=True)
class Edns:
    """The client's OPT record."""

    payload: int  # advertised UDP payload size (the OPT class field)
    version: int
    do: bool
    nsid: bool  # the NSID option was present (RFC 5001)
    options: bytes = b""  # the OPT RDATA as sent (serve/edns.py reads the rest)


@dataclass(frozen=True, slots=True)
class Tsig:
    """The position of a TSIG record (last in the additional section)."""

    key_name: bytes  # uncompressed wire name, as sent
    rdata: bytes  # uncompressed RDATA, as sent


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int  # the whole 16-bit flags word (opcode, RD, CD, ...)
    qdcount: int
    question_end: int  # offset after the question (12 when QDCOUNT=0)
    qname: bytes  # wire name exactly as sent (case preserved); b"" when QDCOUNT=0
    qkey: bytes  # qname lowercased
    qtype: int
    qclass: int
    edns: Edns | None  # None without OPT, or when the records could not be parsed
    tsig: Tsig | None
    formerr: bool

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11

    @property
    def question(self) -> bytes:
        """Not a slice of the query: callers hold their own bytes."""
        return self.qname + struct.pack(">HH", self.qtype, self.qclass) if self.qdcount else b""


def lower(data: bytes) -> bytes:
    return data.translate(_LOWER)


def question_name_end(data: bytes, pos: int) -> int:
    """Offset after an uncompressed name starting at pos, or -1 if it is invalid.

    Compression pointers are not allowed in the question (RFC 1035 allows
    them, but Knot and NSD drop such queries and so do we).
    """
    end = len(data)
    start = pos
    while True:
        if pos >= end:
            return -1
        length = data[pos]
        if length == 0:
            pos += 1
            return pos if pos - start <= MAX_NAME else -1
        if length > MAX_LABEL:
            return -1
        pos += length + 1
        if pos - start > MAX_NAME:
            return -1


def read_name(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """A possibly compressed name: (uncompressed wire name, offset after it), or None.

    Pointers must point backwards (no loops), within the hop limit.
    """
    end = len(data)
    out = bytearray()
    after = -1
    hops = 0
    while True:
        if pos >= end:
            return None
        length = data[pos]
        if length == 0:
            out.append(0)
            return bytes(out), (pos + 1 if after < 0 else after)
        if length & 0xC0 == 0xC0:
            if pos + 1 >= end:
                return None
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= pos or hops >= _MAX_POINTER_HOPS:
                return None
            if after < 0:
                after = pos + 2
            hops += 1
            pos = target
            continue
        if length > MAX_LABEL:
            return None
        if pos + 1 + length > end:
            return None
        out += data[pos : pos + 1 + length]
        if len(out) + 1 > MAX_NAME:
            return None
        pos += 1 + length


def parse_options(rdata: bytes) -> tuple[bool, bool]:
    """(well formed, NSID present) for the options of an OPT record."""
    pos = 0
    end = len(rdata)
    nsid = False
    while pos < end:
        if pos + 4 > end:
            return False, False
        code = (rdata[pos] << 8) | rdata[pos + 1]
        length = (rdata[pos + 2] << 8) | rdata[pos + 3]
        pos += 4 + length
        if pos > end:
            return False, False
        if code == OPTION_NSID:
            nsid = True
    return True, nsid


def parse_query(data: bytes) -> Query | None:
    """Classify and decode a query; see the module docstring."""
    if len(data) < HEADER_LEN:
        return None
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
    if flags & QR or qdcount > 1:
        return None
    qname = b""
    qtype = qclass = 0
    pos = HEADER_LEN
    if qdcount == 1:
        name_end = question_name_end(data, pos)
        if name_end < 0 or name_end + 4 > len(data):
            return None
        qname = data[pos:name_end]
        qtype = (data[name_end] << 8) | data[name_end + 1]
        qclass = (data[name_end + 2] << 8) | data[name_end + 3]
        pos = name_end + 4
    question_end = pos
    records = _parse_records(data, pos, ancount, nscount, arcount)

    def make(edns: Edns | None, tsig: Tsig | None, formerr: bool) -> Query:
        return Query(
            id=ident,
            flags=flags,
            qdcount=qdcount,
            question_end=question_end,
            qname=qname,
            qkey=lower(qname),
            qtype=qtype,
            qclass=qclass,
            edns=edns,
            tsig=tsig,
            formerr=formerr,
        )

    if records is None:
        return make(None, None, True)
    edns, tsig = records
    return make(edns, tsig, qdcount == 0)


def _parse_records(
    data: bytes, pos: int, ancount: int, nscount: int, arcount: int
) -> tuple[Edns | None, Tsig | None] | None:
    """Walk every record after the question; None when anything is malformed."""
    end = len(data)
    edns: Edns | None = None
    tsig: Tsig | None = None
    total = ancount + nscount + arcount
    additional_start = ancount + nscount
    for index in range(total):
        if tsig is not None:
            return None  # TSIG must be the last record
        name = read_name(data, pos)
        if name is None:
            return None
        owner, pos = name
        if pos + 10 > end:
            return None
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        pos += 10
        if pos + rdlength > end:
            return None
        rdata = data[pos : pos + rdlength]
        pos += rdlength
        fixed = _FIXED_RDLEN.get(rtype)
        if fixed is not None and rdlength != fixed and rclass != CLASS_ANY:
            return None
        if rtype == OPT:
            if edns is not None or index < additional_start:
                return None
            ok, nsid = parse_options(rdata)
            if not ok:
                return None
            edns = Edns(rclass, (ttl >> 16) & 0xFF, bool(ttl & EDNS_DO), nsid, rdata)
        elif rtype == TSIG:
            if index < additional_start:
                return None
            tsig_rdata = _tsig_rdata(data, pos - rdlength, pos)
            if tsig_rdata is None:
                return None
            tsig = Tsig(owner, tsig_rdata)
    if pos != end:
        return None
    return edns, tsig


def _tsig_rdata(data: bytes, start: int, end: int) -> bytes | None:
    """TSIG RDATA with its algorithm name uncompressed, checked for structure."""
    name = read_name(data[:end], start)
    if name is None:
        return None
    algorithm, pos = name
    # time signed (6), fudge (2), MAC size (2) + MAC, original id (2), error (2), other len (2)
    if pos + 10 > end:
        return None
    mac_size = (data[pos + 8] << 8) | data[pos + 9]
    pos += 10 + mac_size
    if pos + 6 > end:
        return None
    other_len = (data[pos + 4] << 8) | data[pos + 5]
    if pos + 6 + other_len != end:
        return None
    return algorithm + data[name[1] : end]


def udp_limit(edns: Edns | None, our_payload: int) -> int:
    """Largest UDP response: min(max(512, client's size), ours); 512 without EDNS."""
    if edns is None:
        return 512
    return min(max(512, edns.payload), our_payload)


def opt_record(payload: int, ext_rcode: int, do: bool, options: bytes = b"") -> bytes:
    """Our OPT RR: root owner, our payload, extended rcode, version 0, DO copied."""
    return (
        b"\x00\x00\x29"
        + struct.pack(">HBBHH", payload, ext_rcode, 0, EDNS_DO if do else 0, len(options))
        + options
    )


def edns_option(code: int, value: bytes) -> bytes:
    return struct.pack(">HH", code, len(value)) + value


def response_flags(query_flags: int, *, aa: bool = False, rcode: int = 0) -> int:
    """QR=1, opcode and RD copied, AA as given; TC, RA, Z, AD and CD cleared."""
    return QR | (query_flags & (OPCODE_MASK | RD)) | (AA if aa else 0) | (rcode & 0xF)


def header(ident: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return _HEADER.pack(ident, flags, qd, an, ns, ar)
