"""NOTIFY (RFC 1996) as pure logic: parse and verify, the ACL, the answer, rate-limited logs.

The server edge hands us the request bytes, the source address and `now`;
`handle_notify` returns the response bytes, whether the NOTIFY was accepted and
the serial it announced. An accepted NOTIFY becomes one `timers.NotifyReceived`
event for the zone; the timers machine coalesces a burst into one refresh and
keeps one transfer in flight per zone.

Who may notify: the zone's `notify-from` entries (address prefixes, each with an
optional TSIG key that must have signed the NOTIFY). Everything else gets
NOTAUTH, as Knot answers (its ACL denial sets NOTAUTH with TSIG error BADKEY
when the request carried a TSIG); a NOTIFY whose TSIG does not verify gets
NOTAUTH with the TSIG error. Refusals are logged at most once per source and
minute (`RateLimitedLog`).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from authd.zone import names
from authd.zone.snapshot import SOA, parse_soa

from .stream import CLASS_IN, StreamError, append_tsig_record, parse_message, sign_message

OPCODE_NOTIFY = 4
BADSIG, BADKEY, BADTIME = 16, 17, 18

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AllowedSource:
    """One `notify-from` entry: a prefix, and the key that must sign (None: any or none)."""

    network: IPNetwork
    key: str | None = None  # key name, lowercase, absolute ("xfr-key.")
    label: str = ""  # the remote id or the prefix, for logs


@dataclass(frozen=True, slots=True)
class NotifyRequest:
    id: int
    zone: bytes
    serial: int | None
    key: str | None  # the key whose TSIG verified, None when unsigned
    request_mac: bytes
    question: bytes  # the question section as received (case kept)


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """What to send back and what it means for the zone."""

    response: bytes | None  # None: drop (not even a header to answer)
    accepted: bool
    zone: bytes | None = None
    serial: int | None = None
    reason: str = ""
    log: bool = False  # write the refusal to the log (rate limit passed)
    suppressed: int = 0  # refusals from this source not logged since the last line


class NotifyError(Exception):
    def __init__(self, rcode: int, reason: str, *, tsig_error: int = 0) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.reason = reason
        self.tsig_error = tsig_error


def parse_notify(wire: bytes, keyring: Mapping[str, dns.tsig.Key], now: float) -> NotifyRequest:
    """Parse a NOTIFY and verify its TSIG; NotifyError says the rcode to answer with."""
    try:
        message = parse_message(wire)
    except StreamError as error:
        raise NotifyError(dns.rcode.FORMERR, f"malformed NOTIFY: {error.reason}") from error
    opcode = (message.flags >> 11) & 0xF
    if message.flags & 0x8000 or opcode != OPCODE_NOTIFY:
        raise NotifyError(dns.rcode.FORMERR, "not a NOTIFY request")
    if message.qname is None or message.qtype != SOA or message.qclass != CLASS_IN:
        raise NotifyError(dns.rcode.FORMERR, "NOTIFY question must be <zone> SOA IN")
    serial = None
    for owner, rtype, _, rdata in message.records:
        if owner == message.qname and rtype == SOA:
            try:
                serial = parse_soa(rdata).serial
            except (IndexError, struct.error):
                serial = None
    question_end = 12 + _question_length(wire)
    key_name: str | None = None
    request_mac = b""
    if message.tsig_start >= 0:
        key_name = names.to_text(message.tsig_owner)
        tsig = dns.rdata.from_wire(
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            wire,
            message.tsig_rdata_start,
            message.tsig_rdata_length,
        )
        assert isinstance(tsig, dns.rdtypes.ANY.TSIG.TSIG)
        key = keyring.get(key_name)
        if key is None:
            raise NotifyError(
                dns.rcode.NOTAUTH, f"NOTIFY signed with unknown key {key_name}", tsig_error=BADKEY
            )
        try:
            dns.tsig.validate(  # type: ignore[no-untyped-call]
                wire, key, key.name, tsig, int(now), b"", message.tsig_start, None, False
            )
        except dns.tsig.BadTime as error:
            raise NotifyError(
                dns.rcode.NOTAUTH,
                f"NOTIFY TSIG time is {tsig.time_signed - int(now):+d} s off our clock",
                tsig_error=BADTIME,
            ) from error
        except (dns.tsig.BadSignature, dns.tsig.BadAlgorithm, dns.exception.DNSException) as error:
            raise NotifyError(
                dns.rcode.NOTAUTH,
                f"NOTIFY TSIG with key {key_name} does not verify",
                tsig_error=BADSIG,
            ) from error
        request_mac = bytes(tsig.mac)
    return NotifyRequest(
        message.id, message.qname, serial, key_name, request_mac, wire[12:question_end]
    )


def _question_length(wire: bytes) -> int:
    return names.wire_name_length(wire, 12) + 4


def acl_allows(
    allowed: Sequence[AllowedSource], source: str, key: str | None
) -> AllowedSource | None:
    """The first entry that admits a NOTIFY from `source` signed with `key` (None: unsigned)."""
    address = ipaddress.ip_address(source)
    for entry in allowed:
        if address.version != entry.network.version or address not in entry.network:
            continue
        if entry.key is None or entry.key == key:
            return entry
    return None


def build_response(
    request_wire: bytes,
    rcode: int,
    *,
    request: NotifyRequest | None = None,
    key: dns.tsig.Key | None = None,
    tsig_error: int = 0,
    now: float = 0.0,
) -> bytes | None:
    """A NOTIFY response: same ID and question, QR, opcode NOTIFY, AA when accepted.

    Signed with `key` when the request was signed and verified; with a TSIG error
    the request's TSIG comes back with the error and no MAC (RFC 8945 5.3.2).
    """
    if len(request_wire) < 12:
        return None
    query_id = struct.unpack_from(">H", request_wire, 0)[0]
    flags = 0x8000 | (OPCODE_NOTIFY << 11) | (rcode & 0xF)
    if rcode == dns.rcode.NOERROR:
        flags |= 0x0400  # AA
    question = request.question if request is not None else b""
    if request is None:
        try:
            question = request_wire[12 : 12 + _question_length(request_wire)]
        except IndexError:
            question = b""
    wire = struct.pack(">HHHHHH", query_id, flags, 1 if question else 0, 0, 0, 0) + question
    if tsig_error and request is None:
        tsig = _request_tsig(request_wire)
        if tsig is not None:
            owner, rdata = tsig
            other = b""
            if tsig_error == BADTIME:
                other = struct.pack(">HI", int(now) >> 32, int(now) & 0xFFFFFFFF)
            answer = rdata.replace(mac=b"", error=tsig_error, other=other)
            return append_tsig_record(wire, owner, answer)
        return wire
    if key is not None and request is not None and request.key is not None:
        signed, _ = sign_message(wire, key, now, request_mac=request.request_mac)
        return signed
    return wire


def _request_tsig(wire: bytes) -> tuple[dns.name.Name, dns.rdtypes.ANY.TSIG.TSIG] | None:
    try:
        message = parse_message(wire)
    except StreamError:
        return None
    if message.tsig_start < 0:
        return None
    rdata = dns.rdata.from_wire(
        dns.rdataclass.ANY,
        dns.rdatatype.TSIG,
        wire,
        message.tsig_rdata_start,
        message.tsig_rdata_length,
    )
    assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
    return names.to_name(message.tsig_owner), rdata


@dataclass
class RateLimitedLog:
    """At most one log line per key (a source address) per `interval` seconds."""

    interval: float = 60.0
    max_keys: int = 10_000
    _last: dict[str, float] = field(default_factory=dict)
    _suppressed: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        """(log this one?, how many were suppressed since the last line for this key)."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        if last is None and len(self._last) >= self.max_keys:
            self._forget(now)
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)

    def _forget(self, now: float) -> None:
        # Keep memory bounded under a flood from many sources: drop the expired keys
        # first, and if that is not enough, the oldest half.
        stale = [k for k, t in self._last.items() if now - t >= self.interval]
        if len(stale) < len(self._last) // 2:
            stale = sorted(self._last, key=self._last.__getitem__)[: len(self._last) // 2]
        for key in stale:
            del self._last[key]
            self._suppressed.pop(key, None)


def handle_notify(
    wire: bytes,
    source: str,
    now: float,
    *,
    zones: Mapping[bytes, Sequence[AllowedSource]],
    keyring: Mapping[str, dns.tsig.Key],
    refusals: RateLimitedLog,
) -> NotifyResult:
    """Everything about one NOTIFY except the sockets and the timers."""
    try:
        request = parse_notify(wire, keyring, now)
    except NotifyError as error:
        return _refused(wire, source, now, refusals, error.rcode, error.reason, error.tsig_error)
    allowed = zones.get(request.zone)
    if allowed is None:
        return _refused(
            wire,
            source,
            now,
            refusals,
            dns.rcode.NOTAUTH,
            f"NOTIFY for {names.to_text(request.zone)}, a zone we are not secondary for",
            BADKEY if request.key else 0,
            request,
        )
    entry = acl_allows(allowed, source, request.key)
    if entry is None:
        signed = f"signed with {request.key}" if request.key else "unsigned"
        return _refused(
            wire,
            source,
            now,
            refusals,
            dns.rcode.NOTAUTH,
            f"NOTIFY for {names.to_text(request.zone)} from {source} ({signed}) "
            "is not allowed by notify-from",
            BADKEY if request.key else 0,
            request,
        )
    key = keyring.get(request.key) if request.key else None
    response = build_response(wire, dns.rcode.NOERROR, request=request, key=key, now=now)
    return NotifyResult(
        response,
        True,
        request.zone,
        request.serial,
        f"NOTIFY for {names.to_text(request.zone)} serial {request.serial} from {source}"
        f" ({entry.label or entry.network})",
    )


def _refused(
    wire: bytes,
    source: str,
    now: float,
    refusals: RateLimitedLog,
    rcode: int,
    reason: str,
    tsig_error: int,
    request: NotifyRequest | None = None,
) -> NotifyResult:
    log, suppressed = refusals.allow(source, now)
    if tsig_error:
        response = build_response(wire, rcode, tsig_error=tsig_error, now=now)
    else:
        response = build_response(wire, rcode, request=request, now=now)
    zone = request.zone if request is not None else None
    return NotifyResult(response, False, zone, None, reason, log, suppressed)
