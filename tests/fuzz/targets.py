"""Fuzz targets: one function per parser that faces untrusted (or operator-typed) input.

Each target takes raw bytes, bounds their size, runs the real code and checks what the
code promises. The only exceptions a target lets through are failures: either an
exception the code must never raise, or an AssertionError from a broken promise.

- responder: query bytes -> Responder.respond() over the example zone, UDP and TCP, then
  RRL's classify/truncated on the response. respond() must never raise; a response must
  carry the query's ID with QR=1, fit the UDP limit, parse with dnspython, and decode with
  dnslib to the same header and sections.
- loader: master-file text -> load_zone_file(). ZoneLoadError is the expected failure.
  $INCLUDE is refused by the target (it would read arbitrary files of this machine).
- stream: TCP-framed messages (2-byte length, as on the wire) -> parse_message() and a
  TransferAssembler (AXFR, or IXFR against the example zone). StreamError is the expected
  failure; a finished transfer must come with a snapshot or diff steps.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message

from authd.clock import FakeClock
from authd.config import RrlConfig
from authd.serve import rrl
from authd.serve.cookies import CookieJar
from authd.serve.responder import Responder
from authd.serve.zonetable import ZoneTable
from authd.xfr.stream import (
    TYPE_AXFR,
    TYPE_IXFR,
    Kind,
    StreamError,
    TransferAssembler,
    TransferLimits,
    parse_message,
)
from authd.zone import names
from authd.zone.loader import ZoneLoadError, load_zone_file
from authd.zone.snapshot import Snapshot, parse_soa
from tests.support import decoders

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ZONE = ROOT / "zones" / "example.test.zone"
ORIGIN_TEXT = "example.test."
ORIGIN = names.key_from_text(ORIGIN_TEXT)
UDP_PAYLOAD = 1232
COOKIE_SECRET = bytes(range(16))
COOKIE_TIME = 1_765_000_000
STREAM_QUERY_ID = 0x1234

MAX_QUERY = 4096  # larger queries only repeat the same structures
MAX_ZONE_TEXT = 8192
MAX_STREAM = 32768

# Small caps so the fuzzer reaches the limit checks instead of only filling memory.
STREAM_LIMITS = TransferLimits(
    max_records=2000, max_bytes=1 << 20, max_rrset_records=200, max_ixfr_records=1000
)


@functools.cache
def example_snapshot() -> Snapshot:
    return load_zone_file(EXAMPLE_ZONE, ORIGIN_TEXT)


@functools.cache
def _responder() -> tuple[Responder, rrl.RateLimiter]:
    table = ZoneTable()
    table.publish(ORIGIN, example_snapshot())
    responder = Responder(
        table,
        identity="fuzz.test",
        version="authd fuzz",
        nsid=b"fz",
        udp_payload=UDP_PAYLOAD,
        cookies=CookieJar(COOKIE_SECRET),  # a fixed secret and time: a seed's cookie verifies
        clock=FakeClock(now=COOKIE_TIME),
    )
    # rate 1: almost every response goes through the limited path (drop or slip).
    limiter = rrl.RateLimiter(responder.respond, RrlConfig(rate=1, slip=1))
    return responder, limiter


_CLIENT_V4 = (2).to_bytes(2, "little") + b"\x14\xe9" + bytes((192, 0, 2, 1)) + b"\x00" * 8


def responder(data: bytes) -> None:
    data = data[:MAX_QUERY]
    plain, limiter = _responder()
    for tcp in (False, True):
        response = plain.respond(data, tcp, ("192.0.2.1", 5353))
        if response is None:
            continue
        _check_response(data, response, tcp)
        if not tcp:
            slip = rrl.truncated(response)
            assert slip[:2] == response[:2] and slip[2] & 0x02, "slip answer lost ID or TC"
            assert len(slip) <= len(response), "slip answer larger than the answer"
            rrl.classify(response)
    limited = limiter.respond(data, False, _CLIENT_V4)
    if limited is not None:
        _check_response(data, limited, False)


def _check_response(query: bytes, response: bytes, tcp: bool) -> None:
    assert len(response) >= 12, "response shorter than a header"
    assert response[:2] == query[:2], "response ID differs from the query ID"
    assert response[2] & 0x80, "QR not set in a response"
    if not tcp:
        assert len(response) <= max(512, UDP_PAYLOAD), "UDP response over the payload limit"
    # Parse as opcode QUERY: dnspython reads UPDATE messages with update semantics (a zone
    # section), which an echoed FORMERR question need not satisfy.
    as_query = response[:2] + bytes((response[2] & 0x87,)) + response[3:]
    try:
        dns.message.from_wire(as_query, ignore_trailing=False, one_rr_per_rrset=True)
    except dns.message.UnknownTSIGKey:
        pass  # our BADKEY answer carries a TSIG record for a key dnspython is not given
    except dns.exception.DNSException as error:
        raise AssertionError(f"response does not parse: {error!r}") from error
    # The second, independent decoder must read the same sections (tests/support/decoders.py).
    problem = decoders.disagreement(as_query)
    assert problem is None, f"dnspython and dnslib disagree on the response: {problem}"


def loader(data: bytes) -> None:
    data = data[:MAX_ZONE_TEXT]
    if b"$include" in data.lower():
        return
    fd, name = tempfile.mkstemp(prefix="fuzz-", suffix=".zone", dir=_scratch_dir())
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        try:
            snapshot = load_zone_file(Path(name), ORIGIN_TEXT)
        except ZoneLoadError as error:
            assert str(error), "ZoneLoadError without a message"
            return
        assert snapshot.origin == ORIGIN
        assert snapshot.serial >= 0
    finally:
        os.unlink(name)


@functools.cache
def _scratch_dir() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return tempfile.mkdtemp(prefix="authd-fuzz-", dir=base)


def stream(data: bytes) -> None:
    data = data[:MAX_STREAM]
    if not data:
        return
    ixfr = bool(data[0] & 1)
    qtype = TYPE_IXFR if ixfr else TYPE_AXFR
    current = example_snapshot() if ixfr else None
    assembler = TransferAssembler(ORIGIN, qtype, STREAM_QUERY_ID, STREAM_LIMITS, current)
    pos = 1
    try:
        while pos + 2 <= len(data):
            size = int.from_bytes(data[pos : pos + 2])
            message = data[pos + 2 : pos + 2 + size]
            pos += 2 + size
            if assembler.feed(parse_message(message)):
                break
    except StreamError as error:
        assert error.reason, "StreamError without a reason"
        return
    if assembler.done:
        snapshot = assembler.snapshot
        assert snapshot is not None, f"finished {assembler.kind} without a version"
        if assembler.kind is not Kind.UP_TO_DATE:
            assert assembler.opening_soa is not None
            assert snapshot.serial == parse_soa(assembler.opening_soa).serial, "wrong serial"
    else:
        assert assembler.incomplete_reason()


# Bugs already reported in code owned elsewhere, as (exception type, function raising it):
# long runs step over them (counting hits) so they can find the next one.
KNOWN_BUGS: dict[str, set[tuple[str, str]]] = {}

TARGETS: dict[str, Callable[[bytes], None]] = {
    "responder": responder,
    "loader": loader,
    "stream": stream,
}
