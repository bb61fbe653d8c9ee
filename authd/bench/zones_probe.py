"""Watching thousands of zones on a server: bounded, paced SOA sampling and a loss-counting
query loop, both over one UDP socket on asyncio.

`wait_until` asks every zone still pending for its SOA, at most `rate` queries per second and
`window` in flight, until every zone passes the check or the deadline passes. A zone that
passed is not asked again, a pending one at most every 2% of the time waited so far (so the
time reported for the last zone is within 2% of the truth). The result says how many passed
and when the last one did, so a server that never finishes gives "X of N after T s" instead
of a hang. The pacing bounds what the sampling costs the server: at 4,000 qps a fast server
spends a few percent of a core.

`query_loop` sends questions at a fixed rate until told to stop and counts answers that are
authoritative NOERROR, other answers, and queries never answered (lost).

Replies are parsed by hand (`parse_reply`, pure): a reply counts only if its ID is
outstanding and it echoes the question asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from authd.bench.mix import Query, wire_query

QUERY_TIMEOUT = 1.0
_TICK = 0.002
_MIN_REASK = 0.02  # a zone is asked again at most every 20 ms, however few are pending
# ... and at most every 2% of the time waited so far: the time reported for the last zone is
# then within 2% of the truth, and a server that takes minutes is not flooded meanwhile.
RESOLUTION = 0.02


@dataclass(frozen=True)
class Reply:
    id: int
    rcode: int
    aa: bool
    question: bytes  # the question section as received (name, type, class), lowercased
    serial: int | None  # the first answer's SOA serial, when the answer starts with a SOA


def _skip_name(data: bytes, pos: int) -> int:
    """The offset just after the (possibly compressed) name at pos."""
    for _ in range(128):
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length & 0xC0:
            raise ValueError("bad label type")
        pos += length + 1
    raise ValueError("name too long")


def parse_reply(data: bytes) -> Reply | None:
    """The header, the question and the answer's SOA serial of a reply; None when it is not a
    well-formed response with one question."""
    try:
        if len(data) < 12 or not data[2] & 0x80:
            return None
        qid, flags, qdcount, ancount = struct.unpack_from("!HHHH", data)
        if qdcount != 1:
            return None
        end = _skip_name(data, 12) + 4
        if end > len(data):
            return None
        question = data[12:end].lower()
        serial = None
        if ancount:
            pos = _skip_name(data, end)
            rtype, _, _, rdlength = struct.unpack_from("!HHIH", data, pos)
            pos += 10
            if rtype == 6 and pos + rdlength <= len(data):
                pos = _skip_name(data, _skip_name(data, pos))  # MNAME, RNAME
                (serial,) = struct.unpack_from("!I", data, pos)
        return Reply(qid, flags & 0x0F, bool(flags & 0x0400), question, serial)
    except (IndexError, ValueError, struct.error):
        return None


Check = Callable[[Reply], bool]


def serves_serial(serial: int) -> Check:
    """The zone is served: authoritative NOERROR with this SOA serial."""
    return lambda reply: reply.rcode == 0 and reply.aa and reply.serial == serial


def serves_any(reply: Reply) -> bool:
    """The zone answers: authoritative NOERROR with a SOA, whatever its serial."""
    return reply.rcode == 0 and reply.aa and reply.serial is not None


def not_served(reply: Reply) -> bool:
    """The zone is gone: any answer that is not authoritative NOERROR (REFUSED, NOTAUTH...)."""
    return not (reply.rcode == 0 and reply.aa)


def answered_ok(reply: Reply) -> bool:
    return reply.rcode == 0 and reply.aa


@dataclass(frozen=True)
class Question:
    tail: bytes  # the packet from byte 2 on (the ID is patched in when sent)
    question: bytes  # the question section, lowercased, to match replies


def question(name: str, rdtype: str = "SOA") -> Question:
    wire = wire_query(Query(name if name.endswith(".") else name + ".", rdtype, "hits"))
    end = _skip_name(wire, 12) + 4
    return Question(wire[2:], wire[12:end].lower())


class _Channel:
    """One connected UDP socket: IDs, what is outstanding, replies matched to their question."""

    def __init__(self, host: str, port: int, on_reply: Callable[[int, Reply], None]) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)
        self.sock.connect((host, port))
        self.on_reply = on_reply
        self.outstanding: dict[int, tuple[int, float, bytes]] = {}  # id -> (item, sent, question)
        self.next_id = 1
        self.sent = 0

    def send(self, item: int, q: Question, now: float) -> bool:
        for _ in range(16):
            qid = self.next_id
            self.next_id = (self.next_id + 1) & 0xFFFF
            if qid not in self.outstanding:
                break
        else:
            return False
        try:
            self.sock.send(struct.pack("!H", qid) + q.tail)
        except (BlockingIOError, ConnectionRefusedError):
            return False
        self.outstanding[qid] = (item, now, q.question)
        self.sent += 1
        return True

    def readable(self) -> None:
        for _ in range(256):
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue  # nothing listens yet: the query times out
            reply = parse_reply(data)
            if reply is None:
                continue
            entry = self.outstanding.get(reply.id)
            if entry is None or entry[2] != reply.question:
                continue
            del self.outstanding[reply.id]
            self.on_reply(entry[0], reply)

    def expire(self, now: float, timeout: float) -> list[int]:
        """Forget queries older than timeout; returns their items."""
        old = [qid for qid, (_, sent, _) in self.outstanding.items() if now - sent > timeout]
        return [self.outstanding.pop(qid)[0] for qid in old]

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class WaitResult:
    total: int
    passed: int
    seconds: float  # from `started` to the last zone passing, or to the deadline
    timed_out: bool
    queries: int  # SOA queries the sampling sent
    missing: tuple[str, ...] = ()  # the first few zones that never passed
    stopped: str = ""  # why the wait ended early ("server exited"), else ""

    @property
    def complete(self) -> bool:
        return self.passed == self.total


async def wait_until(
    host: str,
    port: int,
    zones: Sequence[str],
    check: Check,
    timeout: float,
    started: float | None = None,
    rate: float = 4000.0,
    window: int = 200,
    alive: Callable[[], bool] | None = None,
) -> WaitResult:
    """Sample every zone's SOA until each passes `check`, or `timeout` s after `started`
    (time.monotonic(); default now). Bounded: it returns by the deadline whatever happens."""
    loop = asyncio.get_running_loop()
    begin = time.monotonic() if started is None else started
    deadline = begin + timeout
    questions = [question(zone) for zone in zones]
    pending = dict.fromkeys(range(len(zones)))  # insertion-ordered set
    asked_at = [0.0] * len(zones)
    in_flight: set[int] = set()
    last_pass = begin

    def on_reply(item: int, reply: Reply) -> None:
        nonlocal last_pass
        in_flight.discard(item)
        if item in pending and check(reply):
            del pending[item]
            last_pass = time.monotonic()

    channel = _Channel(host, port, on_reply)
    loop.add_reader(channel.sock.fileno(), channel.readable)
    stopped = ""
    try:
        cursor: list[int] = []
        tokens, tick_at = 0.0, time.monotonic()
        checked_alive = tick_at
        while pending:
            now = time.monotonic()
            if now >= deadline:
                break
            if alive is not None and now - checked_alive > 0.5:
                checked_alive = now
                if not alive():
                    stopped = "server exited"
                    break
            reask = max(_MIN_REASK, RESOLUTION * (now - begin))
            tokens = min(tokens + (now - tick_at) * rate, window)
            tick_at = now
            for item in channel.expire(now, QUERY_TIMEOUT):
                in_flight.discard(item)
            while tokens >= 1 and len(in_flight) < window:
                if not cursor:
                    cursor = [i for i in reversed(pending) if i not in in_flight]
                    if not cursor:
                        break
                item = cursor[-1]
                if item not in pending or item in in_flight:
                    cursor.pop()
                    continue
                if now - asked_at[item] < reask:
                    break  # the whole list was asked moments ago: wait for answers
                cursor.pop()
                if not channel.send(item, questions[item], now):
                    break
                asked_at[item] = now
                in_flight.add(item)
                tokens -= 1
            await asyncio.sleep(_TICK)
    finally:
        loop.remove_reader(channel.sock.fileno())
        channel.close()
    timed_out = bool(pending) and not stopped
    end = time.monotonic() if pending else last_pass
    return WaitResult(
        total=len(zones),
        passed=len(zones) - len(pending),
        seconds=end - begin,
        timed_out=timed_out,
        queries=channel.sent,
        missing=tuple(zones[i] for i in list(pending)[:5]),
        stopped=stopped,
    )


@dataclass(frozen=True)
class LoopResult:
    sent: int
    ok: int  # authoritative NOERROR
    bad: int  # answered, but not authoritative NOERROR
    lost: int  # never answered within the query timeout

    @property
    def failed(self) -> int:
        return self.bad + self.lost


async def query_loop(
    host: str, port: int, names: Sequence[str], rate: float, stop: asyncio.Event
) -> LoopResult:
    """Ask the SOA of `names` round-robin at `rate` qps until `stop` is set, then wait for the
    last answers (at most the query timeout) and count."""
    loop = asyncio.get_running_loop()
    questions = [question(name) for name in names]
    counts = {"ok": 0, "bad": 0}

    def on_reply(_: int, reply: Reply) -> None:
        counts["ok" if answered_ok(reply) else "bad"] += 1

    channel = _Channel(host, port, on_reply)
    loop.add_reader(channel.sock.fileno(), channel.readable)
    lost = 0
    try:
        begin = time.monotonic()
        index = 0
        while not stop.is_set():
            now = time.monotonic()
            due = int((now - begin) * rate) - channel.sent
            for _ in range(max(0, due)):
                if not channel.send(index, questions[index % len(questions)], now):
                    break
                index += 1
            lost += len(channel.expire(now, QUERY_TIMEOUT))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TICK)
        drain_until = time.monotonic() + QUERY_TIMEOUT
        while channel.outstanding and time.monotonic() < drain_until:
            await asyncio.sleep(0.01)
        lost += len(channel.outstanding)
    finally:
        loop.remove_reader(channel.sock.fileno())
        channel.close()
    return LoopResult(channel.sent, counts["ok"], counts["bad"], lost)
