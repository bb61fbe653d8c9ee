"""The transfer client: SOA check and AXFR/IXFR (RFC 1995, 5936) with TSIG (RFC 8945).

This is the I/O edge around stream.py. The TCP stream is drained into a buffer
by a protocol callback as fast as it arrives, so a primary never waits on us
(Knot cuts a reader that stalls its writes for 500 ms); the parsing happens
between reads, yielding to the event loop after every message.

Every call returns a value, never raises for a network or protocol problem:
`SoaResult` or `TransferResult`, with one `Outcome` and a precise reason.
Time for TSIG comes from the injected `clock` (wall-clock seconds).

EDNS EXPIRE (RFC 7314): with `expire`, each query carries an OPT with an empty EXPIRE
option, and the results say what the primary answered (`expire`: seconds before its own
copy expires; None when it sent none). Off per remote (`edns-expire = false`) for primaries
that mishandle EDNS.

IXFR rules: an IXFR answered AXFR-style is a full replacement; a lone SOA that
is not newer means up to date; an IXFR refused with an rcode, or whose diff does
not apply to our version, is retried as AXFR in the same call (outcome
FELL_BACK). Other IXFR failures (cut, timeout, malformed) are returned as such
with `kind` IXFR, and the caller's next attempt should ask for AXFR.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import cast

import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from authd.config import RemoteTls
from authd.zone import names
from authd.zone.snapshot import SOA, Snapshot, parse_soa

from .stream import (
    CLASS_IN,
    TYPE_AXFR,
    TYPE_IXFR,
    DiffStep,
    Fault,
    Kind,
    Message,
    StreamError,
    TransferAssembler,
    TransferLimits,
    TsigVerifier,
    parse_message,
    sign_message,
)
from .stream import (
    rcode_text as _rcode_text,
)
from .tls import (
    TlsFailure,
    check_peer,
    client_context,
    handshake_reason,
    server_hostname,
    tls_error_text,
)

Endpoint = tuple[str, int]
"""(IP address, port) of a primary."""

Clock = Callable[[], float]

TSIG_FUDGE = 300
EDNS_PAYLOAD = 1232  # what our OPT advertises (the DNS Flag Day 2020 size)
# OPT: root owner, type 41, our payload, TTL 0 (version 0), one empty EXPIRE option.
EXPIRE_OPT = b"\x00" + struct.pack(">HHIH", 41, EDNS_PAYLOAD, 0, 4) + struct.pack(">HH", 9, 0)
_FALLBACK_RCODES = frozenset(
    {dns.rcode.REFUSED, dns.rcode.NOTIMP, dns.rcode.NOTAUTH, dns.rcode.SERVFAIL, dns.rcode.FORMERR}
)
_REFUSING_RCODES = frozenset({dns.rcode.REFUSED, dns.rcode.NOTAUTH})


class Outcome(Enum):
    """The one result of an SOA check or a transfer: a log word and a metric label."""

    UPDATED = "updated"
    UP_TO_DATE = "up-to-date"
    FELL_BACK = "fell-back-to-axfr"
    OK = "ok"  # an SOA check that got an answer
    REFUSED = "refused"
    SERVER_ERROR = "server-error"
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network-error"
    BAD_TSIG = "bad-tsig"
    TOO_BIG = "too-big"
    MALFORMED = "malformed"
    INCOMPLETE = "incomplete"
    DIFF_MISMATCH = "diff-mismatch"
    TLS_ERROR = "tls-error"  # handshake, certificate, name, pin or ALPN: never retried in clear

    @property
    def success(self) -> bool:
        return self in (Outcome.UPDATED, Outcome.UP_TO_DATE, Outcome.FELL_BACK, Outcome.OK)


TSIG_REASONS = ("BADSIG", "BADKEY", "BADTIME", "BADTRUNC", "unsigned", "unexpected", "other")
"""Label values of authd_xfr_tsig_failures_total{reason}: the RFC 8945 error the primary
sent back, or what our check found (BADSIG: the MAC does not verify; BADKEY: another key
or algorithm; BADTIME: outside the fudge window; unsigned: a message that must be signed
is not; unexpected: signed while we have no key). The text goes to logs and status."""


def tsig_reason(reason: str) -> str:
    """The label word for a bad-tsig failure's text (one of TSIG_REASONS)."""
    for code in ("BADSIG", "BADKEY", "BADTIME", "BADTRUNC"):
        if f"rejected our TSIG: {code}" in reason:
            return code
    if "not signed" in reason or "unsigned" in reason:
        return "unsigned"
    if "we have no key" in reason:
        return "unexpected"
    if "does not verify" in reason:
        return "BADSIG"
    if "signed with key" in reason or "does not match the key" in reason:
        return "BADKEY"
    if "off our clock" in reason:
        return "BADTIME"
    return "other"


@dataclass(frozen=True, slots=True)
class SoaResult:
    outcome: Outcome
    primary: Endpoint
    serial: int | None = None
    soa_rdata: bytes | None = None
    rcode: int | None = None
    over_tcp: bool = False
    duration: float = 0.0
    reason: str = ""
    expire: int | None = None  # the answer's EDNS EXPIRE


@dataclass(frozen=True, slots=True)
class TransferResult:
    outcome: Outcome
    primary: Endpoint
    kind: Kind | None = None
    snapshot: Snapshot | None = None
    steps: tuple[DiffStep, ...] = ()
    serial: int | None = None
    bytes_received: int = 0
    messages: int = 0
    records: int = 0
    duration: float = 0.0
    reason: str = ""
    ixfr_failure: str = ""  # why IXFR was abandoned, when the outcome is FELL_BACK
    rcode: int | None = None
    expire: int | None = None  # the EDNS EXPIRE of the first message that carried one


class _Failure(Exception):
    """A failed exchange, carried up to the public functions that turn it into a result."""

    def __init__(
        self, outcome: Outcome, reason: str, rcode: int | None = None, fault: Fault | None = None
    ) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.rcode = rcode
        self.fault = fault


# -- queries ---------------------------------------------------------------------


def build_query(
    zone: bytes,
    qtype: int,
    *,
    query_id: int,
    soa: tuple[int, bytes] | None = None,
    expire: bool = False,
) -> bytes:
    """An unsigned query; `soa` = (ttl, rdata) goes in the authority section (IXFR);
    `expire` adds an OPT with an empty EDNS EXPIRE option (RFC 7314 2)."""
    header = struct.pack(">HHHHHH", query_id, 0, 1, 0, 1 if soa else 0, 1 if expire else 0)
    wire = header + zone + struct.pack(">HH", qtype, CLASS_IN)
    if soa is not None:
        ttl, rdata = soa
        wire += b"\xc0\x0c" + struct.pack(">HHIH", SOA, CLASS_IN, ttl, len(rdata)) + rdata
    if expire:
        wire += EXPIRE_OPT
    return wire


def sign_query(wire: bytes, key: dns.tsig.Key, now: float) -> tuple[bytes, bytes]:
    """Append a TSIG RR signed at `now`; returns (signed wire, request MAC)."""
    return sign_message(wire, key, now, fudge=TSIG_FUDGE)


def _endpoint_family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _rcode_failure(rcode: int, what: str, unsigned_note: str = "") -> _Failure:
    outcome = Outcome.REFUSED if rcode in _REFUSING_RCODES else Outcome.SERVER_ERROR
    return _Failure(
        outcome,
        f"the primary answered {what} with {_rcode_text(rcode)}{unsigned_note}",
        rcode,
    )


def _fault_failure(error: StreamError) -> _Failure:
    mapping = {
        Fault.MALFORMED: Outcome.MALFORMED,
        Fault.BAD_TSIG: Outcome.BAD_TSIG,
        Fault.TOO_BIG: Outcome.TOO_BIG,
        Fault.DIFF_MISMATCH: Outcome.DIFF_MISMATCH,
        Fault.RCODE: Outcome.SERVER_ERROR,
    }
    if error.fault is Fault.RCODE and error.rcode in _REFUSING_RCODES:
        return _Failure(Outcome.REFUSED, error.reason, error.rcode, error.fault)
    return _Failure(mapping[error.fault], error.reason, error.rcode, error.fault)


def _check_response(
    wire: bytes,
    message: Message,
    *,
    query_id: int,
    zone: bytes,
    qtype: int,
    verifier: TsigVerifier | None,
    clock: Clock,
    what: str,
) -> None:
    """ID, QR, question and TSIG of a single answer; raises _Failure."""
    if message.id != query_id:
        raise _Failure(Outcome.MALFORMED, f"{what}: answer ID {message.id}, expected {query_id}")
    if not message.flags & 0x8000:
        raise _Failure(Outcome.MALFORMED, f"{what}: QR bit not set in the answer")
    if (message.qname, message.qtype, message.qclass) != (zone, qtype, CLASS_IN):
        got = names.to_text(message.qname) if message.qname else "no question"
        raise _Failure(Outcome.MALFORMED, f"{what}: answer question {got} does not match")
    if message.rcode and message.tsig_start < 0:
        raise _rcode_failure(message.rcode, what, " (unsigned)" if verifier else "")
    if verifier is not None:
        try:
            verifier.check(wire, message, clock())
        except StreamError as error:
            raise _fault_failure(error) from error
    elif message.tsig_start >= 0:
        raise _Failure(Outcome.BAD_TSIG, f"{what}: the answer is signed but we have no key")
    if message.rcode:
        raise _rcode_failure(message.rcode, what)


# -- SOA query -------------------------------------------------------------------


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.answers.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.answers.put_nowait(b"")


async def _udp_exchange(
    primary: Endpoint, wire: bytes, source: str | None, timeout: float, query_id: int
) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Datagram,
        remote_addr=primary,
        local_addr=(source, 0) if source else None,
        family=_endpoint_family(primary[0]),
    )
    try:
        transport.sendto(wire)
        end = loop.time() + timeout
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(protocol.answers.get(), remaining)
            if not data:
                raise ConnectionRefusedError("ICMP error for the SOA query")
            # Answers with another ID are stray or spoofed: keep waiting for ours.
            if len(data) >= 2 and struct.unpack_from(">H", data, 0)[0] == query_id:
                return data
    finally:
        transport.close()


async def _open_tcp(
    primary: Endpoint,
    source: str | None,
    timeout: float,
    max_bytes: int,
    tls: RemoteTls | None = None,
) -> tuple[asyncio.Transport, _Drain]:
    """A TCP connection, or with `tls` a TLS one whose peer passed every check.

    TLS is started on the connected socket, so a TCP failure and a TLS failure say which
    they are. The two transports feed the same _Drain: one stream reader, one transfer
    machine. TLS problems raise _Failure(TLS_ERROR); there is no plain-TCP retry.
    """
    loop = asyncio.get_running_loop()
    context: ssl.SSLContext | None = None
    if tls is not None:
        try:
            context = client_context(tls)
        except TlsFailure as failure:
            raise _Failure(Outcome.TLS_ERROR, failure.reason) from None
    started = loop.time()
    transport, protocol = await asyncio.wait_for(
        loop.create_connection(
            lambda: _Drain(max_bytes),
            primary[0],
            primary[1],
            local_addr=(source, 0) if source else None,
            family=_endpoint_family(primary[0]),
        ),
        timeout,
    )
    if tls is None or context is None:
        return transport, protocol
    return await _start_tls(transport, protocol, tls, context, timeout - (loop.time() - started))


async def _start_tls(
    transport: asyncio.Transport,
    protocol: _Drain,
    tls: RemoteTls,
    context: ssl.SSLContext,
    timeout: float,
) -> tuple[asyncio.Transport, _Drain]:
    loop = asyncio.get_running_loop()
    try:
        secure = await asyncio.wait_for(
            loop.start_tls(
                transport,
                protocol,
                context,
                # "": no name check, the SPKI pin is checked below instead
                server_hostname=server_hostname(tls) or "",
                ssl_handshake_timeout=max(0.001, timeout),
            ),
            max(0.001, timeout),
        )
    except ssl.SSLError as error:
        transport.abort()
        raise _Failure(Outcome.TLS_ERROR, handshake_reason(error, tls)) from None
    except TimeoutError:
        transport.abort()
        raise _Failure(
            Outcome.TLS_ERROR,
            f"no TLS handshake within {timeout:.3g} s (does the primary serve TLS on this port?)",
        ) from None
    except (OSError, ConnectionError) as error:
        transport.abort()
        raise _Failure(
            Outcome.TLS_ERROR,
            "the primary closed the connection during the TLS handshake "
            f"({error.strerror or type(error).__name__})",
        ) from None
    if secure is None:  # the connection closed before the handshake ended
        transport.abort()
        raise _Failure(
            Outcome.TLS_ERROR, "the primary closed the connection during the TLS handshake"
        )
    # The _Drain keeps the TCP transport to abort; data now comes through the TLS one.
    try:
        check_peer(tls, secure.get_extra_info("ssl_object"))
    except TlsFailure as failure:
        secure.abort()
        raise _Failure(Outcome.TLS_ERROR, failure.reason) from None
    return secure, protocol


async def query_soa(
    primary: Endpoint,
    zone: bytes,
    key: dns.tsig.Key | None,
    source: str | None = None,
    timeout: float = 5.0,
    *,
    clock: Clock,
    tls: RemoteTls | None = None,
    tcp: bool = False,
    expire: bool = False,
) -> SoaResult:
    """Ask a primary for the zone's SOA over UDP, and again over TCP if truncated.

    With `tcp` it asks over TCP only: a catalog zone (knotd answers REFUSED to UDP queries
    for a catalog it generates; RFC 9432 6 leaves catalogs to transfers).

    With `tls` the query goes over TLS only (the remote is XoT: its port 853 has no UDP, and
    the SOA query is part of the transfer exchange RFC 9103 protects), as BIND and Knot do.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    query_id = secrets.randbelow(65536)
    wire = build_query(zone, SOA, query_id=query_id, expire=expire)
    over_tcp = False

    def done(outcome: Outcome, reason: str = "", **values: object) -> SoaResult:
        return SoaResult(
            outcome,
            primary,
            over_tcp=over_tcp,
            duration=loop.time() - started,
            reason=reason,
            **values,  # type: ignore[arg-type]
        )

    try:
        request_mac = b""
        if key is not None:
            wire, request_mac = sign_query(wire, key, clock())
        if tls is not None or tcp:
            over_tcp = True
            answer = await _tcp_exchange(primary, wire, source, timeout, tls)
        else:
            answer = await _udp_exchange(primary, wire, source, timeout, query_id)
        message = parse_message(answer)
        if message.flags & 0x0200 and tls is None:  # TC
            over_tcp = True
            answer = await _tcp_exchange(primary, wire, source, timeout - (loop.time() - started))
            message = parse_message(answer)
        verifier = TsigVerifier(key, request_mac) if key is not None else None
        _check_response(
            answer,
            message,
            query_id=query_id,
            zone=zone,
            qtype=SOA,
            verifier=verifier,
            clock=clock,
            what="SOA query",
        )
        for owner, rtype, _, rdata in message.records:
            if owner == zone and rtype == SOA:
                try:
                    serial = parse_soa(rdata).serial
                except (IndexError, struct.error):
                    return done(Outcome.MALFORMED, "SOA query: the SOA record is malformed")
                return done(Outcome.OK, serial=serial, soa_rdata=rdata, expire=message.expire)
        return done(Outcome.MALFORMED, "SOA query: no SOA for the zone in the answer")
    except _Failure as failure:
        reason = failure.reason
        if not reason.startswith("SOA query"):
            reason = f"SOA query: {reason}"
        return done(failure.outcome, reason, rcode=failure.rcode)
    except StreamError as error:
        mapped = _fault_failure(error)
        return done(mapped.outcome, f"SOA query: {mapped.reason}", rcode=mapped.rcode)
    except TimeoutError:
        return done(Outcome.TIMEOUT, f"SOA query: no answer within {timeout:g} s")
    except OSError as error:
        return done(Outcome.NETWORK_ERROR, f"SOA query: {error.strerror or error!r}")


async def _tcp_exchange(
    primary: Endpoint,
    wire: bytes,
    source: str | None,
    timeout: float,
    tls: RemoteTls | None = None,
) -> bytes:
    if timeout <= 0:
        raise TimeoutError
    transport, drain = await _open_tcp(primary, source, timeout, 70_000, tls)
    try:
        transport.write(struct.pack(">H", len(wire)) + wire)
        loop = asyncio.get_running_loop()
        answer = await drain.next_message(loop.time() + timeout, timeout)
        if answer is None:
            raise ConnectionResetError("the primary closed TCP without an answer")
        return answer
    finally:
        transport.close()


# -- TCP stream ------------------------------------------------------------------


# Read buffer shared by every transfer: get_buffer() and buffer_updated() run back to back in
# one callback on the event loop and the bytes are copied out at once, so no two transfers
# ever use it at the same time; one 256 KiB allocation per transfer cost more than a
# 30-record zone's whole AXFR.
_SCRATCH = bytearray(1 << 18)


class _Drain(asyncio.BufferedProtocol):
    """Reads everything the primary sends into one buffer, at once, up to max_bytes.

    Reads are sized so that no more than max_bytes + 1 octets ever leave the socket.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.pos = 0
        self.received = 0
        self.over_limit = False
        self.closed = False
        self.error: Exception | None = None
        self.arrived = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self._scratch = _SCRATCH

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        allowed = self.max_bytes - self.received + 1
        return memoryview(self._scratch)[: max(1, min(len(self._scratch), allowed))]

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        if self.received > self.max_bytes:
            # Stop at once: nothing past the limit is kept.
            self.over_limit = True
            if self.transport is not None:
                self.transport.abort()
        else:
            self.buffer += memoryview(self._scratch)[:nbytes]
        self.arrived.set()

    def eof_received(self) -> bool:
        self.closed = True
        self.arrived.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self.arrived.set()

    async def next_message(self, deadline_at: float, idle_timeout: float) -> bytes | None:
        """The next length-prefixed message, None at a clean end of stream."""
        loop = asyncio.get_running_loop()
        while True:
            buffer, pos = self.buffer, self.pos
            available = len(buffer) - pos
            if available >= 2:
                length = (buffer[pos] << 8) | buffer[pos + 1]
                if available >= 2 + length:
                    message = bytes(buffer[pos + 2 : pos + 2 + length])
                    self.pos = pos + 2 + length
                    # Drop what was parsed once it is most of the buffer: amortised O(1).
                    if self.pos > 1 << 20 and self.pos * 2 > len(buffer):
                        del buffer[: self.pos]
                        self.pos = 0
                    return message
            if self.over_limit:
                raise _Failure(
                    Outcome.TOO_BIG, f"the transfer passed the limit of {self.max_bytes} octets"
                )
            if self.closed:
                if available:
                    raise _Failure(
                        Outcome.INCOMPLETE,
                        f"the connection closed in the middle of a message ({available} octets)",
                    )
                if isinstance(self.error, ssl.SSLError):
                    # After the handshake: an alert (in TLS 1.3 a refused client certificate
                    # arrives here) or a record that does not decrypt.
                    raise _Failure(Outcome.TLS_ERROR, f"TLS error: {tls_error_text(self.error)}")
                if self.error is not None:
                    raise _Failure(Outcome.INCOMPLETE, f"the connection broke: {self.error}")
                return None
            self.arrived.clear()
            now = loop.time()
            remaining = deadline_at - now
            if remaining <= 0:
                raise _Failure(Outcome.TIMEOUT, "the transfer passed its deadline")
            wait = min(idle_timeout, remaining)
            try:
                await asyncio.wait_for(self.arrived.wait(), wait)
            except TimeoutError:
                if wait < idle_timeout:
                    raise _Failure(Outcome.TIMEOUT, "the transfer passed its deadline") from None
                raise _Failure(
                    Outcome.TIMEOUT, f"no data from the primary for {idle_timeout:g} s"
                ) from None


# -- transfer ----------------------------------------------------------------------


@dataclass(slots=True)
class _Attempt:
    kind: Kind | None = None
    bytes_received: int = 0
    messages: int = 0
    records: int = 0
    assembler: TransferAssembler | None = field(default=None)
    expire: int | None = None


async def _run_one(
    zone: bytes,
    primary: Endpoint,
    key: dns.tsig.Key | None,
    source: str | None,
    *,
    qtype: int,
    current: Snapshot | None,
    limits: TransferLimits,
    deadline_at: float,
    idle_timeout: float,
    clock: Clock,
    attempt: _Attempt,
    tls: RemoteTls | None,
    expire: bool = False,
) -> TransferAssembler:
    """One AXFR or IXFR over one TCP (or TLS) connection; raises _Failure."""
    loop = asyncio.get_running_loop()
    query_id = secrets.randbelow(65536)
    soa = (current.soa_ttl, current.soa_rdata) if qtype == TYPE_IXFR and current else None
    wire = build_query(zone, qtype, query_id=query_id, soa=soa, expire=expire)
    verifier = None
    if key is not None:
        wire, request_mac = sign_query(wire, key, clock())
        verifier = TsigVerifier(key, request_mac)
    assembler = TransferAssembler(zone, qtype, query_id, limits, current)
    attempt.assembler = assembler
    what = "IXFR" if qtype == TYPE_IXFR else "AXFR"
    try:
        transport, drain = await _open_tcp(
            primary,
            source,
            max(0.001, min(idle_timeout, deadline_at - loop.time())),
            limits.max_bytes,
            tls,
        )
    except _Failure as not_open:
        not_open.reason = f"{what}: {not_open.reason}"
        raise
    except TimeoutError:
        layer = "TLS" if tls is not None else "TCP"
        raise _Failure(Outcome.TIMEOUT, f"{what}: {layer} connect timed out") from None
    except OSError as error:
        raise _Failure(
            Outcome.NETWORK_ERROR, f"{what}: cannot connect: {error.strerror or error!r}"
        ) from None
    try:
        transport.write(struct.pack(">H", len(wire)) + wire)
        while True:
            data = await drain.next_message(deadline_at, idle_timeout)
            attempt.bytes_received = drain.received
            if data is None:
                raise _Failure(Outcome.INCOMPLETE, f"{what}: {assembler.incomplete_reason()}")
            message = parse_message(data)
            if message.id != query_id:
                raise _Failure(
                    Outcome.MALFORMED, f"{what}: answer ID {message.id}, expected {query_id}"
                )
            if message.rcode and message.tsig_start < 0:
                raise _rcode_failure(message.rcode, what, " (unsigned)" if verifier else "")
            if verifier is not None:
                verifier.check(data, message, clock())
            elif message.tsig_start >= 0:
                raise _Failure(Outcome.BAD_TSIG, f"{what}: the answer is signed but we have no key")
            if attempt.expire is None:
                attempt.expire = message.expire  # RFC 7314: in the first message
            if assembler.feed(message):
                if verifier is not None:
                    verifier.finish()
                attempt.kind = assembler.kind
                return assembler
            attempt.messages = assembler.messages
            attempt.records = assembler.record_count
            # Let the protocol take in what arrived while we parsed.
            await asyncio.sleep(0)
    except StreamError as error:
        failure = _fault_failure(error)
        failure.reason = f"{what}: {failure.reason}"
        raise failure from error
    except _Failure as failure:
        if not failure.reason.startswith(what):
            failure.reason = f"{what}: {failure.reason}"
        raise
    finally:
        attempt.bytes_received = drain.received
        attempt.messages = assembler.messages
        attempt.records = assembler.record_count
        transport.abort()


async def transfer(
    zone: bytes,
    primary: Endpoint,
    key: dns.tsig.Key | None,
    source: str | None = None,
    *,
    current: Snapshot | None,
    force_axfr: bool = False,
    limits: TransferLimits | None = None,
    deadline: float = 600.0,
    idle_timeout: float = 30.0,
    clock: Clock,
    tls: RemoteTls | None = None,
    expire: bool = False,
) -> TransferResult:
    """Bring the zone up to date from one primary: IXFR from `current`, or AXFR.

    `deadline` is the time budget in seconds for the whole call (including an
    AXFR fallback); `idle_timeout` the longest silence tolerated from the primary.
    With `tls` every connection is TLS (XoT, RFC 9103) and TSIG is verified inside it as
    over TCP; a TLS failure is the call's outcome (TLS_ERROR), never a reason to go plain.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline_at = started + deadline
    limits = limits or TransferLimits()
    use_ixfr = current is not None and not force_axfr
    total_bytes = 0
    ixfr_failure = ""

    def finish(
        outcome: Outcome, attempt: _Attempt, reason: str = "", **values: object
    ) -> TransferResult:
        return TransferResult(
            outcome,
            primary,
            kind=attempt.kind,
            bytes_received=total_bytes + attempt.bytes_received,
            messages=attempt.messages,
            records=attempt.records,
            duration=loop.time() - started,
            reason=reason,
            ixfr_failure=ixfr_failure,
            expire=attempt.expire,
            **values,  # type: ignore[arg-type]
        )

    if use_ixfr:
        attempt = _Attempt(kind=Kind.IXFR)
        try:
            assembler = await _run_one(
                zone,
                primary,
                key,
                source,
                qtype=TYPE_IXFR,
                current=current,
                limits=limits,
                deadline_at=deadline_at,
                idle_timeout=idle_timeout,
                clock=clock,
                attempt=attempt,
                tls=tls,
                expire=expire,
            )
        except _Failure as failure:
            fallback = failure.outcome is Outcome.DIFF_MISMATCH or (
                failure.rcode in _FALLBACK_RCODES and failure.outcome is not Outcome.BAD_TSIG
            )
            if not fallback:
                return finish(failure.outcome, attempt, failure.reason, rcode=failure.rcode)
            ixfr_failure = failure.reason
            total_bytes += attempt.bytes_received
        else:
            snapshot = assembler.snapshot
            assert snapshot is not None
            if assembler.kind is Kind.UP_TO_DATE:
                # `serial` is what the primary announced: equal to ours, or older.
                return finish(
                    Outcome.UP_TO_DATE,
                    attempt,
                    serial=assembler.primary_serial,
                    snapshot=snapshot,
                )
            return finish(
                Outcome.UPDATED,
                attempt,
                serial=snapshot.serial,
                snapshot=snapshot,
                steps=tuple(assembler.steps),
            )
    attempt = _Attempt(kind=Kind.FALLBACK_AXFR if ixfr_failure else Kind.AXFR)
    try:
        assembler = await _run_one(
            zone,
            primary,
            key,
            source,
            qtype=TYPE_AXFR,
            current=None,
            limits=limits,
            deadline_at=deadline_at,
            idle_timeout=idle_timeout,
            clock=clock,
            attempt=attempt,
            tls=tls,
            expire=expire,
        )
    except _Failure as failure:
        return finish(failure.outcome, attempt, failure.reason, rcode=failure.rcode)
    snapshot = assembler.snapshot
    assert snapshot is not None
    attempt.kind = Kind.FALLBACK_AXFR if ixfr_failure else Kind.AXFR
    return finish(
        Outcome.FELL_BACK if ixfr_failure else Outcome.UPDATED,
        attempt,
        serial=snapshot.serial,
        snapshot=snapshot,
    )
