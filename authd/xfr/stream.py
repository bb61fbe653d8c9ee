"""Zone transfer messages on raw wire bytes: a fast parser and the AXFR/IXFR assembler.

No sockets and no clock here (the caller passes `now`), so every rule below is
tested and fuzzed without I/O.

- `parse_message(wire)` reads one DNS message straight into Records
  (owner key lowercased, type, ttl, uncompressed RDATA). Names inside RDATA are
  decompressed only for the types that may carry compression pointers
  (RFC 3597 section 4); every other RDATA is a plain slice of the message.
- `TsigVerifier` checks the TSIG of every message of a multi-message answer with
  dnspython's `dns.tsig.validate`, chaining the MACs as RFC 8945 5.3.1 says, and
  adds what dnspython leaves out: at most 99 unsigned messages in a row.
- `TransferAssembler` turns the message sequence into a new Snapshot (AXFR,
  or an IXFR answered AXFR-style) or into IXFR diff steps applied to the
  current Snapshot, enforcing the limits as soon as they are crossed.

Every problem raises `StreamError(fault, reason)`; the reason names the record.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from enum import Enum

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from authd.xfr import serial as serials
from authd.zone import names
from authd.zone.snapshot import (
    DNAME,
    NODE_ENTRY,
    NS,
    NSEC3,
    RDATA_LENGTH,
    RRSIG,
    SOA,
    Record,
    Snapshot,
    ZoneError,
    build_compact,
    is_sig_type,
    parse_soa,
    sig_type,
    snapshot_from_blobs,
)

CLASS_IN = 1
TYPE_OPT = 41
TYPE_TSIG = 250
OPTION_EXPIRE = 9  # EDNS EXPIRE (RFC 7314)
TYPE_IXFR = 251
TYPE_AXFR = 252
MAX_UNSIGNED_IN_A_ROW = 99  # RFC 8945 5.3.1

_HEADER = struct.Struct(">HHHHHH")
_RR_FIXED = struct.Struct(">HHIH")
_QUESTION_TAIL = struct.Struct(">HH")


class Fault(Enum):
    """Why a transfer stream was rejected; transfer.py maps these to outcomes."""

    MALFORMED = "malformed"
    RCODE = "rcode"
    BAD_TSIG = "bad-tsig"
    TOO_BIG = "too-big"
    DIFF_MISMATCH = "diff-mismatch"


class StreamError(Exception):
    def __init__(self, fault: Fault, reason: str, *, rcode: int | None = None) -> None:
        super().__init__(reason)
        self.fault = fault
        self.reason = reason
        self.rcode = rcode


@dataclass(frozen=True, slots=True)
class TransferLimits:
    """Caps on one transfer; each aborts the transfer as soon as it is crossed."""

    max_records: int = 20_000_000
    max_bytes: int = 4 << 30
    max_rrset_records: int = 100_000
    max_ixfr_records: int = 1_000_000


def rcode_text(rcode: int) -> str:
    try:
        return dns.rcode.to_text(dns.rcode.Rcode(rcode))
    except ValueError:
        return str(rcode)


# -- parsing ------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    """One parsed transfer message. `records` is the answer section."""

    id: int
    flags: int
    rcode: int
    qname: bytes | None
    qtype: int
    qclass: int
    records: list[Record]
    tsig_start: int = -1  # offset of the TSIG RR, -1 when unsigned
    tsig_owner: bytes = b""
    tsig_rdata_start: int = 0
    tsig_rdata_length: int = 0
    ignored: list[str] = field(default_factory=list)
    expire: int | None = None  # the OPT's EDNS EXPIRE value (RFC 7314), when it has one


def _read_name(wire: bytes, pos: int, cache: dict[int, bytes]) -> tuple[bytes, int]:
    """Decompress the name at pos; returns (uncompressed wire name, offset after it).

    Pointers must point strictly backwards, so decompression always ends.
    `cache` maps a message offset to the name that starts there.
    """
    start = pos
    end = len(wire)
    while True:
        if pos >= end:
            raise StreamError(Fault.MALFORMED, f"name at offset {start} runs past the message")
        length = wire[pos]
        if length == 0:
            name = wire[start : pos + 1]
            if len(name) > 255:
                raise StreamError(Fault.MALFORMED, f"name at offset {start} is over 255 octets")
            cache[start] = name
            return name, pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 1 >= end:
                raise StreamError(Fault.MALFORMED, f"pointer at offset {pos} is cut off")
            target = ((length & 0x3F) << 8) | wire[pos + 1]
            if target >= start:
                raise StreamError(Fault.MALFORMED, f"compression pointer at {pos} points forward")
            suffix = cache.get(target)
            if suffix is None:
                suffix = _read_name(wire, target, cache)[0]
            name = wire[start:pos] + suffix
            if len(name) > 255:
                raise StreamError(Fault.MALFORMED, f"name at offset {start} is over 255 octets")
            cache[start] = name
            return name, pos + 2
        if length & 0xC0:
            raise StreamError(Fault.MALFORMED, f"unknown label type at offset {pos}")
        pos += length + 1


# Layout of RDATA for the types that may carry compressed names (RFC 3597 4):
# a tuple of steps, each "n" (a name), an int (fixed octets) or "s" (a character-string);
# "*" copies the remaining octets.
_N, _S, _REST = "n", "s", "*"
_COMPRESSIBLE: dict[int, tuple[str | int, ...]] = {
    2: (_N,),  # NS
    3: (_N,),  # MD
    4: (_N,),  # MF
    5: (_N,),  # CNAME
    6: (_N, _N, 20),  # SOA
    7: (_N,),  # MB
    8: (_N,),  # MG
    9: (_N,),  # MR
    12: (_N,),  # PTR
    14: (_N, _N),  # MINFO
    15: (2, _N),  # MX
    17: (_N, _N),  # RP
    18: (2, _N),  # AFSDB
    21: (2, _N),  # RT
    24: (18, _N, _REST),  # SIG
    26: (2, _N, _N),  # PX
    30: (_N, _REST),  # NXT
    33: (6, _N),  # SRV
    35: (4, _S, _S, _S, _N),  # NAPTR
}


def _decompress_rdata(
    wire: bytes, pos: int, end: int, layout: tuple[str | int, ...], cache: dict[int, bytes]
) -> bytes:
    parts: list[bytes] = []
    for step in layout:
        if step == _N:
            name, after = _read_name(wire, pos, cache)
            if after > end:
                raise StreamError(Fault.MALFORMED, f"name in RDATA at {pos} overruns the RDATA")
            parts.append(name)
            pos = after
        elif step == _S:
            if pos >= end:
                raise StreamError(Fault.MALFORMED, f"character-string at {pos} is cut off")
            after = pos + 1 + wire[pos]
            if after > end:
                raise StreamError(Fault.MALFORMED, f"character-string at {pos} overruns RDATA")
            parts.append(wire[pos:after])
            pos = after
        elif step == _REST:
            parts.append(wire[pos:end])
            pos = end
        else:
            assert isinstance(step, int)
            if pos + step > end:
                raise StreamError(Fault.MALFORMED, f"RDATA at {pos} is shorter than its type")
            parts.append(wire[pos : pos + step])
            pos += step
    if pos != end:
        raise StreamError(Fault.MALFORMED, f"RDATA at {pos} has {end - pos} trailing octets")
    return b"".join(parts)


def parse_message(wire: bytes) -> Message:
    """Parse one transfer message (answer records, question, TSIG position).

    Raises StreamError(MALFORMED) for anything that is not a well-formed message
    or an answer record whose class is not IN.
    """
    if len(wire) < 12:
        raise StreamError(
            Fault.MALFORMED, f"message of {len(wire)} octets is shorter than a header"
        )
    msg_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire, 0)
    cache: dict[int, bytes] = {}
    pos = 12
    end = len(wire)
    qname: bytes | None = None
    qtype = qclass = 0
    if qdcount > 1:
        raise StreamError(Fault.MALFORMED, f"{qdcount} questions in one message")
    if qdcount:
        name, pos = _read_name(wire, pos, cache)
        if pos + 4 > end:
            raise StreamError(Fault.MALFORMED, "question is cut off")
        qname = names.lower(name)
        qtype, qclass = _QUESTION_TAIL.unpack_from(wire, pos)
        pos += 4
    records: list[Record] = []
    lower = names.lower
    owners: dict[int, bytes] = {}  # offset -> lowercased owner key decoded there
    if qname is not None:
        owners[12] = qname
    append = records.append
    unpack_fixed = _RR_FIXED.unpack_from
    compressible = _COMPRESSIBLE
    message = Message(msg_id, flags, flags & 0xF, qname, qtype, qclass, records)
    for _ in range(ancount):
        rr_start = pos
        owner = None
        if pos + 1 < end and wire[pos] >= 0xC0:
            # The usual case: the owner is one pointer to a name seen before.
            target = ((wire[pos] & 0x3F) << 8) | wire[pos + 1]
            owner = owners.get(target)
            if owner is not None:
                pos += 2
        if owner is None and pos + 2 < end and wire[pos] < 64:
            # The next most usual: one label, then a pointer to an owner seen before.
            after_label = pos + 1 + wire[pos]
            if after_label + 1 < end and wire[after_label] >= 0xC0:
                suffix = owners.get(((wire[after_label] & 0x3F) << 8) | wire[after_label + 1])
                if suffix is not None and after_label - pos + len(suffix) <= 255:
                    owner = lower(wire[pos:after_label]) + suffix
                    owners[rr_start] = owner
                    pos = after_label + 2
        if owner is None:
            name, pos = _read_name(wire, pos, cache)
            owner = lower(name)
            owners[rr_start] = owner
            if wire[rr_start] >= 0xC0:
                owners[((wire[rr_start] & 0x3F) << 8) | wire[rr_start + 1]] = owner
        if pos + 10 > end:
            raise StreamError(Fault.MALFORMED, f"record at offset {rr_start} is cut off")
        rtype, rclass, ttl, rdlength = unpack_fixed(wire, pos)
        pos += 10
        rdata_end = pos + rdlength
        if rdata_end > end:
            raise StreamError(
                Fault.MALFORMED, f"RDATA of record at offset {rr_start} runs past end"
            )
        if rclass != CLASS_IN:
            raise StreamError(
                Fault.MALFORMED,
                f"{names.to_text(owner)} type {rtype} has class {rclass}, not IN",
            )
        layout = compressible.get(rtype)
        if layout is None:
            rdata = wire[pos:rdata_end]
        else:
            rdata = _decompress_rdata(wire, pos, rdata_end, layout, cache)
        append((owner, rtype, ttl, rdata))
        pos = rdata_end
    total = ancount + nscount + arcount
    for index in range(ancount, total):
        rr_start = pos
        owner, pos = _read_name(wire, pos, cache)
        if pos + 10 > end:
            raise StreamError(Fault.MALFORMED, f"record at offset {rr_start} is cut off")
        rtype, rclass, ttl, rdlength = unpack_fixed(wire, pos)
        pos += 10
        rdata_end = pos + rdlength
        if rdata_end > end:
            raise StreamError(
                Fault.MALFORMED, f"RDATA of record at offset {rr_start} runs past end"
            )
        if index >= ancount + nscount:
            if rtype == TYPE_TSIG:
                if index != total - 1:
                    raise StreamError(Fault.MALFORMED, "TSIG is not the last record")
                message.tsig_start = rr_start
                message.tsig_owner = names.lower(owner)
                message.tsig_rdata_start = pos
                message.tsig_rdata_length = rdlength
            elif rtype == TYPE_OPT:
                # The extended rcode lives in the OPT TTL's top byte (RFC 6891 6.1.3).
                message.rcode |= (ttl >> 24) << 4
                message.expire = edns_expire(wire, pos, rdata_end)
        pos = rdata_end
    if pos != end:
        raise StreamError(Fault.MALFORMED, f"{end - pos} octets of trailing data after the message")
    return message


def edns_expire(wire: bytes, pos: int, end: int) -> int | None:
    """The value of the first 4-octet EXPIRE option (code 9, RFC 7314) in the OPT RDATA
    at wire[pos:end], or None (an option of another length is not an answer's EXPIRE)."""
    while pos + 4 <= end:
        code = (wire[pos] << 8) | wire[pos + 1]
        length = (wire[pos + 2] << 8) | wire[pos + 3]
        pos += 4
        if pos + length > end:
            return None
        if code == OPTION_EXPIRE:
            return int.from_bytes(wire[pos : pos + 4]) if length == 4 else None
        pos += length
    return None


_TSIG_ERRORS = {16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC"}


def _peer_error(rdata: dns.rdtypes.ANY.TSIG.TSIG, now: float) -> str:
    """The primary refused our signature; for BADTIME say how far apart the clocks are."""
    name = _TSIG_ERRORS.get(rdata.error, str(rdata.error))
    reason = f"the primary rejected our TSIG: {name}"
    if rdata.error == 18 and len(rdata.other) == 6:
        upper, lower = struct.unpack(">HI", rdata.other)
        offset = ((upper << 32) | lower) - int(now)
        reason += f" (its clock is {offset:+d} s from ours, fudge {rdata.fudge} s)"
    return reason


# -- TSIG ---------------------------------------------------------------------------


class TsigVerifier:
    """TSIG over a sequence of messages answering one signed request (RFC 8945 5.3.1).

    The first and the last message must be signed, and no more than 99 messages
    in a row may be unsigned; the MAC chains across messages (dnspython's context).
    """

    def __init__(self, key: dns.tsig.Key, request_mac: bytes) -> None:
        self.key = key
        self.key_owner = names.key_from_name(key.name)
        self.request_mac = request_mac
        self._ctx: object | None = None
        self._seen = 0
        self._unsigned_run = 0

    def check(self, wire: bytes, message: Message, now: float) -> None:
        first = self._seen == 0
        self._seen += 1
        if message.tsig_start < 0:
            if first:
                raise StreamError(Fault.BAD_TSIG, "the answer is not signed but a key is set")
            self._unsigned_run += 1
            if self._unsigned_run > MAX_UNSIGNED_IN_A_ROW:
                raise StreamError(
                    Fault.BAD_TSIG,
                    f"more than {MAX_UNSIGNED_IN_A_ROW} unsigned messages in a row "
                    "(RFC 8945 5.3.1)",
                )
            assert self._ctx is not None
            self._ctx.update(wire)  # type: ignore[attr-defined]
            return
        try:
            rdata = dns.rdata.from_wire(
                dns.rdataclass.ANY,
                dns.rdatatype.TSIG,
                wire,
                message.tsig_rdata_start,
                message.tsig_rdata_length,
            )
        except dns.exception.DNSException as error:
            raise StreamError(Fault.MALFORMED, f"unreadable TSIG record: {error}") from error
        assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
        if rdata.error:
            raise StreamError(Fault.BAD_TSIG, _peer_error(rdata, now))
        if message.tsig_owner != self.key_owner:
            raise StreamError(
                Fault.BAD_TSIG,
                f"signed with key {names.to_text(message.tsig_owner)}, "
                f"expected {self.key.name.to_text()}",
            )
        clock = int(now)
        try:
            self._ctx = dns.tsig.validate(  # type: ignore[no-untyped-call]
                wire,
                self.key,
                self.key.name,
                rdata,
                clock,
                self.request_mac if first else b"",
                message.tsig_start,
                self._ctx,
                True,
            )
        except dns.tsig.BadTime as error:
            offset = rdata.time_signed - clock
            raise StreamError(
                Fault.BAD_TSIG,
                f"TSIG time is {offset:+d} s off our clock (fudge {rdata.fudge} s)",
            ) from error
        except dns.tsig.BadAlgorithm as error:
            raise StreamError(
                Fault.BAD_TSIG, f"TSIG algorithm {rdata.algorithm} does not match the key"
            ) from error
        except (dns.tsig.BadSignature, dns.exception.DNSException) as error:
            raise StreamError(Fault.BAD_TSIG, f"TSIG does not verify ({error!r})") from error
        self._unsigned_run = 0

    def finish(self) -> None:
        if self._unsigned_run:
            raise StreamError(
                Fault.BAD_TSIG, f"the last {self._unsigned_run} message(s) are not signed"
            )


def sign_message(
    wire: bytes,
    key: dns.tsig.Key,
    now: float,
    *,
    request_mac: bytes = b"",
    fudge: int = 300,
) -> tuple[bytes, bytes]:
    """Append a TSIG RR signed at `now` to an unsigned message; returns (wire, its MAC).

    `request_mac` is the request's MAC when signing a response (RFC 8945 4.2).
    """
    if key.algorithm == dns.tsig.GSS_TSIG:
        return _sign_with_dnspython(wire, key, now, request_mac, fudge)
    # RFC 8945 4.3.3 on bytes: the same MAC and record as dns.tsig.sign, without building
    # rdata objects (that path cost ~0.1 ms per SOA query or transfer).
    key_name, algorithm, owner, algorithm_wire = _tsig_names(key.name, key.algorithm)
    signed_at = int(now)
    time_fudge = struct.pack(">HIH", (signed_at >> 32) & 0xFFFF, signed_at & 0xFFFFFFFF, fudge)
    context = dns.tsig.get_context(key)  # type: ignore[no-untyped-call]
    if request_mac:
        context.update(struct.pack(">H", len(request_mac)) + request_mac)
    context.update(wire)
    context.update(key_name + b"\x00\xff\x00\x00\x00\x00")  # class ANY, TTL 0
    context.update(algorithm + time_fudge + b"\x00\x00\x00\x00")  # error 0, no other data
    mac = bytes(context.sign())
    rdata = (
        algorithm_wire
        + time_fudge
        + struct.pack(">H", len(mac))
        + mac
        + wire[:2]  # original ID
        + b"\x00\x00\x00\x00"
    )
    record = owner + struct.pack(">HHIH", TYPE_TSIG, dns.rdataclass.ANY, 0, len(rdata))
    arcount = struct.unpack_from(">H", wire, 10)[0] + 1
    return wire[:10] + struct.pack(">H", arcount) + wire[12:] + record + rdata, mac


@functools.lru_cache(maxsize=256)
def _tsig_names(name: dns.name.Name, algorithm: dns.name.Name) -> tuple[bytes, bytes, bytes, bytes]:
    """A key's name and algorithm in canonical wire form (lowercase: the MAC) and as
    written (the record)."""
    owner, algorithm_wire = name.to_wire(), algorithm.to_wire()
    assert owner is not None and algorithm_wire is not None
    return name.to_digestable(), algorithm.to_digestable(), owner, algorithm_wire


def _sign_with_dnspython(
    wire: bytes, key: dns.tsig.Key, now: float, request_mac: bytes, fudge: int
) -> tuple[bytes, bytes]:
    message_id = struct.unpack_from(">H", wire, 0)[0]
    template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
        dns.rdataclass.ANY, dns.rdatatype.TSIG, key.algorithm, 0, fudge, b"", message_id, 0, b""
    )
    signed, _ = dns.tsig.sign(  # type: ignore[no-untyped-call]
        wire, key, template, int(now), request_mac, None, False
    )
    return append_tsig_record(wire, key.name, signed), bytes(signed.mac)


def append_tsig_record(wire: bytes, owner: dns.name.Name, rdata: dns.rdata.Rdata) -> bytes:
    """The message with a TSIG RR added as the last additional record."""
    body = rdata.to_wire()
    assert body is not None
    owner_wire = owner.to_wire()
    assert owner_wire is not None
    record = owner_wire + struct.pack(">HHIH", TYPE_TSIG, dns.rdataclass.ANY, 0, len(body))
    arcount = struct.unpack_from(">H", wire, 10)[0] + 1
    return wire[:10] + struct.pack(">H", arcount) + wire[12:] + record + body


# -- assembly ------------------------------------------------------------------------


class Kind(Enum):
    AXFR = "AXFR"
    IXFR = "IXFR"
    AXFR_STYLE_IXFR = "AXFR-style IXFR"
    FALLBACK_AXFR = "AXFR after IXFR failed"
    UP_TO_DATE = "up-to-date"


@dataclass(frozen=True, slots=True)
class DiffStep:
    """One IXFR step: the records deleted and added, SOAs included."""

    deleted: tuple[Record, ...]
    added: tuple[Record, ...]
    from_serial: int
    to_serial: int


def _same_soa(a: bytes, b: bytes) -> bool:
    """SOA RDATA equality, with the names compared case-insensitively."""
    fa, fb = parse_soa(a), parse_soa(b)
    return (
        names.lower(fa.mname) == names.lower(fb.mname)
        and names.lower(fa.rname) == names.lower(fb.rname)
        and (fa.serial, fa.refresh, fa.retry, fa.expire, fa.minimum)
        == (fb.serial, fb.refresh, fb.retry, fb.expire, fb.minimum)
    )


def _soa_serial(rdata: bytes, owner: bytes) -> int:
    try:
        return parse_soa(rdata).serial
    except (IndexError, struct.error) as error:
        raise StreamError(Fault.MALFORMED, f"SOA of {names.to_text(owner)} is malformed") from error


_SIG_OF_COVERED = sig_type(0)


def _rrset_too_big(owner: bytes, rtype: int, limit: int) -> StreamError:
    return StreamError(
        Fault.TOO_BIG, f"{names.to_text(owner)} type {rtype} has more than {limit} records"
    )


_SINGLE_RECORD = struct.Struct(">IIHH")  # NODE_ENTRY then the RDATA_LENGTH of its one record


def _pack_collected(
    owner: bytes, collected: dict[int, list[bytes | int]], max_rrset: int
) -> tuple[bytes, int]:
    """The blob of one owner (as snapshot.pack_node lays it out) and its record count."""
    parts: list[bytes] = []
    count = 0
    for slot in sorted(collected):
        entry = collected[slot]
        rdatas = entry[1:]
        if len(rdatas) > 1:
            rdatas = list(dict.fromkeys(rdatas))
            if len(rdatas) > max_rrset:
                raise _rrset_too_big(owner, RRSIG if is_sig_type(slot) else slot, max_rrset)
        parts.append(NODE_ENTRY.pack(slot, entry[0], len(rdatas)))
        for rdata in rdatas:
            assert isinstance(rdata, bytes)
            parts.append(RDATA_LENGTH.pack(len(rdata)))
            parts.append(rdata)
        count += len(rdatas)
    return b"".join(parts), count


class TransferAssembler:
    """Consumes the messages answering one AXFR or IXFR query; pure, no I/O.

    Feed every message with `feed()` (after TSIG checks) until it returns True.
    Then `kind`, `snapshot`, `steps` and `record_count` describe the result.
    """

    def __init__(
        self,
        origin: bytes,
        qtype: int,
        query_id: int,
        limits: TransferLimits,
        current: Snapshot | None = None,
    ) -> None:
        if qtype == TYPE_IXFR and current is None:
            raise ValueError("an IXFR needs the current version")
        self.origin = origin
        self.qtype = qtype
        self.query_id = query_id
        self.limits = limits
        self.current = current
        self.current_serial = current.serial if current is not None else None
        self.kind: Kind | None = None
        self.done = False
        self.messages = 0
        self.record_count = 0
        self.opening_soa: bytes | None = None
        self.opening_ttl = 0
        self.primary_serial: int | None = None
        self.snapshot: Snapshot | None = None
        self.steps: list[DiffStep] = []
        # AXFR collection: owner -> slot -> [ttl, rdata, rdata, ...]; duplicates are
        # removed when the RRset is built (or when it reaches the per-RRset limit).
        self._nodes: dict[bytes, dict[int, list[bytes | int]]] = {}
        # IXFR state: the step being read and whether we are in its deletions.
        self._version: Snapshot | None = current
        self._deleting = False
        self._step_from = 0
        self._step_to = 0
        self._deleted: list[Record] = []
        self._added: list[Record] = []
        self._ixfr_records = 0

    # -- message level --------------------------------------------------------

    def check_header(self, message: Message) -> None:
        if message.id != self.query_id:
            raise StreamError(
                Fault.MALFORMED, f"message ID {message.id} does not match query ID {self.query_id}"
            )
        if not message.flags & 0x8000:
            raise StreamError(Fault.MALFORMED, "QR bit not set in an answer")
        if message.rcode != 0:
            raise StreamError(
                Fault.RCODE,
                f"the primary answered {rcode_text(message.rcode)}",
                rcode=message.rcode,
            )
        # RFC 5936 2.2.1: later messages may omit the question; if present it must match.
        if message.qname is None:
            if self.messages == 0:
                raise StreamError(Fault.MALFORMED, "first answer message has no question")
        elif (message.qname, message.qtype, message.qclass) != (self.origin, self.qtype, CLASS_IN):
            raise StreamError(
                Fault.MALFORMED,
                f"question {names.to_text(message.qname)} type {message.qtype} "
                f"class {message.qclass} does not match ours",
            )

    def feed(self, message: Message) -> bool:
        """Take the next message; True once the transfer is complete."""
        if self.done:
            raise StreamError(Fault.MALFORMED, "message after the end of the transfer")
        self.check_header(message)
        self.messages += 1
        records = message.records
        self.record_count += len(records)
        if self.record_count > self.limits.max_records:
            raise StreamError(
                Fault.TOO_BIG, f"more than {self.limits.max_records} records in the transfer"
            )
        start = 0
        if self.opening_soa is None:
            if not records:
                raise StreamError(Fault.MALFORMED, "first answer message holds no record")
            owner, rtype, _, rdata = records[0]
            if owner != self.origin or rtype != SOA:
                raise StreamError(
                    Fault.MALFORMED,
                    f"answer starts with {names.to_text(owner)} type {rtype}, not the zone SOA",
                )
            _soa_serial(rdata, owner)
            self.opening_soa = rdata
            self.opening_ttl = records[0][2]
            self.primary_serial = parse_soa(rdata).serial
            start = 1
            if self.qtype == TYPE_AXFR:
                self.kind = Kind.AXFR
                self._collect(records[0:1])
            elif self._opening_not_newer():
                # Not newer than ours (a lone SOA, or a primary gone backwards, which
                # only a forced AXFR may accept): nothing to take, stop reading.
                self.kind = Kind.UP_TO_DATE
                self.snapshot = self.current
                self.done = True
                return True
        if self.kind is None and start < len(records):
            # The second record decides: an SOA opens an incremental answer.
            owner, rtype, _, rdata = records[start]
            if rtype == SOA and owner == self.origin:
                self.kind = Kind.IXFR
            else:
                self.kind = Kind.AXFR_STYLE_IXFR
                assert self.opening_soa is not None
                self._collect([(self.origin, SOA, self.opening_ttl, self.opening_soa)])
        if start < len(records):
            if self.kind is Kind.IXFR:
                self._incremental(records, start)
            else:
                self._collect(records, start)
        if self.done:
            self._finish()
        return self.done

    def _opening_not_newer(self) -> bool:
        assert self.opening_soa is not None and self.current_serial is not None
        return not serials.is_newer(parse_soa(self.opening_soa).serial, self.current_serial)

    # -- AXFR (and AXFR-style IXFR) ---------------------------------------------

    def _collect(self, records: list[Record], start: int = 0) -> None:
        origin = self.origin
        opening = self.opening_soa
        nodes = self._nodes
        max_rrset = self.limits.max_rrset_records
        # Duplicates are only removed when an RRset passes 1.1x the limit, so a stream of
        # repeated records costs O(1) per record, and no RRset grows past 1.1x the limit.
        compact_at = max_rrset + max_rrset // 10 + 1
        last_owner = b""
        node: dict[int, list[bytes | int]] = {}
        for index in range(start, len(records)):
            owner, rtype, ttl, rdata = records[index]
            if owner != last_owner:
                # Usually one label below the apex; otherwise the full label-wise test.
                if owner[owner[0] + 1 :] != origin and not names.is_subdomain(owner, origin):
                    raise StreamError(
                        Fault.MALFORMED,
                        f"{names.to_text(owner)} is outside the zone {names.to_text(origin)}",
                    )
                last_owner = owner
                found = nodes.get(owner)
                if found is None:
                    found = nodes[owner] = {}
                node = found
            if rtype == SOA:
                if owner != origin:
                    raise StreamError(Fault.MALFORMED, f"SOA at {names.to_text(owner)}")
                if nodes[origin].get(SOA) is not None:
                    # The closing SOA: it must be the last record and equal the opening one.
                    assert opening is not None
                    _soa_serial(rdata, owner)
                    if not _same_soa(rdata, opening):
                        raise StreamError(
                            Fault.MALFORMED,
                            f"closing SOA (serial {parse_soa(rdata).serial}) differs from the "
                            f"opening one (serial {parse_soa(opening).serial})",
                        )
                    if index != len(records) - 1:
                        raise StreamError(Fault.MALFORMED, "records after the closing SOA")
                    self.done = True
                    return
            if rtype == RRSIG:
                if len(rdata) < 18:  # type covered .. key tag, before the signer name
                    raise StreamError(Fault.MALFORMED, f"RRSIG RDATA of {len(rdata)} octets")
                slot = _SIG_OF_COVERED | (rdata[0] << 8 | rdata[1])
            else:
                slot = rtype
            entry = node.get(slot)
            if entry is None:
                node[slot] = [ttl, rdata]
            else:
                entry.append(rdata)
                if ttl < entry[0]:  # type: ignore[operator]
                    entry[0] = ttl
                if len(entry) > compact_at:
                    # RRsets are sets: drop duplicates, keep the arrival order.
                    entry[1:] = list(dict.fromkeys(entry[1:]))
                    if len(entry) - 1 > max_rrset:
                        raise _rrset_too_big(owner, rtype, max_rrset)

    def _build(self) -> Snapshot:
        """Pack every collected owner straight into its blob (no per-RRset objects)."""
        origin = self.origin
        max_rrset = self.limits.max_rrset_records
        blobs: dict[bytes, bytes] = {}
        cuts: set[bytes] = set()
        dnames: set[bytes] = set()
        nsec3_owners: list[bytes] = []
        pack_single = _SINGLE_RECORD.pack
        count = 0
        for owner, collected in self._nodes.items():
            if len(collected) != 1:
                blobs[owner], added = _pack_collected(owner, collected, max_rrset)
                count += added
                if NS in collected and owner != origin:
                    cuts.add(owner)
                if DNAME in collected:
                    dnames.add(owner)
                if NSEC3 in collected:
                    nsec3_owners.append(owner)
                continue
            # Most owners hold one RRset, most often of one record: one pack, one join.
            ((slot, entry),) = collected.items()
            if len(entry) == 2:
                rdata = entry[1]
                assert isinstance(rdata, bytes)
                blobs[owner] = pack_single(slot, entry[0], 1, len(rdata)) + rdata
                count += 1
            else:
                blobs[owner], added = _pack_collected(owner, collected, max_rrset)
                count += added
            if slot == NS and owner != origin:
                cuts.add(owner)
            elif slot == DNAME:
                dnames.add(owner)
            elif slot == NSEC3:
                nsec3_owners.append(owner)
        self._nodes = {}
        try:
            return snapshot_from_blobs(
                origin, blobs, cuts, dnames, nsec3_owners, record_count=count
            )
        except ZoneError as error:
            raise StreamError(Fault.MALFORMED, str(error)) from error

    # -- incremental IXFR -------------------------------------------------------

    def _incremental(self, records: list[Record], start: int) -> None:
        origin = self.origin
        assert self.opening_soa is not None
        final_serial = parse_soa(self.opening_soa).serial
        for index in range(start, len(records)):
            record = records[index]
            owner, rtype, _, rdata = record
            if not names.is_subdomain(owner, origin):
                raise StreamError(
                    Fault.MALFORMED,
                    f"{names.to_text(owner)} is outside the zone {names.to_text(origin)}",
                )
            if rtype == SOA and owner == origin:
                soa_serial = _soa_serial(rdata, owner)
                if self._deleting:
                    # Old SOA done, the new SOA opens the additions.
                    self._deleting = False
                    self._step_to = soa_serial
                    self._added.append(record)
                    continue
                if self._deleted or self._added:
                    self._apply_step()
                    if self._step_to == final_serial and soa_serial == final_serial:
                        if not _same_soa(rdata, self.opening_soa):
                            raise StreamError(
                                Fault.MALFORMED, "closing SOA differs from the opening one"
                            )
                        if index != len(records) - 1:
                            raise StreamError(Fault.MALFORMED, "records after the closing SOA")
                        self.done = True
                        return
                expected = self._step_to if self.steps else self.current_serial
                if soa_serial != expected:
                    raise StreamError(
                        Fault.DIFF_MISMATCH,
                        f"IXFR step starts at serial {soa_serial}, expected {expected}",
                    )
                self._deleting = True
                self._step_from = soa_serial
                self._deleted.append(record)
                continue
            (self._deleted if self._deleting else self._added).append(record)
            self._ixfr_records += 1
            if self._ixfr_records > self.limits.max_ixfr_records:
                raise StreamError(
                    Fault.TOO_BIG, f"IXFR diff over {self.limits.max_ixfr_records} records"
                )

    def _apply_step(self) -> None:
        assert self._version is not None
        step = DiffStep(tuple(self._deleted), tuple(self._added), self._step_from, self._step_to)
        try:
            self._version = self._version.apply_diff(step.deleted, step.added)
        except ZoneError as error:
            raise StreamError(
                Fault.DIFF_MISMATCH,
                f"IXFR step {step.from_serial} -> {step.to_serial} does not apply: {error}",
            ) from error
        self.steps.append(step)
        self._deleted = []
        self._added = []

    # -- end ----------------------------------------------------------------------

    def _finish(self) -> None:
        if self.kind is Kind.IXFR:
            self.snapshot = self._version
        else:
            self.snapshot = build_compact(self._build)

    def incomplete_reason(self) -> str:
        if self.opening_soa is None:
            return "the connection closed before any answer"
        return f"the transfer ended after {self.record_count} records without the closing SOA"
