"""Every response decoded twice, by dnspython and by dnslib, which must agree.

dnspython is what the tests normally read responses with; dnslib is a second, independent
decoder (its own name decompression, RR walk and RDATA classes). Both turn a message into
the same plain form: the header's ID and flags, the question, and answer, authority and
additional as ordered (owner, type, class, TTL, RDATA) records, EDNS OPT and TSIG included
in the additional section as the records they are on the wire. Owners are label tuples
(case kept); RDATA is the uncompressed wire form each library writes back from what it
decoded, or the raw RDATA octets for the types dnslib has no class for (and for OPT, whose
options dnslib cannot hold when one is empty).

`disagreement(wire)` is None when both decode the message to the same form or both reject
it, and otherwise says what differs: a message one decoder accepts and the other rejects is
reported, never skipped. The two decoders are held to the same framing rules (each RR's
RDATA exactly as long as RDLENGTH says, no octets after the last RR), and one dnslib
restriction is lifted: it refuses labels that are not UTF-8, while RFC 2181 section 11
allows any octet in a label (and servers echo such query names).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dnslib

Name = tuple[bytes, ...]
Question = tuple[Name, int, int]
Record = tuple[Name, int, int, int, bytes]  # owner, type, class, TTL, RDATA

OPT = 41
TSIG = 250


@dataclass(frozen=True)
class Decoded:
    header: tuple[int, int]  # ID, flags (opcode and rcode bits included)
    question: tuple[Question, ...]
    answer: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]


class DecodeError(Exception):
    """The decoder rejects the message; the text says where and why."""


# -- dnspython ----------------------------------------------------------------------------


def _labels(name: dns.name.Name) -> Name:
    return tuple(label for label in name.labels if label)


def with_dnspython(wire: bytes) -> Decoded:
    try:
        message = dns.message.from_wire(wire, keyring=False, one_rr_per_rrset=True)
    except dns.message.UnknownTSIGKey:
        raise AssertionError("keyring=False must not look TSIG keys up") from None
    except (dns.exception.DNSException, ValueError, struct.error) as error:
        raise DecodeError(f"{type(error).__name__}: {error}") from error

    def records(section: list[dns.rrset.RRset]) -> tuple[Record, ...]:
        return tuple(
            (_labels(rrset.name), int(rrset.rdtype), int(rrset.rdclass), rrset.ttl, rd.to_wire())
            for rrset in section
            for rd in rrset
        )

    additional = list(records(message.additional))
    for pseudo in (message.opt, message.tsig):
        if pseudo is not None:
            additional += records([pseudo])
    question = tuple(
        (_labels(rrset.name), int(rrset.rdtype), int(rrset.rdclass)) for rrset in message.question
    )
    return Decoded(
        (message.id, int(message.flags)),  # the whole 16-bit field as on the wire
        question,
        records(message.answer),
        records(message.authority),
        tuple(additional),
    )


# -- dnslib -------------------------------------------------------------------------------


class _Octets(bytes):
    """Label octets that decode() to text whatever they hold (see the module docstring)."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes.decode(self, encoding, "surrogateescape")


class _ReadBuffer(dnslib.DNSBuffer):  # type: ignore[misc]
    def get(self, length: int) -> bytes:
        return _Octets(super().get(length))


class _PlainBuffer(dnslib.DNSBuffer):  # type: ignore[misc]
    """Writes names uncompressed, so RDATA comes out in the same form as dnspython's."""

    def encode_name(self, name: object) -> None:
        self.encode_name_nocompress(name)


def _dnslib_rdata(rtype: int, rdata: object, raw: bytes) -> bytes:
    if rtype == OPT or type(rdata) is dnslib.RD:
        return raw
    out = _PlainBuffer()
    rdata.pack(out)  # type: ignore[attr-defined]
    return bytes(out.data)


def _dnslib_record(buffer: _ReadBuffer) -> Record:
    owner = buffer.decode_name()
    rtype, rclass, ttl, rdlength = buffer.unpack("!HHIH")
    start = buffer.offset
    raw = bytes(buffer.data[start : start + rdlength])
    if len(raw) != rdlength:
        raise dnslib.DNSError(f"RDATA of {rdlength} octets runs past the end")
    if rtype == OPT:
        buffer.offset = start + rdlength
        rdata: object = raw
    elif rdlength == 0:
        raise dnslib.DNSError("Error: Empty RR")  # as dnslib's RR.parse
    else:
        rdata = dnslib.RDMAP.get(dnslib.QTYPE.get(rtype), dnslib.RD).parse(buffer, rdlength)
    if buffer.offset != start + rdlength:
        raise dnslib.DNSError(f"RDATA decoded to {buffer.offset - start} octets, not {rdlength}")
    return (tuple(owner.label), rtype, rclass, ttl, _dnslib_rdata(rtype, rdata, raw))


def with_dnslib(wire: bytes) -> Decoded:
    """dnslib's DNSHeader, DNSQuestion, names and RDATA classes, walked RR by RR so that the
    RDLENGTH and trailing-octet checks apply (DNSRecord.parse makes neither)."""
    buffer = _ReadBuffer(wire)
    try:
        header = dnslib.DNSHeader.parse(buffer)
        question = tuple(
            (tuple(q.qname.label), q.qtype, q.qclass)
            for q in (dnslib.DNSQuestion.parse(buffer) for _ in range(header.q))
        )
        sections = [
            tuple(_dnslib_record(buffer) for _ in range(count))
            for count in (header.a, header.auth, header.ar)
        ]
        if buffer.remaining():
            raise dnslib.DNSError(f"{buffer.remaining()} octets after the last record")
    except Exception as error:  # dnslib raises many types on malformed input: all are rejects
        raise DecodeError(f"{type(error).__name__}: {error}") from error
    return Decoded((header.id, header.bitmap), question, *sections)


# -- the comparison -----------------------------------------------------------------------


def _record_text(record: Record | Question) -> str:
    owner = b".".join(record[0]).decode("ascii", "backslashreplace") or "."
    kind = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(record[1]))
    rest = " ".join(str(v) if not isinstance(v, bytes) else v.hex() for v in record[2:])
    return f"{owner} {kind} {rest}"


def disagreement(wire: bytes) -> str | None:
    """None when dnspython and dnslib decode `wire` alike (or both reject it), else why not."""
    try:
        ours = with_dnspython(wire)
    except DecodeError as error:
        ours_error: str | None = str(error)
    else:
        ours_error = None
    try:
        theirs = with_dnslib(wire)
    except DecodeError as error:
        if ours_error is None:
            return f"dnslib rejects what dnspython accepts: {error}"
        return None
    if ours_error is not None:
        return f"dnspython rejects ({ours_error}) what dnslib accepts"
    if ours == theirs:
        return None
    lines = []
    for part in ("header", "question", "answer", "authority", "additional"):
        a, b = getattr(ours, part), getattr(theirs, part)
        if a == b:
            continue
        if part == "header":
            lines.append(f"header: dnspython {a}, dnslib {b}")
            continue
        for index in range(max(len(a), len(b))):
            left = _record_text(a[index]) if index < len(a) else "(none)"
            right = _record_text(b[index]) if index < len(b) else "(none)"
            if left != right:
                lines.append(f"{part}[{index}]: dnspython {left} / dnslib {right}")
    return "; ".join(lines)
