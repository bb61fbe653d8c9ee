"""The built-in load generator: asyncio (uvloop when present), UDP and pipelined TCP.

Two modes:
- closed loop ("max"): a fixed number of queries outstanding, each answer (or timeout) sends the
  next one; measures the most the server delivers to one Python client core.
- fixed rate: queries are sent on a 1 ms tick to hold `rate` qps, with at most `outstanding`
  in flight; each answer's latency is recorded for p50/p99. If the client cannot keep up, the
  result says so (LoadResult.held_rate) instead of reporting latencies of a lower load.

Queries are prebuilt wire packets; sending patches a fresh ID in. A response counts only if its
ID is outstanding and it echoes the question sent (case-insensitively), so stray or late
packets are not counted as answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from authd.bench.mix import Query, wire_query
from authd.bench.results import LoadResult

_RCODE_NAMES = (
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
)
_SWEEP_INTERVAL = 0.05
_TICK = 0.001
_UDP_BATCH = 64


@dataclass(frozen=True)
class Prepared:
    """One query ready to send: its packet without the ID, and the question to match."""

    tail: bytes  # the packet from byte 2 on
    question: bytes  # lowercased question section (name, type, class)
    tcp: bool


def prepare(queries: Sequence[Query]) -> list[Prepared]:
    out: list[Prepared] = []
    for query in queries:
        wire = wire_query(query)
        end = _question_end(wire)
        out.append(Prepared(wire[2:], wire[12:end].lower(), query.tcp))
    return out


def _question_end(wire: bytes) -> int:
    pos = 12
    while wire[pos]:
        pos += wire[pos] + 1
    return pos + 5  # root label, type, class


@dataclass(frozen=True)
class GeneratorSettings:
    host: str
    port: int
    seconds: float
    outstanding: int = 100
    rate: float | None = None  # None = closed loop
    timeout: float = 1.0
    tcp_connections: int = 4


class _Engine:
    """The shared bookkeeping of both modes and both transports."""

    def __init__(self, prepared: list[Prepared], settings: GeneratorSettings) -> None:
        self.prepared = prepared
        self.settings = settings
        self.pending: dict[int, tuple[float, int]] = {}  # id -> (sent at, query index)
        self.next_id = 0
        self.cursor = 0
        self.sent = 0
        self.completed = 0
        self.lost = 0
        self.truncated = 0
        self.mismatched = 0
        self.rcodes = [0] * 16
        self.latencies: list[float] = []
        self.sending = True
        self.record_latency = settings.rate is not None
        self.udp: socket.socket | None = None
        self.tcp: list[_TcpChannel] = []
        self.tcp_turn = 0
        self.drained = asyncio.Event()

    def send_next(self) -> bool:
        """Send the next query of the mix; False if no ID or channel is free."""
        index = self.cursor
        item = self.prepared[index]
        self.cursor = (index + 1) % len(self.prepared)
        query_id = self.next_id
        for _ in range(8):  # skip IDs still outstanding (rare: <=65536 in flight)
            if query_id not in self.pending:
                break
            query_id = (query_id + 1) & 0xFFFF
        else:
            return False
        self.next_id = (query_id + 1) & 0xFFFF
        packet = struct.pack("!H", query_id) + item.tail
        if item.tcp:
            if not self.tcp:
                return False
            channel = self.tcp[self.tcp_turn % len(self.tcp)]
            self.tcp_turn += 1
            channel.send(packet)
        else:
            assert self.udp is not None
            try:
                self.udp.send(packet)
            except (BlockingIOError, ConnectionRefusedError):
                return False
        self.pending[query_id] = (time.perf_counter(), index)
        self.sent += 1
        return True

    def on_response(self, data: bytes) -> None:
        if len(data) < 12:
            self.mismatched += 1
            return
        query_id = (data[0] << 8) | data[1]
        entry = self.pending.get(query_id)
        if entry is None:
            self.mismatched += 1
            return
        sent_at, index = entry
        question = self.prepared[index].question
        if data[12 : 12 + len(question)].lower() != question:
            self.mismatched += 1
            return
        del self.pending[query_id]
        self.completed += 1
        self.rcodes[data[3] & 0x0F] += 1
        if data[2] & 0x02:
            self.truncated += 1
        if self.record_latency:
            self.latencies.append((time.perf_counter() - sent_at) * 1000.0)
        if self.sending and self.settings.rate is None:
            self.send_next()
        elif not self.sending and not self.pending:
            self.drained.set()

    def sweep(self) -> None:
        """Count queries older than the timeout as lost (and, in closed loop, replace them)."""
        deadline = time.perf_counter() - self.settings.timeout
        expired = [qid for qid, (sent_at, _) in self.pending.items() if sent_at < deadline]
        for qid in expired:
            del self.pending[qid]
            self.lost += 1
            if self.sending and self.settings.rate is None:
                self.send_next()
        if not self.sending and not self.pending:
            self.drained.set()

    def rcode_counts(self) -> dict[str, int]:
        names = {i: name for i, name in enumerate(_RCODE_NAMES)}
        return {names.get(i, f"RCODE{i}"): n for i, n in enumerate(self.rcodes) if n}


class _TcpChannel(asyncio.Protocol):
    """One TCP connection carrying many pipelined queries (RFC 7766 6.2.1.1)."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, packet: bytes) -> None:
        assert self.transport is not None
        self.transport.write(struct.pack("!H", len(packet)) + packet)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        pos = 0
        while len(buffer) - pos >= 2:
            length = (buffer[pos] << 8) | buffer[pos + 1]
            if len(buffer) - pos - 2 < length:
                break
            self.engine.on_response(buffer[pos + 2 : pos + 2 + length])
            pos += 2 + length
        self.buffer = buffer[pos:]


async def run(prepared: Sequence[Prepared], settings: GeneratorSettings) -> LoadResult:
    """Load the server for settings.seconds, then wait up to the timeout for late answers."""
    if not prepared:
        raise ValueError("no queries to send")
    engine = _Engine(list(prepared), settings)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.setblocking(False)
    udp.connect((settings.host, settings.port))
    engine.udp = udp
    transports: list[asyncio.BaseTransport] = []
    try:
        if any(item.tcp for item in engine.prepared):
            for _ in range(settings.tcp_connections):
                connection, channel = await loop.create_connection(
                    lambda: _TcpChannel(engine), settings.host, settings.port
                )
                transports.append(connection)
                engine.tcp.append(channel)
        loop.add_reader(udp.fileno(), _drain_udp, udp, engine)
        started = time.perf_counter()
        stop_at = started + settings.seconds
        if settings.rate is None:
            for _ in range(settings.outstanding):
                engine.send_next()
            while time.perf_counter() < stop_at:
                await asyncio.sleep(_SWEEP_INTERVAL)
                engine.sweep()
        else:
            await _fixed_rate(engine, settings.rate, started, stop_at)
        elapsed = time.perf_counter() - started
        engine.sending = False
        engine.sweep()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_drain(engine), settings.timeout + _SWEEP_INTERVAL * 2)
        engine.lost += len(engine.pending)
        engine.pending.clear()
    finally:
        loop.remove_reader(udp.fileno())
        udp.close()
        for transport in transports:
            transport.close()
    return LoadResult(
        driver="builtin",
        sent=engine.sent,
        completed=engine.completed,
        lost=engine.lost,
        seconds=elapsed,
        rcodes=engine.rcode_counts(),
        latencies_ms=tuple(engine.latencies),
        target_qps=settings.rate,
        truncated=engine.truncated,
        mismatched=engine.mismatched,
    )


async def _drain(engine: _Engine) -> None:
    while engine.pending:
        engine.drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(engine.drained.wait(), _SWEEP_INTERVAL)
        engine.sweep()


async def _fixed_rate(engine: _Engine, rate: float, started: float, stop_at: float) -> None:
    limit = engine.settings.outstanding
    sweep_at = started + _SWEEP_INTERVAL
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            return
        due = int((now - started) * rate) - engine.sent
        room = limit - len(engine.pending)
        for _ in range(min(due, room)):
            if not engine.send_next():
                break
        if now >= sweep_at:
            engine.sweep()
            sweep_at = now + _SWEEP_INTERVAL
        await asyncio.sleep(_TICK)


def _drain_udp(sock: socket.socket, engine: _Engine) -> None:
    # Read what is queued, one loop wakeup per batch rather than per datagram; but a bounded
    # batch, since each answer sends the next query and a fast server would keep this busy
    # forever, starving the timers that end the run.
    for _ in range(_UDP_BATCH):
        try:
            data = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:
            continue  # an ICMP port unreachable: the query stays pending and times out
        engine.on_response(data)


def run_sync(prepared: Sequence[Prepared], settings: GeneratorSettings) -> LoadResult:
    """Run the generator on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(prepared, settings))
    return uvloop.run(run(prepared, settings))
