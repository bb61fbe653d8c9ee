"""A controllable test primary: SOA, AXFR and IXFR over UDP and TCP, with TSIG and named faults.

Interface (everything a test needs):

    primary = TestPrimary(versions=[zone_v1, zone_v2], key=key)   # dnspython Zones, oldest first
    await primary.start()                      # binds 127.0.0.1 on a free port (UDP and TCP)
    primary.endpoint                           # ("127.0.0.1", port)
    primary.behaviour = Behaviour(fault=Fault.CUT_BEFORE_CLOSING_SOA)   # change at any time
    primary.versions.append(zone_v3)           # publish a new version (the last one is served)
    primary.queries                            # Counter of "SOA"/"AXFR"/"IXFR" queries answered
    await primary.stop()
    await send_notify(target, zone_name, serial, key)   # NOTIFY from the primary's side

Serial going backwards, or jumping by 2^31: append a zone with that serial to
`versions` (the last one is what SOA and AXFR answer).

The served version is `versions[-1]`; the earlier ones are the IXFR history. An IXFR
from a serial found in the history gets the chained diffs (RFC 1995), from the
current serial a lone SOA, from an unknown serial an AXFR-style answer.

Requests are checked against `key` (when set): a request signed with an unknown
key or a bad MAC gets NOTAUTH with the TSIG error, as Knot answers. Answers are
signed with `behaviour.answer_key` (default `key`) at time.time() + `time_offset`;
unsigned intermediate messages are chained into the MAC as RFC 8945 5.3.1 says.

The faults (`Fault`) are named after what a real primary or the network did
wrong; each test picks one. Messages are built with dnspython; signing is done
here on the wire so the clock, the key and which messages are signed stay under
the test's control.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TypeVar

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
import dns.zone

T = TypeVar("T")

Rec = tuple[dns.name.Name, int, dns.rdata.Rdata]
"""(absolute owner, ttl, rdata) of one record as the primary sends it."""
RecKey = tuple[dns.name.Name, int, bytes]


class Fault(Enum):
    NONE = "none"
    CUT_BEFORE_CLOSING_SOA = "cut-before-closing-soa"  # stream ends cleanly, closing SOA missing
    CLOSING_SOA_DIFFERS = "closing-soa-differs"
    RESET_MID_STREAM = "reset-mid-stream"  # TCP RST after half the messages
    SLOW_DRIP = "slow-drip"  # the answer trickles out one byte per `drip_interval`
    FLOOD = "flood"  # an AXFR that never ends (up to `flood_bytes`)
    WRONG_ID = "wrong-id"  # the last message of the answer carries another ID
    WRONG_QUESTION = "wrong-question"
    OUTSIDE_RECORD = "outside-record"  # a record owned by `outside_name` in the middle
    TWO_SOAS = "two-soas"  # a second, different apex SOA in the middle of an AXFR
    IXFR_BAD_DELETIONS = "ixfr-bad-deletions"  # IXFR deletes a record the zone does not hold
    IXFR_AXFR_STYLE = "ixfr-axfr-style"  # every IXFR is answered with the whole zone
    TRUNCATE_UDP = "truncate-udp"  # UDP SOA answers carry TC and no records
    UNSIGNED = "unsigned"  # no TSIG on any answer
    ONLY_FIRST_SIGNED = "only-first-signed"
    FIRST_AND_LAST_SIGNED = "first-and-last-signed"
    NO_ANSWER = "no-answer"  # accept the query, then stay silent


@dataclass
class Behaviour:
    fault: Fault = Fault.NONE
    rcodes: dict[str, int] = field(default_factory=dict)  # "SOA"/"AXFR"/"IXFR" -> rcode
    answer_key: dns.tsig.Key | None = None  # sign answers with this key instead of `key`
    time_offset: int = 0  # seconds our clock is off: used when signing answers
    accept_any_request_time: bool = False  # skip the fudge check on requests
    records_per_message: int = 50
    drip_interval: float = 1.0
    flood_bytes: int = 8 << 20
    outside_name: str = "evil.other.test."


def zone_records(zone: dns.zone.Zone) -> list[Rec]:
    """The zone's records, SOA first, owners absolute."""
    soa: list[Rec] = []
    rest: list[Rec] = []
    origin = zone.origin
    assert origin is not None
    for name, ttl, rdata in zone.iterate_rdatas():
        owner = name.derelativize(origin)
        (soa if rdata.rdtype == dns.rdatatype.SOA else rest).append((owner, ttl, rdata))
    return soa + rest


def zone_serial(zone: dns.zone.Zone) -> int:
    soa = zone_records(zone)[0][2]
    assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
    return int(soa.serial)


def _serial_of(record: Rec) -> int:
    rdata = record[2]
    assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
    return int(rdata.serial)


def _with_serial(record: Rec, serial: int) -> Rec:
    owner, ttl, rdata = record
    return owner, ttl, rdata.replace(serial=serial)


class TestPrimary:
    __test__ = False  # not a pytest class

    def __init__(
        self,
        versions: list[dns.zone.Zone],
        *,
        key: dns.tsig.Key | None = None,
        behaviour: Behaviour | None = None,
        host: str = "127.0.0.1",
        immutable_versions: bool = False,
    ) -> None:
        self.versions = versions
        # With immutable versions (never changed once published), each one's records are
        # listed once, not per answer: IXFR over large zones stays cheap.
        self.immutable_versions = immutable_versions
        self._cache: dict[int, tuple[dns.zone.Zone, list[Rec], set[RecKey]]] = {}
        self.key = key
        self.behaviour = behaviour or Behaviour()
        self.host = host
        self.port = 0
        self.queries: Counter[str] = Counter()
        self.connections = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def zone(self) -> dns.zone.Zone:
        return self.versions[-1]

    def _cached(self, zone: dns.zone.Zone) -> tuple[list[Rec], set[RecKey]]:
        entry = self._cache.get(id(zone)) if self.immutable_versions else None
        if entry is None or entry[0] is not zone:
            records = zone_records(zone)
            keys = {(o, r.rdtype, r.to_digestable()) for o, _, r in records[1:]}
            entry = (zone, records, keys)
            if self.immutable_versions:
                live = {id(v) for v in self.versions}
                self._cache = {k: v for k, v in self._cache.items() if k in live}
                self._cache[id(zone)] = entry
        return entry[1], entry[2]

    def publish(self, zone: dns.zone.Zone) -> None:
        """Append a version; with immutable versions its records are listed right away, so
        the first IXFR or AXFR that includes it starts without that delay."""
        self.versions.append(zone)
        if self.immutable_versions:
            self._cached(zone)

    def _records(self, zone: dns.zone.Zone) -> list[Rec]:
        return self._cached(zone)[0]

    def _record_keys(self, zone: dns.zone.Zone) -> set[RecKey]:
        """(owner, type, rdata wire) of every record but the SOA, for IXFR differences."""
        return self._cached(zone)[1]

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, 0, family=family)
            self.port = self._tcp.sockets[0].getsockname()[1]
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(self.host, self.port), family=family
                )
            except OSError:
                self._tcp.close()
                await self._tcp.wait_closed()
                continue
            return self.endpoint
        raise RuntimeError("no port free for both UDP and TCP")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        # Abort the open connections: their handlers see the end and return.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._tcp is not None:
            await self._tcp.wait_closed()

    # -- request handling --------------------------------------------------------

    def _parse_request(self, wire: bytes) -> tuple[dns.message.Message, bytes | None]:
        """The request, and an error answer when its TSIG is not acceptable."""
        query = dns.message.from_wire(wire, keyring=False)
        if self.key is None:
            return query, None
        tsig_error = None
        if query.tsig is None or query.keyname != self.key.name:
            tsig_error = dns.rcode.BADKEY
        else:
            try:
                dns.message.from_wire(wire, keyring={self.key.name: self.key})
            except dns.tsig.BadTime:
                # The MAC verified (dnspython checks the time after it).
                if not self.behaviour.accept_any_request_time:
                    tsig_error = dns.rcode.BADTIME
            except (dns.tsig.BadSignature, dns.tsig.BadAlgorithm, dns.tsig.BadKey):
                tsig_error = dns.rcode.BADSIG
        if tsig_error is None:
            return query, None
        # NOTAUTH with a TSIG error under the request's key name and an empty MAC; for
        # BADTIME, Other Data carries our clock (RFC 8945 5.2.3).
        response = _response(query)
        response.set_rcode(dns.rcode.NOTAUTH)
        response.flags &= ~dns.flags.AA
        now = int(time.time()) + self.behaviour.time_offset
        other = struct.pack(">HI", now >> 32, now & 0xFFFFFFFF) if tsig_error == 18 else b""
        owner = query.keyname or self.key.name
        algorithm = query.keyalgorithm or self.key.algorithm
        rdata = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            algorithm,
            now,
            300,
            b"",
            query.id,
            tsig_error,
            other,
        )
        return query, _with_tsig_record(response.to_wire(), owner, rdata)

    def _qtype_label(self, query: dns.message.Message) -> str:
        return dns.rdatatype.to_text(query.question[0].rdtype) if query.question else "?"

    def answer_udp(self, wire: bytes) -> bytes | None:
        query, refusal = self._parse_request(wire)
        if refusal is not None:
            return refusal
        label = self._qtype_label(query)
        self.queries[label] += 1
        if self.behaviour.fault is Fault.NO_ANSWER:
            return None
        if label != "SOA":
            response = _response(query)
            response.set_rcode(dns.rcode.REFUSED)
            return next(self._sign_all([response], query))
        response = self._soa_answer(query)
        if self.behaviour.fault is Fault.TRUNCATE_UDP:
            response.answer.clear()
            response.flags |= dns.flags.TC
        return next(self._sign_all([response], query))

    def answer_tcp(self, wire: bytes) -> Iterator[bytes]:
        query, refusal = self._parse_request(wire)
        if refusal is not None:
            return iter([refusal])
        label = self._qtype_label(query)
        self.queries[label] += 1
        if self.behaviour.fault is Fault.NO_ANSWER:
            return iter([])
        if label == "SOA":
            return self._sign_all([self._soa_answer(query)], query)
        if label not in ("AXFR", "IXFR"):
            response = _response(query)
            response.set_rcode(dns.rcode.REFUSED)
            return self._sign_all([response], query)
        rcode = self.behaviour.rcodes.get(label)
        if rcode is not None:
            response = _response(query)
            response.set_rcode(dns.rcode.Rcode(rcode))
            return self._sign_all([response], query)
        if label == "AXFR" and self.behaviour.fault is Fault.FLOOD:
            flood, count = self._flood(query)
            return self._sign_all(flood, query, count)
        records = self._axfr_records() if label == "AXFR" else self._ixfr_records(query)
        records = self._apply_record_faults(records, label)
        return self._sign_all(self._messages(query, records), query)

    def _soa_answer(self, query: dns.message.Message) -> dns.message.Message:
        response = _response(query)
        response.flags |= dns.flags.AA
        rcode = self.behaviour.rcodes.get("SOA")
        if rcode is not None:
            response.set_rcode(dns.rcode.Rcode(rcode))
            return response
        owner, ttl, rdata = self._records(self.zone)[0]
        response.answer.append(dns.rrset.from_rdata(owner, ttl, rdata))
        return response

    # -- record streams --------------------------------------------------------------

    def _axfr_records(self) -> list[Rec]:
        records = self._records(self.zone)
        return [*records, records[0]]

    def _ixfr_records(self, query: dns.message.Message) -> list[Rec]:
        current = self._records(self.zone)
        if self.behaviour.fault is Fault.IXFR_AXFR_STYLE or not query.authority:
            return [*current, current[0]]
        client_soa = query.authority[0][0]
        serials = [_serial_of(self._records(zone)[0]) for zone in self.versions]
        if client_soa.serial == serials[-1]:
            return [current[0]]
        if client_soa.serial not in serials[:-1]:
            return [*current, current[0]]
        start = serials.index(client_soa.serial)
        out: list[Rec] = [current[0]]
        for older, newer in zip(self.versions[start:-1], self.versions[start + 1 :], strict=True):
            old_records, new_records = self._records(older), self._records(newer)
            old_set, new_set = self._record_keys(older), self._record_keys(newer)
            out.append(old_records[0])
            out.extend(
                rec
                for rec in old_records[1:]
                if (rec[0], rec[2].rdtype, rec[2].to_digestable()) not in new_set
            )
            if self.behaviour.fault is Fault.IXFR_BAD_DELETIONS:
                origin = self.zone.origin
                assert origin is not None
                bogus = dns.rdata.from_text("IN", "TXT", '"never in the zone"')
                out.append((dns.name.from_text("not-there", origin), 300, bogus))
            out.append(new_records[0])
            out.extend(
                rec
                for rec in new_records[1:]
                if (rec[0], rec[2].rdtype, rec[2].to_digestable()) not in old_set
            )
        out.append(current[0])
        return out

    def _apply_record_faults(self, records: list[Rec], label: str) -> list[Rec]:
        fault = self.behaviour.fault
        middle = max(1, len(records) // 2)
        if fault is Fault.CUT_BEFORE_CLOSING_SOA:
            return records[:-1]
        if fault is Fault.CLOSING_SOA_DIFFERS:
            closing = records[-1]
            return [*records[:-1], _with_serial(closing, (_serial_of(closing) + 1) % 2**32)]
        if fault is Fault.OUTSIDE_RECORD:
            outsider = dns.name.from_text(self.behaviour.outside_name)
            rdata = dns.rdata.from_text("IN", "A", "192.0.2.66")
            return [*records[:middle], (outsider, 300, rdata), *records[middle:]]
        if fault is Fault.TWO_SOAS and label == "AXFR":
            other = _with_serial(records[0], (_serial_of(records[0]) + 7) % 2**32)
            return [*records[:middle], other, *records[middle:]]
        return records

    def _messages(
        self, query: dns.message.Message, records: list[Rec]
    ) -> list[dns.message.Message]:
        per_message = max(1, self.behaviour.records_per_message)
        messages = []
        for start in range(0, max(1, len(records)), per_message):
            response = _response(query)
            response.flags |= dns.flags.AA
            if start:
                response.question.clear()
            for owner, ttl, rdata in records[start : start + per_message]:
                response.answer.append(dns.rrset.from_rdata(owner, ttl, rdata))
            messages.append(response)
        return messages

    def _flood(self, query: dns.message.Message) -> tuple[Iterator[dns.message.Message], int]:
        """An AXFR that keeps going: the same block of distinct records, over and over."""
        origin = self.zone.origin
        assert origin is not None
        per_message = max(1, self.behaviour.records_per_message)
        soa = self._records(self.zone)[0]
        block = self._messages(query, [soa])[0]
        body = _response(query)
        body.question.clear()
        rdata = dns.rdata.from_text("IN", "A", "192.0.2.99")
        for i in range(per_message):
            owner = dns.name.from_text(f"flood{i}", origin)
            body.answer.append(dns.rrset.from_rdata(owner, 300, rdata))
        size = len(body.to_wire())
        count = 1 + max(1, self.behaviour.flood_bytes // size)

        def messages() -> Iterator[dns.message.Message]:
            yield block
            for _ in range(count - 1):
                yield body

        return messages(), count

    def _sign_all(
        self,
        messages: Iterable[dns.message.Message],
        query: dns.message.Message,
        count: int | None = None,
    ) -> Iterator[bytes]:
        """Render and sign (as the behaviour says) the answer messages, lazily."""
        fault = self.behaviour.fault
        if count is None:
            messages = list(messages)
            count = len(messages)
        last = count - 1
        key = self.behaviour.answer_key or self.key
        signing = key is not None and self.key is not None and fault is not Fault.UNSIGNED
        ctx = None
        request_mac = (query.mac or b"") if query.had_tsig else b""
        now = int(time.time()) + self.behaviour.time_offset
        for index, message in enumerate(messages):
            if index == 0 and fault is Fault.WRONG_QUESTION:
                origin = self.zone.origin
                assert origin is not None
                question = message.question[0]
                wrong = dns.name.from_text("wrong", origin)
                message.question = [dns.rrset.RRset(wrong, question.rdclass, question.rdtype)]
            if index == last and fault is Fault.WRONG_ID:
                message.id = (message.id + 1) % 65536
            wire = message.to_wire(max_size=65535)
            if not signing:
                yield wire
                continue
            assert key is not None
            sign = True
            if fault is Fault.ONLY_FIRST_SIGNED:
                sign = index == 0
            elif fault is Fault.FIRST_AND_LAST_SIGNED:
                sign = index in (0, last)
            if not sign:
                assert ctx is not None
                ctx.update(wire)  # type: ignore[attr-defined]
                yield wire
                continue
            out, ctx = _sign_in_sequence(wire, key, now, request_mac, ctx, query.id)
            yield out

    # -- transports -----------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                try:
                    length = struct.unpack(">H", await reader.readexactly(2))[0]
                    wire = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                answers = self.answer_tcp(wire)
                await self._send(writer, answers)
        except (ConnectionError, OSError):
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, answers: Iterator[bytes]) -> None:
        fault = self.behaviour.fault
        framed: Iterator[bytes] = (struct.pack(">H", len(wire)) + wire for wire in answers)
        if fault is Fault.RESET_MID_STREAM:
            chunks = list(framed)
            for chunk in chunks[: max(1, len(chunks) // 2)]:
                writer.write(chunk)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            raise ConnectionResetError("reset on purpose")
        if fault is Fault.SLOW_DRIP:
            for byte in b"".join(framed):
                if writer.transport.is_closing():
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(self.behaviour.drip_interval)
            return
        for chunk in framed:
            writer.write(chunk)
            await writer.drain()
        if fault is Fault.CUT_BEFORE_CLOSING_SOA:
            writer.close()
            raise ConnectionResetError("closed on purpose")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, primary: TestPrimary) -> None:
        self.primary = primary
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            answer = self.primary.answer_udp(data)
        except Exception:  # a test primary must survive any input; drop it
            return
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)


async def send_notify(
    target: tuple[str, int],
    zone: str,
    serial: int | None = None,
    key: dns.tsig.Key | None = None,
    *,
    source: str | None = None,
    timeout: float = 2.0,
) -> dns.message.Message | None:
    """Send one NOTIFY over UDP (as a primary does); the answer, or None on timeout."""
    message = dns.message.make_query(zone, dns.rdatatype.SOA)
    message.flags = dns.flags.AA
    message.set_opcode(dns.opcode.NOTIFY)
    if serial is not None:
        soa = dns.rdata.from_text("IN", "SOA", f". . {serial} 3600 900 1209600 300")
        message.answer.append(dns.rrset.from_rdata(zone, 0, soa))
    if key is not None:
        message.use_tsig(key)
    try:
        return await dns.asyncquery.udp(
            message, target[0], timeout=timeout, port=target[1], source=source
        )
    except dns.exception.Timeout:
        return None


def _response(query: dns.message.Message) -> dns.message.Message:
    """An unsigned response skeleton; TSIG is added on the wire by _sign_all."""
    response = dns.message.make_response(query)
    response.tsig = None
    return response


# -- TSIG on the wire ------------------------------------------------------------------


def _with_tsig_record(wire: bytes, owner: dns.name.Name, rdata: dns.rdata.Rdata) -> bytes:
    body = rdata.to_wire()
    assert body is not None
    owner_wire = owner.to_wire()
    assert owner_wire is not None
    record = owner_wire + struct.pack(">HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(body))
    arcount = struct.unpack_from(">H", wire, 10)[0] + 1
    return wire[:10] + struct.pack(">H", arcount) + wire[12:] + record + body


def _sign_in_sequence(
    wire: bytes,
    key: dns.tsig.Key,
    now: int,
    request_mac: bytes,
    ctx: object | None,
    original_id: int,
) -> tuple[bytes, object]:
    template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
        dns.rdataclass.ANY, dns.rdatatype.TSIG, key.algorithm, now, 300, b"", original_id, 0, b""
    )
    signed, next_ctx = dns.tsig.sign(  # type: ignore[no-untyped-call]
        wire, key, template, now, request_mac, ctx, True
    )
    return _with_tsig_record(wire, key.name, signed), next_ctx


# -- running it next to a live `authd serve` (the end-to-end fault tests) -----------------


def make_zone(
    origin: str,
    serial: int,
    *,
    hosts: int = 20,
    refresh: int = 3600,
    retry: int = 600,
    expire: int = 86400,
    tag: str = "",
) -> dns.zone.Zone:
    """A small zone whose content follows `serial` (and `tag`), so every version differs."""
    lines = [
        f"@ 300 IN SOA ns1 hostmaster {serial} {refresh} {retry} {expire} 300",
        "@ 300 IN NS ns1",
        "ns1 300 IN A 192.0.2.1",
        f'version 300 IN TXT "{serial}{tag}"',
    ]
    lines.extend(f"h{i} 300 IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(hosts))
    return dns.zone.from_text("\n".join(lines) + "\n", origin, relativize=False)


class PrimaryThread:
    """A TestPrimary on its own event loop in a daemon thread, for tests that block.

    Setting `primary.behaviour` or appending to `primary.versions` from the test thread is
    safe: each request reads them once per answer, under the GIL.
    """

    def __init__(self, primary: TestPrimary) -> None:
        self.primary = primary
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> TestPrimary:
        self._thread.start()
        self.run(self.primary.start())
        return self.primary

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.primary.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self.loop.close()

    def run(self, coroutine: Coroutine[object, object, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


KEY_NAME = "xfr"
KEY_SECRET = "+phZxHr8fnYDiQ/Ja7clqsa1rNx7ef31WR3AaK+bkTg="  # a test secret, loopback only


def test_key(secret: str = KEY_SECRET, name: str = KEY_NAME) -> dns.tsig.Key:
    return dns.tsig.Key(name, secret, dns.tsig.HMAC_SHA256)


test_key.__test__ = False  # type: ignore[attr-defined]


@dataclass
class LiveSecondary:
    """`authd serve` as a subprocess, secondary for one zone from a primary on loopback.

    Everything lives in `directory`: config, key file, state dir, control socket, log.
    Stopped by its own PID (SIGTERM, then SIGKILL); `kill()` is the crash (SIGKILL).
    """

    directory: Path
    zone: str
    primary: tuple[str, int]
    zone_settings: str = ""
    server_settings: str = ""
    transfer_settings: str = "timeout = 4\nidle-timeout = 1.5"
    state_dir: Path | None = None
    port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "authd.log"

    @property
    def socket(self) -> Path:
        return self.directory / "authd.sock"

    @property
    def state(self) -> Path:
        return self.state_dir or self.directory / "state"

    def write_config(self) -> Path:
        from tests.support.system import free_port

        self.directory.mkdir(parents=True, exist_ok=True)
        self.port, self.metrics_port = free_port(), free_port()
        (self.directory / "xfr.key").write_text(
            f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{KEY_SECRET}"; }};\n'
        )
        config = self.directory / "authd.toml"
        config.write_text(
            "[server]\n"
            f'listen = ["127.0.0.1@{self.port}"]\n'
            "workers = 1\n"
            f'state-dir = "{self.state}"\n'
            'control-socket = "authd.sock"\n'
            f'metrics = "127.0.0.1@{self.metrics_port}"\n'
            f"{self.server_settings}\n"
            '[tsig]\nkey-files = ["xfr.key"]\n'
            f"[transfer]\n{self.transfer_settings}\n"
            "[[remote]]\n"
            'id = "primary"\n'
            f'addresses = ["{self.primary[0]}@{self.primary[1]}"]\n'
            f'key = "{KEY_NAME}"\n'
            "[[zone]]\n"
            f'name = "{self.zone}"\n'
            'primaries = ["primary"]\n'
            'dnssec-validation = "off"\n'
            "refresh-min = 1\nretry-min = 1\nexpire-min = 1\n"
            f"{self.zone_settings}\n"
        )
        return config

    def start(self, wait: float = 20.0, *, refresh: bool = True) -> None:
        from authd.control import ControlUnreachable

        config = self.write_config()
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "authd.cli", "serve", "-c", str(config)],
                cwd=self.directory,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"authd exited {self.process.returncode}:\n{self.log_text()}")
            if self.socket.exists():
                try:
                    self.status()
                    if refresh:  # skip the startup spread of the first refresh
                        self.refresh()
                    return
                except (OSError, ControlUnreachable):  # a stale socket from a killed run
                    pass
            time.sleep(0.05)
        raise AssertionError(f"authd not up after {wait} s:\n{self.log_text()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def kill(self) -> None:
        """The crash: SIGKILL our own process by PID, no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- what it says and serves ------------------------------------------------------

    def control(self, command: str, **args: object) -> object:
        from authd import control

        return control.call(self.socket, command, timeout=10, **args)

    def status(self) -> dict[str, object]:
        result = self.control("status", zone=self.zone)
        assert isinstance(result, list) and len(result) == 1
        status = result[0]
        assert isinstance(status, dict)
        return status

    def refresh(self) -> None:
        self.control("refresh", zone=self.zone)

    def served_soa(self) -> tuple[int, int] | None:
        """(rcode, serial) of the SOA authd answers now; serial -1 when there is none."""
        import dns.query

        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        try:
            answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=1.0)
        except (dns.exception.Timeout, OSError):
            return None
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                rdata = rrset[0]
                assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
                return answer.rcode(), int(rdata.serial)
        return answer.rcode(), -1

    def served_serial(self) -> int | None:
        soa = self.served_soa()
        return soa[1] if soa is not None and soa[0] == dns.rcode.NOERROR else None

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics: 'name{labels}' -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for sample, value in self.metrics().items():
            base, _, rest = sample.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}; status {self.status()}\n"
            f"{self.log_text()[-3000:]}"
        )

    def wait_serial(self, serial: int, timeout: float = 10.0) -> None:
        self.wait_for(lambda: self.served_serial() == serial, f"serial {serial}", timeout)
