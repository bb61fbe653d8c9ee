"""Outbound zone transfers (provide-xfr): who may transfer, what to answer. Pure.

The serving edge (serve/xfr_edge.py) hands over the request bytes, the client address,
`now` and the zone's state; everything deciding the answer is here, without sockets:

- `verify_tsig`: the request's TSIG against our keys (RFC 8945). Unknown key -> BADKEY,
  bad MAC -> BADSIG, clock off -> BADTIME; each answered NOTAUTH with the request's TSIG
  echoed with the error and no MAC (5.3.2), as notify.py does for NOTIFY.
- `decide`: the `provide-xfr` ACL (address prefixes, each with an optional key that must
  have signed, as `notify-from`) and the zone's state. Outside the ACL, a missing or
  other key, or a zone served past its SOA expire (a stale copy must not spread, unless
  `provide-xfr-expired`): REFUSED with EDE 18 "Prohibited" (RFC 8914) when the client
  sent EDNS. A refusal to a request whose TSIG verified is signed.
- `plan_ixfr`: which journal entries take the client's serial to the served one;
  None when the chain is not there (the caller answers AXFR-style, never SERVFAIL).
- `sign_stream`: TSIG on every message of a multi-message answer, the MACs chained
  (RFC 8945 5.3.1) with dnspython's multi-message context.

Order of checks (Knot's): malformed -> FORMERR; AXFR over UDP -> NOTIMP; zone not ours ->
NOTAUTH; TSIG errors; ACL -> REFUSED; never loaded -> SERVFAIL; expired -> REFUSED.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from authd import wire
from authd.serve import edns
from authd.serve.render import render_empty
from authd.serve.xfrout import IxfrStep
from authd.xfr.notify import BADKEY, BADSIG, BADTIME, AllowedSource, acl_allows
from authd.xfr.stream import StreamError, append_tsig_record, parse_message, sign_message
from authd.zone import names
from authd.zone.snapshot import Record

NOERROR, FORMERR, SERVFAIL, NOTIMP, REFUSED, NOTAUTH = 0, 1, 2, 4, 5, 9
EDE_PROHIBITED = 18  # RFC 8914 4.19
SOA = 6
IXFR, AXFR = 251, 252
TSIG_FUDGE = 300


@dataclass(frozen=True, slots=True)
class TsigCheck:
    """What the request's TSIG says: the verified key, or the error to answer with."""

    key: str | None = None  # verified key name ("xfr-key."), None when unsigned
    request_mac: bytes = b""
    error: int = 0  # BADKEY, BADSIG or BADTIME; 0 when verified or unsigned
    reason: str = ""


def verify_tsig(data: bytes, keyring: Mapping[str, dns.tsig.Key], now: float) -> TsigCheck:
    """Verify the TSIG of a transfer request (unsigned: an empty TsigCheck)."""
    try:
        message = parse_message(data)
    except StreamError as error:
        return TsigCheck(error=BADSIG, reason=f"unreadable request: {error.reason}")
    if message.tsig_start < 0:
        return TsigCheck()
    key_name = names.to_text(message.tsig_owner)
    try:
        tsig = dns.rdata.from_wire(
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            data,
            message.tsig_rdata_start,
            message.tsig_rdata_length,
        )
    except dns.exception.DNSException as error:
        return TsigCheck(error=BADSIG, reason=f"unreadable TSIG: {error}")
    assert isinstance(tsig, dns.rdtypes.ANY.TSIG.TSIG)
    key = keyring.get(key_name)
    if key is None:
        return TsigCheck(error=BADKEY, reason=f"signed with unknown key {key_name}")
    try:
        dns.tsig.validate(  # type: ignore[no-untyped-call]
            data, key, key.name, tsig, int(now), b"", message.tsig_start, None, False
        )
    except dns.tsig.BadTime:
        offset = tsig.time_signed - int(now)
        return TsigCheck(error=BADTIME, reason=f"TSIG time is {offset:+d} s off our clock")
    except (dns.tsig.BadSignature, dns.tsig.BadAlgorithm, dns.exception.DNSException):
        return TsigCheck(error=BADSIG, reason=f"TSIG with key {key_name} does not verify")
    return TsigCheck(key_name, bytes(tsig.mac))


class Result(Enum):
    """One metric label per outbound transfer request (authd_xfr_outbound_total{result})."""

    AXFR = "axfr"
    IXFR = "ixfr"
    IXFR_AS_AXFR = "ixfr-axfr-style"  # the requested serial is not in the journal
    UP_TO_DATE = "up-to-date"  # IXFR from a client as new as us: one SOA
    UDP_SOA = "udp-soa"  # IXFR over UDP: the SOA, as Knot answers
    UDP_AXFR = "udp-axfr"  # NOTIMP
    FORMERR = "formerr"
    NOT_AUTH = "not-auth"  # not a zone we serve
    BAD_TSIG = "bad-tsig"
    REFUSED = "refused"  # outside provide-xfr (address or key)
    NOT_LOADED = "not-loaded"
    EXPIRED = "expired"
    QUERY_BAD_TSIG = "query-bad-tsig"  # a signed (SOA) query whose TSIG did not verify


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    result: Result
    rcode: int = NOERROR
    ede: int | None = None
    reason: str = ""
    ede_text: str = ""  # EDE EXTRA-TEXT


@dataclass(frozen=True, slots=True)
class ZoneView:
    """What the edge knows about the zone asked for (None: not a zone we serve)."""

    acl: Sequence[AllowedSource]
    loaded: bool
    expired: bool
    provide_expired: bool = False


def decide(zone: ZoneView | None, source: str, tsig: TsigCheck, tcp: bool, qtype: int) -> Decision:
    """Whether to transfer, and if not, with what to refuse (module docstring)."""
    kind = "AXFR" if qtype == AXFR else "IXFR"
    if not tcp and kind == "AXFR":
        return Decision(False, Result.UDP_AXFR, NOTIMP, reason="AXFR over UDP")
    if zone is None:
        return Decision(False, Result.NOT_AUTH, NOTAUTH, reason="not a zone we serve")
    if tsig.error:
        return Decision(False, Result.BAD_TSIG, NOTAUTH, reason=tsig.reason)
    if acl_allows(zone.acl, source, tsig.key) is None:
        signed = f"signed with {tsig.key}" if tsig.key else "unsigned"
        return Decision(
            False,
            Result.REFUSED,
            REFUSED,
            EDE_PROHIBITED,
            f"{kind} from {source} ({signed}) is not allowed by provide-xfr",
        )
    if not zone.loaded:
        return Decision(False, Result.NOT_LOADED, SERVFAIL, reason="zone not loaded")
    if zone.expired and not zone.provide_expired:
        return Decision(
            False,
            Result.EXPIRED,
            REFUSED,
            EDE_PROHIBITED,
            "zone served past its SOA expire (provide-xfr-expired = false)",
            "zone expired",
        )
    return Decision(True, Result.AXFR if kind == "AXFR" else Result.IXFR)


# -- answers --------------------------------------------------------------------------


def refusal(
    data: bytes,
    query: wire.Query,
    decision: Decision,
    tsig: TsigCheck,
    key: dns.tsig.Key | None,
    now: float,
    udp_payload: int,
) -> bytes:
    """The error answer for a refused request: OPT (EDE) when asked, TSIG per RFC 8945."""
    trailer = b""
    count = 0
    if query.edns is not None:
        options = b""
        if decision.ede is not None:
            options = edns.ede(decision.ede, decision.ede_text)
        trailer = wire.opt_record(udp_payload, 0, query.edns.do, options)
        count = 1
    question = data[12 : query.question_end]
    response = render_empty(query.id, query.flags, question, decision.rcode, trailer, count)
    return sign_answer(data, response, tsig, key, now)


def sign_answer(
    request: bytes, response: bytes, tsig: TsigCheck, key: dns.tsig.Key | None, now: float
) -> bytes:
    """Sign a one-message answer as the request's TSIG asks (or report its error)."""
    if tsig.error:
        echoed = _request_tsig(request)
        if echoed is None:
            return response
        owner, rdata = echoed
        other = b""
        if tsig.error == BADTIME:
            other = struct.pack(">HI", (int(now) >> 32) & 0xFFFF, int(now) & 0xFFFFFFFF)
        return append_tsig_record(
            response, owner, rdata.replace(mac=b"", error=tsig.error, other=other)
        )
    if key is not None and tsig.key is not None:
        signed, _ = sign_message(response, key, now, request_mac=tsig.request_mac)
        return signed
    return response


def strip_tsig(data: bytes) -> bytes | None:
    """The message without its TSIG record (ARCOUNT one less), as it was signed."""
    try:
        message = parse_message(data)
    except StreamError:
        return None
    if message.tsig_start < 0:
        return data
    arcount = struct.unpack_from(">H", data, 10)[0] - 1
    return data[:10] + struct.pack(">H", arcount) + data[12 : message.tsig_start]


def _request_tsig(data: bytes) -> tuple[dns.name.Name, dns.rdtypes.ANY.TSIG.TSIG] | None:
    try:
        message = parse_message(data)
        rdata = dns.rdata.from_wire(
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            data,
            message.tsig_rdata_start,
            message.tsig_rdata_length,
        )
    except (StreamError, dns.exception.DNSException):
        return None
    if message.tsig_start < 0:
        return None
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return names.to_name(message.tsig_owner), rdata


def sign_stream(
    messages: Iterator[bytes], key: dns.tsig.Key, request_mac: bytes, now: float
) -> Iterator[bytes]:
    """Every message of a multi-message answer signed, the MACs chained (RFC 8945 5.3.1):
    the first digest covers the request MAC, each later one the previous MAC."""
    ctx: object | None = None
    first = True
    for message in messages:
        message_id = struct.unpack_from(">H", message, 0)[0]
        template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            key.algorithm,
            0,
            TSIG_FUDGE,
            b"",
            message_id,
            0,
            b"",
        )
        signed, ctx = dns.tsig.sign(  # type: ignore[no-untyped-call]
            message, key, template, int(now), request_mac if first else None, ctx, True
        )
        first = False
        yield append_tsig_record(message, key.name, signed)


# -- IXFR from the journal ----------------------------------------------------------------


def ixfr_client_serial(data: bytes, query: wire.Query) -> int | None:
    """The serial in the IXFR request's authority SOA (RFC 1995 3), None if there is none.

    The SOA's fixed fields are its last 20 octets, so the names need not be decoded.
    """
    if len(data) < 12:
        return None
    ancount, nscount = struct.unpack_from(">HH", data, 6)
    if ancount or not nscount:
        return None
    pos = _skip_name(data, query.question_end)
    if pos < 0 or pos + 10 > len(data):
        return None
    rtype, _rclass, _ttl, rdlength = struct.unpack_from(">HHIH", data, pos)
    end = pos + 10 + rdlength
    if rtype != SOA or rdlength < 22 or end > len(data):
        return None
    serial: int = struct.unpack_from(">I", data, end - 20)[0]
    return serial


def _skip_name(data: bytes, pos: int) -> int:
    """The offset after a (possibly compressed) name at pos, or -1."""
    end = len(data)
    while pos < end:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2 if pos + 2 <= end else -1
        if length > 63:
            return -1
        pos += length + 1
    return -1


def serial_newer(a: int, b: int) -> bool:
    """a is newer than b in serial number arithmetic (RFC 1982)."""
    return a != b and ((a - b) & 0xFFFFFFFF) < 0x80000000


def plan_ixfr(entries: Sequence[tuple[int, int]], client: int, served: int) -> list[int] | None:
    """Indexes of the journal entries (from, to serials, in chain order) that take
    `client` to `served`; [] when the client is current (or newer); None when the journal
    does not hold that path (answer AXFR-style)."""
    if client == served or serial_newer(client, served):
        return []
    start = next((i for i, (frm, _) in enumerate(entries) if frm == client), None)
    if start is None:
        return None
    for end in range(start, len(entries)):
        if entries[end][1] == served:
            return list(range(start, end + 1))
    return None


def journal_step(
    origin: bytes, deleted: Sequence[Record], added: Sequence[Record]
) -> IxfrStep | None:
    """One journal entry as an IXFR step: the apex SOAs apart from the other records.

    Entries hold the old SOA among the deleted records and the new one among the added
    (as an inbound IXFR step does); None when either is missing.
    """
    old = [r for r in deleted if r[1] == SOA and r[0] == origin]
    new = [r for r in added if r[1] == SOA and r[0] == origin]
    if len(old) != 1 or len(new) != 1:
        return None
    return IxfrStep(
        old[0][3],
        new[0][3],
        [r for r in deleted if not (r[1] == SOA and r[0] == origin)],
        [r for r in added if not (r[1] == SOA and r[0] == origin)],
    )
