"""NOTIFY out (RFC 1996): after a publish, tell the zone's `notify` remotes. Pure core, thin shell.

`NotifySchedule` (pure, `now` passed in) decides who gets what and when:

    publish(zone, serial) --notify-delay--> round starts: every target gets a NOTIFY
        target answered (any rcode)          -> done: outcome ok / <rcode> / bad-tsig
        no answer within RETRY_AFTER[n]      -> sent again (attempt n+1)
        no answer after the last attempt     -> done: outcome timeout
    publish again while a round waits or runs -> the round restarts with the newest serial
                                                 (one round per burst: coalesced per zone)

Invariants: at most one round per zone; a target is in a round until it has one outcome;
every target of a round gets exactly one outcome unless a newer publish replaces the round
(its targets are then notified of the newer serial instead, as RFC 1996 4.7 expects of a
primary whose zone changed again).

`NotifySender` is the asyncio shell: UDP sockets opened while a round runs and closed when
idle (no per-zone socket, task or timer), one timer for all zones, TSIG with each remote's
key, and the outcomes counted in `ControlPlaneStats.notifies_sent` ->
`authd_xfr_notifies_sent_total{zone,remote,result}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import secrets
import struct
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import dns.exception
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from authd.clock import Clock
from authd.config import Remote, ZoneConfig
from authd.keys import TsigKey
from authd.xfr.stream import StreamError, parse_message, sign_message
from authd.zone import names

log = logging.getLogger("authd.notify")

OPCODE_NOTIFY = 4
SOA = 6
# Seconds to wait for an answer after attempt 1, 2, ...: five sends over ~31 s, growing
# (RFC 1996 3.6 asks for retransmission with an operational interval and count; NSD
# sends 5, Knot retries a few times).
RETRY_AFTER: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
START_WAIT = 120.0  # seconds NOTIFYs of versions loaded at start-up wait for the workers


@dataclass(frozen=True, slots=True)
class Target:
    """One address of one `notify` remote."""

    remote: str  # the [[remote]] id (metric label)
    host: str
    port: int
    key: TsigKey | None = None
    source: str | None = None  # our address towards it (the remote's `source`)

    @property
    def address(self) -> str:
        return f"{self.host}@{self.port}"


def targets_of(remotes: Sequence[Remote]) -> tuple[Target, ...]:
    return tuple(
        Target(r.id, a.host, a.port, r.key, r.source.host if r.source else None)
        for r in remotes
        for a in r.addresses
    )


@dataclass(frozen=True, slots=True)
class Send:
    """Send the zone's NOTIFY for `serial` to `target` (attempt 1 is the first)."""

    zone: bytes
    serial: int
    target: Target
    attempt: int


@dataclass(frozen=True, slots=True)
class Outcome:
    zone: bytes
    serial: int
    target: Target
    result: str  # ok | timeout | refused | notauth | ... | bad-tsig | error
    attempts: int


@dataclass(slots=True)
class _Pending:
    attempts: int = 0
    next_at: float = 0.0


@dataclass(slots=True)
class _Round:
    serial: int
    soa: tuple[int, bytes]  # ttl, rdata
    starts_at: float
    ident: int  # which round of the zone this is (heap entries of older rounds are stale)
    pending: dict[Target, _Pending] = field(default_factory=dict)


class NotifySchedule:
    """Who is notified of what and when; see the module docstring. Pure.

    The wake-ups are a heap of (time, round, zone, target); entries of answered targets or
    replaced rounds are dropped when they come up, so every operation costs O(log n) in the
    number of targets waiting, not a pass over every zone (many zones notify at start-up).
    """

    def __init__(self, retry_after: Sequence[float] = RETRY_AFTER) -> None:
        self.retry_after = tuple(retry_after)
        self.rounds: dict[bytes, _Round] = {}
        self._heap: list[tuple[float, int, int, bytes, Target]] = []  # at, tie, round, ...
        self._ties = itertools.count()
        self._rounds_started = 0

    def published(
        self,
        zone: bytes,
        serial: int,
        soa: tuple[int, bytes],
        targets: Sequence[Target],
        now: float,
        delay: float,
    ) -> None:
        if not targets:
            self.rounds.pop(zone, None)
            return
        current = self.rounds.get(zone)
        starts_at = now + delay
        if current is not None and current.starts_at > now:
            starts_at = current.starts_at  # still waiting: the burst keeps its start
        self._rounds_started += 1
        ident = self._rounds_started
        self.rounds[zone] = _Round(
            serial, soa, starts_at, ident, {target: _Pending(0, starts_at) for target in targets}
        )
        for target in dict.fromkeys(targets):
            heapq.heappush(self._heap, (starts_at, next(self._ties), ident, zone, target))

    def _live(self, entry: tuple[float, int, int, bytes, Target]) -> _Pending | None:
        at, _, ident, zone, target = entry
        round_ = self.rounds.get(zone)
        if round_ is None or round_.ident != ident:
            return None
        state = round_.pending.get(target)
        return state if state is not None and state.next_at == at else None

    def due(self, now: float) -> tuple[list[Send], list[Outcome]]:
        """The NOTIFYs to send now, and the targets given up on."""
        sends: list[Send] = []
        outcomes: list[Outcome] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            state = self._live(entry)
            if state is None:
                continue
            _, _, ident, zone, target = entry
            round_ = self.rounds[zone]
            if state.attempts >= len(self.retry_after):
                del round_.pending[target]
                outcomes.append(Outcome(zone, round_.serial, target, "timeout", state.attempts))
                if not round_.pending:
                    del self.rounds[zone]
                continue
            state.next_at = now + self.retry_after[state.attempts]
            state.attempts += 1
            sends.append(Send(zone, round_.serial, target, state.attempts))
            heapq.heappush(heap, (state.next_at, next(self._ties), ident, zone, target))
        return sends, outcomes

    def answered(self, zone: bytes, serial: int, target: Target, result: str) -> Outcome | None:
        """A response from `target` to our NOTIFY for `serial`; None if it is no longer
        awaited (a late duplicate, or the round moved on to a newer serial)."""
        round_ = self.rounds.get(zone)
        if round_ is None or round_.serial != serial:
            return None
        state = round_.pending.pop(target, None)
        if state is None:
            return None
        if not round_.pending:
            del self.rounds[zone]
        return Outcome(zone, serial, target, result, state.attempts)

    def soa(self, zone: bytes) -> tuple[int, bytes] | None:
        round_ = self.rounds.get(zone)
        return round_.soa if round_ is not None else None

    def next_wake(self) -> float | None:
        heap = self._heap
        while heap and self._live(heap[0]) is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None


# -- messages (pure) ----------------------------------------------------------------------


def notify_message(ident: int, zone: bytes, ttl: int, soa_rdata: bytes) -> bytes:
    """A NOTIFY request: AA, question <zone> SOA IN, the new SOA in the answer section
    (RFC 1996 3.7 allows it; Knot and BIND send it)."""
    flags = (OPCODE_NOTIFY << 11) | 0x0400
    head = struct.pack(">HHHHHH", ident, flags, 1, 1, 0, 0)
    question = zone + struct.pack(">HH", SOA, 1)
    answer = b"\xc0\x0c" + struct.pack(">HHIH", SOA, 1, ttl, len(soa_rdata)) + soa_rdata
    return head + question + answer


def response_result(
    data: bytes,
    ident: int,
    zone: bytes,
    key: dns.tsig.Key | None,
    request_mac: bytes,
    now: float,
) -> str | None:
    """The outcome a response says, or None when it is not the answer to our request."""
    try:
        message = parse_message(data)
    except StreamError:
        return None
    opcode = (message.flags >> 11) & 0xF
    if message.id != ident or not message.flags & 0x8000 or opcode != OPCODE_NOTIFY:
        return None
    if message.qname is not None and message.qname != zone:
        return None
    if key is not None:
        if message.tsig_start < 0:
            return "bad-tsig" if message.rcode == 0 else _rcode_result(message.rcode)
        try:
            rdata = dns.rdata.from_wire(
                dns.rdataclass.ANY,
                dns.rdatatype.TSIG,
                data,
                message.tsig_rdata_start,
                message.tsig_rdata_length,
            )
            assert isinstance(rdata, dns.rdtypes.ANY.TSIG.TSIG)
            if rdata.error:
                return "bad-tsig"
            dns.tsig.validate(  # type: ignore[no-untyped-call]
                data, key, key.name, rdata, int(now), request_mac, message.tsig_start, None, False
            )
        except (dns.exception.DNSException, AssertionError):
            return "bad-tsig"
    return _rcode_result(message.rcode)


def _rcode_result(rcode: int) -> str:
    if rcode == 0:
        return "ok"
    try:
        return dns.rcode.to_text(dns.rcode.Rcode(rcode)).lower()
    except ValueError:
        return f"rcode{rcode}"


# -- the asyncio shell --------------------------------------------------------------------


class Stats(Protocol):
    @property
    def notifies_sent(self) -> Any: ...  # Counter[(zone, remote, result)]


@dataclass(slots=True)
class _InFlight:
    zone: bytes
    serial: int
    target: Target
    key: dns.tsig.Key | None
    request_mac: bytes


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("NOTIFY socket error: %s", exc)


class NotifySender:
    """Performs the schedule: one timer, sockets only while a round runs."""

    def __init__(self, clock: Clock, stats: Stats, retry_after: Sequence[float] = RETRY_AFTER):
        self.clock = clock
        self.stats = stats
        self.schedule = NotifySchedule(retry_after)
        self._sockets: dict[tuple[int, str | None], asyncio.DatagramTransport] = {}
        self._in_flight: dict[tuple[int, str, int], _InFlight] = {}  # (id, host, port)
        self._timer: asyncio.TimerHandle | None = None
        self._busy: asyncio.Task[None] | None = None
        self._publishes: dict[bytes, int] = {}  # zone -> publishes seen (newest wins)
        self._waiting: set[asyncio.Task[None]] = set()
        self._deferred: dict[bytes, tuple[int, ZoneConfig, int, tuple[int, bytes]]] = {}
        self._deferrer: asyncio.Task[None] | None = None
        self.sent = 0

    def published_when_serving(
        self,
        config: ZoneConfig,
        serial: int,
        soa: tuple[int, bytes],
        serving: Callable[[], bool],
    ) -> None:
        """A version published before the workers exist (start-up): NOTIFY once they
        serve (`serving()`), all such zones by one waiting task."""
        zone = config.origin
        generation = self._publishes[zone] = self._publishes.get(zone, 0) + 1
        self._deferred[zone] = (generation, config, serial, soa)
        if self._deferrer is None or self._deferrer.done():
            self._deferrer = asyncio.get_running_loop().create_task(self._flush_when(serving))

    async def _flush_when(self, serving: Callable[[], bool]) -> None:
        for _ in range(int(START_WAIT / 0.1)):
            if serving():
                break
            await asyncio.sleep(0.1)
        deferred, self._deferred = self._deferred, {}
        for zone, (generation, config, serial, soa) in deferred.items():
            if self._publishes.get(zone) == generation:  # not superseded meanwhile
                self.published(config, serial, soa)

    def published_when_applied(
        self,
        config: ZoneConfig,
        serial: int,
        soa: tuple[int, bytes],
        applied: Awaitable[bool] | None,
    ) -> None:
        """NOTIFY once every worker serves the version (`applied`), so a downstream that
        comes at once never finds the old serial and believes itself current."""
        zone = config.origin
        generation = self._publishes[zone] = self._publishes.get(zone, 0) + 1
        if applied is None:
            self.published(config, serial, soa)
            return

        async def when_applied() -> None:
            confirmed = await applied
            if self._publishes.get(zone) != generation:
                return  # a newer publish of the zone supersedes this one
            if not confirmed:
                log.warning(
                    "zone %s: serial %d not confirmed by every worker; NOTIFY sent anyway",
                    config.name,
                    serial,
                )
            self.published(config, serial, soa)

        task = asyncio.get_running_loop().create_task(when_applied())
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    def published(self, config: ZoneConfig, serial: int, soa: tuple[int, bytes]) -> None:
        targets = targets_of(config.notify)
        now = self.clock.monotonic()
        self.schedule.published(config.origin, serial, soa, targets, now, config.notify_delay)
        self.poke()

    def poke(self) -> None:
        """Do what is due now and set the timer for what comes next."""
        if self._busy is not None and not self._busy.done():
            return  # the running pass re-arms the timer when it ends
        self._busy = asyncio.get_running_loop().create_task(self._run_due())

    async def _run_due(self) -> None:
        sends, outcomes = self.schedule.due(self.clock.monotonic())
        for outcome in outcomes:
            self._record(outcome)
        for send in sends:
            await self._send(send)
        self._rearm()

    def _rearm(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        wake = self.schedule.next_wake()
        if wake is None:
            self._close_idle()
            return
        delay = max(0.0, wake - self.clock.monotonic())
        self._timer = loop.call_later(delay, self.poke)

    async def _send(self, send: Send) -> None:
        target = send.target
        soa = self.schedule.soa(send.zone)
        if soa is None:
            return
        ident = secrets.randbelow(0x10000)
        while (ident, target.host, target.port) in self._in_flight:  # many zones, one target
            ident = secrets.randbelow(0x10000)
        wire = notify_message(ident, send.zone, soa[0], soa[1])
        key = target.key.to_dnspython() if target.key is not None else None
        mac = b""
        if key is not None:
            wire, mac = sign_message(wire, key, self.clock.now())
        try:
            transport = await self._socket(target)
            transport.sendto(wire, (target.host, target.port))
        except OSError as exc:
            log.warning(
                "zone %s: NOTIFY to %s (%s) not sent: %s",
                names.to_text(send.zone),
                target.remote,
                target.address,
                exc,
            )
            return  # the schedule retries it like a lost datagram
        self.sent += 1
        self._in_flight[(ident, target.host, target.port)] = _InFlight(
            send.zone, send.serial, target, key, mac
        )

    async def _socket(self, target: Target) -> asyncio.DatagramTransport:
        family = 6 if ":" in target.host else 4
        slot = (family, target.source)
        transport = self._sockets.get(slot)
        if transport is None or transport.is_closing():
            local = (target.source or ("::" if family == 6 else "0.0.0.0"), 0)
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Endpoint(self._datagram), local_addr=local
            )
            self._sockets[slot] = transport
        return transport

    def _datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(data) < 12:
            return
        ident = struct.unpack_from(">H", data, 0)[0]
        host = str(addr[0])
        matched = self._in_flight.get((ident, host, int(addr[1])))
        if matched is None:
            return
        result = response_result(
            data, ident, matched.zone, matched.key, matched.request_mac, self.clock.now()
        )
        if result is None:
            return
        outcome = self.schedule.answered(matched.zone, matched.serial, matched.target, result)
        if outcome is not None:
            self._forget(matched.zone, matched.target)
            self._record(outcome)
            self._rearm()

    def _record(self, outcome: Outcome) -> None:
        zone = names.to_text(outcome.zone).rstrip(".") or "."
        self.stats.notifies_sent[(zone, outcome.target.remote, outcome.result)] += 1
        level = logging.INFO if outcome.result == "ok" else logging.WARNING
        log.log(
            level,
            "zone %s: NOTIFY serial %d to %s (%s): %s after %d attempt(s)",
            zone,
            outcome.serial,
            outcome.target.remote,
            outcome.target.address,
            outcome.result,
            outcome.attempts,
        )
        self._forget(outcome.zone, outcome.target)

    def _forget(self, zone: bytes, target: Target) -> None:
        """Drop every request to `target` for `zone` still awaited (retransmissions)."""
        stale = [k for k, v in self._in_flight.items() if v.target == target and v.zone == zone]
        for key in stale:
            del self._in_flight[key]

    def _close_idle(self) -> None:
        """No round left: close the sockets (no per-zone cost while idle)."""
        self._in_flight.clear()
        for transport in self._sockets.values():
            transport.close()
        self._sockets.clear()

    def close(self) -> None:
        for task in list(self._waiting):
            task.cancel()
        if self._deferrer is not None:
            self._deferrer.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy is not None:
            self._busy.cancel()
        self._close_idle()


# -- the hook called after each publish -----------------------------------------------------

_senders: weakref.WeakKeyDictionary[object, NotifySender] = weakref.WeakKeyDictionary()


class _Host(Protocol):
    @property
    def clock(self) -> Clock: ...

    @property
    def stats(self) -> Any: ...


def after_publish(
    host: _Host,
    config: ZoneConfig,
    serial: int,
    soa: tuple[int, bytes],
    seq: int | None = None,
) -> None:
    """Called once per published version (App.publish, with the publish's sequence number
    for `host.wait_published`). NOTIFYs the zone's `notify` remotes once every worker
    serves the version; nothing happens for zones without any, or outside an event loop."""
    if not config.notify:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        log.debug("zone %s: published outside the event loop; no NOTIFY", config.name)
        return
    sender = _senders.get(host)
    if sender is None:
        sender = _senders[host] = NotifySender(host.clock, host.stats)
    if seq is None and hasattr(host, "pool") and getattr(host, "pool", None) is None:
        # Published at start-up, before the workers are forked: nobody answers yet.
        sender.published_when_serving(
            config, serial, soa, lambda: getattr(host, "pool", None) is not None
        )
        return
    wait = getattr(host, "wait_published", None)
    applied = wait(seq) if seq is not None and wait is not None else None
    sender.published_when_applied(config, serial, soa, applied)


def sender_of(host: object) -> NotifySender | None:
    """The host's sender, if a publish created one (tests, shutdown)."""
    return _senders.get(host)


def close(host: object) -> None:
    sender = _senders.pop(host, None)
    if sender is not None:
        with contextlib.suppress(RuntimeError):
            sender.close()
