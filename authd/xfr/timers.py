"""The refresh state machine of one secondary zone (RFC 1034 4.3.5, RFC 1996): pure.

`step(timers, event, now) -> (timers, actions)`. No clock, no I/O: the caller
(secondary.py) runs the actions (SOA query, transfer, schedule a wake-up,
publish, persist) and feeds the results back as events. Modelled on NSD's xfrd
(served / seen-at-primary / notified serial, each with its time) and Knot's
zone events (timers as persisted data).

                      Start(no copy)                 Start(copy on disk)
                           |                                |
                           v                                v
                   +--------------+   transfer ok   +--------------+
                   | NEVER_LOADED |---------------->|      OK      |<---------------+
                   +--------------+                 +--------------+                |
                     |  ^  (SOA query, AXFR;           | timer / NOTIFY /           |
                     |  |   failures: retry)           | forced refresh             |
                     +--+                              v                            |
                                                +--------------+  SOA equal, or     |
                             expires_at passes  |  REFRESHING  |  transfer ok ------+
                        +-----------------------|  (SOA query, |  failure: back to OK,
                        v                       |  transfer)   |  next try at retry
                   +--------------+             +--------------+
                   |   EXPIRED    |  SOA equal or transfer ok: OK (serving resumes)
                   | (serve stale |  failures: stays EXPIRED, retries every `retry`
                   |  or SERVFAIL)|
                   +--------------+

Invariants:
- At most one operation (SOA query or transfer) is in flight (`in_flight`); a
  NOTIFY or forced refresh that arrives meanwhile sets `pending` and causes
  exactly one more refresh when the operation ends (a burst becomes one refresh).
- NEVER_LOADED and EXPIRED keep their state while an operation is in flight;
  REFRESHING only ever applies to a loaded, unexpired zone.
- A zone expires `expire` seconds after the last successful refresh (a SOA
  answer from a primary, or a transfer), whatever the state; expiry survives
  restarts because `last_success` and `expires_at` are persisted.
- A serial is taken only when it is newer (RFC 1982); exactly 2^31 ahead is not
  newer. A lower serial is logged once; with `rollback_after` > 0 it is accepted
  (by a forced AXFR) after that many consecutive checks returned it.
- Any failed IXFR makes the next transfer an AXFR (a zone never stays stuck).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from authd.xfr import serial as serials


class State(Enum):
    NEVER_LOADED = "never-loaded"
    OK = "ok"
    REFRESHING = "refreshing"
    EXPIRED = "expired"


class InFlight(Enum):
    NONE = "none"
    SOA_QUERY = "soa-query"
    TRANSFER = "transfer"


@dataclass(frozen=True, slots=True)
class Settings:
    """Clamps on the SOA timers and the behaviour choices of one zone."""

    refresh_min: int = 2
    refresh_max: int = 28 * 86400
    retry_min: int = 1
    retry_max: int = 14 * 86400
    expire_min: int = 3
    expire_max: int = 2**31 - 1
    jitter: float = 0.1  # refresh and retry are shortened by up to this fraction
    startup_spread: float = 10.0  # the first refresh after start lands in [0, spread) s
    servfail_on_expire: bool = False  # on-expire = "servfail" (RFC 1034) or serve stale
    rollback_after: int = 0  # accept a lower serial after this many checks; 0 = never


@dataclass(frozen=True, slots=True)
class SoaTimers:
    """The serial and the timer fields of an SOA."""

    serial: int
    refresh: int
    retry: int
    expire: int


@dataclass(frozen=True, slots=True)
class ZoneTimers:
    """Everything the machine knows about one zone; persisted by the caller."""

    settings: Settings
    state: State = State.NEVER_LOADED
    in_flight: InFlight = InFlight.NONE
    served_serial: int | None = None
    served_at: float | None = None
    primary_serial: int | None = None
    primary_seen_at: float | None = None
    notified_serial: int | None = None
    notified_at: float | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    next_refresh: float = 0.0
    expires_at: float | None = None
    refresh: int = 3600
    retry: int = 900
    expire: int = 1209600
    pending: bool = False  # a refresh was asked for while something was in flight
    pending_retransfer: bool = False
    axfr_next: bool = False  # the last IXFR failed
    rollback_count: int = 0
    last_error: str = ""

    @property
    def serving_servfail(self) -> bool:
        """Queries for this zone get SERVFAIL (never loaded, or expired with on-expire=servfail)."""
        return self.state is State.NEVER_LOADED or (
            self.state is State.EXPIRED and self.settings.servfail_on_expire
        )


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """The zone is configured: `served` is the copy loaded from disk (None: no copy).

    `last_success` and `next_refresh` come from the timers store when it has them.
    """

    served: SoaTimers | None = None
    last_success: float | None = None
    next_refresh: float | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    pass


@dataclass(frozen=True, slots=True)
class NotifyReceived:
    serial: int | None  # from the NOTIFY's answer section, when it carried an SOA
    source: str = ""


@dataclass(frozen=True, slots=True)
class SoaAnswer:
    """Result of the SOA query: `serial` None means it failed, `error` says why."""

    serial: int | None
    error: str = ""
    primary: str = ""


@dataclass(frozen=True, slots=True)
class TransferDone:
    """The transfer (and what follows it: verification, storing) ended.

    `new` is the SOA of the version now served when one was taken (None when the
    zone was already up to date, or on failure). `was_ixfr` says whether the
    attempt started as IXFR, so a failure makes the next one an AXFR.
    """

    ok: bool
    new: SoaTimers | None = None
    was_ixfr: bool = False
    error: str = ""
    primary: str = ""


@dataclass(frozen=True, slots=True)
class ForceRefresh:
    pass


@dataclass(frozen=True, slots=True)
class ForceRetransfer:
    pass


Event = (
    Start | TimerFired | NotifyReceived | SoaAnswer | TransferDone | ForceRefresh | ForceRetransfer
)


# -- actions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuerySoa:
    pass


@dataclass(frozen=True, slots=True)
class Transfer:
    axfr: bool  # AXFR rather than IXFR
    forced: bool = False  # accept whatever serial the primary has (retransfer, rollback)


@dataclass(frozen=True, slots=True)
class Schedule:
    at: float  # wake the machine (TimerFired) at this time


@dataclass(frozen=True, slots=True)
class Publish:
    serial: int


@dataclass(frozen=True, slots=True)
class SetExpired:
    expired: bool
    servfail: bool  # the zone now answers SERVFAIL


@dataclass(frozen=True, slots=True)
class Persist:
    pass


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # "info" | "warning" | "error"
    message: str


Action = QuerySoa | Transfer | Schedule | Publish | SetExpired | Persist | Log

Random = Callable[[], float]


# -- helpers ----------------------------------------------------------------------------


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _with_soa(timers: ZoneTimers, soa: SoaTimers) -> ZoneTimers:
    s = timers.settings
    return replace(
        timers,
        refresh=_clamp(soa.refresh, s.refresh_min, s.refresh_max),
        retry=_clamp(soa.retry, s.retry_min, s.retry_max),
        expire=_clamp(soa.expire, s.expire_min, s.expire_max),
    )


def _jittered(interval: float, settings: Settings, rand: Random) -> float:
    """Shorten an interval by a random fraction, so zones do not refresh in lockstep."""
    return interval * (1.0 - settings.jitter * rand())


def _idle_state(timers: ZoneTimers) -> State:
    """The state once nothing is in flight."""
    if timers.state is State.REFRESHING:
        return State.OK
    return timers.state


def _begin(timers: ZoneTimers, now: float, what: InFlight) -> ZoneTimers:
    state = State.REFRESHING if timers.state is State.OK else timers.state
    return replace(timers, in_flight=what, state=state, last_attempt=now)


def _schedule(timers: ZoneTimers) -> Schedule:
    """When to wake next: the refresh time, or the expiry if that comes first."""
    at = timers.next_refresh if timers.in_flight is InFlight.NONE else float("inf")
    if timers.expires_at is not None and timers.state not in (State.EXPIRED, State.NEVER_LOADED):
        at = min(at, timers.expires_at)
    return Schedule(at)


def _check_expiry(timers: ZoneTimers, now: float) -> tuple[ZoneTimers, list[Action]]:
    if (
        timers.state in (State.OK, State.REFRESHING)
        and timers.expires_at is not None
        and now >= timers.expires_at
    ):
        servfail = timers.settings.servfail_on_expire
        consequence = "answering SERVFAIL" if servfail else "serving the last good copy (stale)"
        return replace(timers, state=State.EXPIRED), [
            SetExpired(True, servfail),
            Log(
                "error",
                f"zone expired: no successful refresh for {timers.expire} s "
                f"(serial {timers.served_serial}); {consequence}",
            ),
        ]
    return timers, []


def _refreshed(timers: ZoneTimers, now: float, rand: Random) -> tuple[ZoneTimers, list[Action]]:
    """A primary answered: the expire clock restarts, the next refresh is due later."""
    actions: list[Action] = []
    if timers.state is State.EXPIRED:
        actions.append(SetExpired(False, False))
        actions.append(Log("info", f"zone no longer expired (serial {timers.served_serial})"))
    state = State.OK if timers.served_serial is not None else State.NEVER_LOADED
    timers = replace(
        timers,
        state=state,
        in_flight=InFlight.NONE,
        last_success=now,
        expires_at=now + timers.expire,
        next_refresh=now + _jittered(timers.refresh, timers.settings, rand),
        last_error="",
    )
    return timers, actions


def _failed(
    timers: ZoneTimers, now: float, error: str, rand: Random
) -> tuple[ZoneTimers, list[Action]]:
    timers = replace(
        timers,
        state=_idle_state(timers),
        in_flight=InFlight.NONE,
        next_refresh=now + _jittered(timers.retry, timers.settings, rand),
        last_error=error,
    )
    return timers, [Log("warning", f"refresh failed, retry in {timers.retry} s: {error}")]


def _start_soa_query(timers: ZoneTimers, now: float) -> tuple[ZoneTimers, list[Action]]:
    return _begin(replace(timers, pending=False), now, InFlight.SOA_QUERY), [QuerySoa()]


def _start_transfer(
    timers: ZoneTimers, now: float, *, forced: bool = False
) -> tuple[ZoneTimers, list[Action]]:
    axfr = forced or timers.served_serial is None or timers.axfr_next
    timers = _begin(replace(timers, pending_retransfer=False), now, InFlight.TRANSFER)
    return timers, [Transfer(axfr=axfr, forced=forced)]


def _after_operation(
    timers: ZoneTimers, now: float, actions: list[Action]
) -> tuple[ZoneTimers, list[Action]]:
    """Run what was asked for while busy: at most one more refresh (coalescing)."""
    if timers.pending_retransfer:
        timers, more = _start_transfer(timers, now, forced=True)
        return timers, actions + more
    if timers.pending:
        timers, more = _start_soa_query(timers, now)
        return timers, [
            *actions,
            Log("info", "refreshing again for a NOTIFY received meanwhile"),
            *more,
        ]
    return timers, actions


# -- the transition function --------------------------------------------------------------


def step(
    timers: ZoneTimers, event: Event, now: float, *, rand: Random = random.random
) -> tuple[ZoneTimers, list[Action]]:
    """Apply one event at time `now`; returns the new timers and the actions to run."""
    timers, actions = _check_expiry(timers, now)
    timers, more = _transition(timers, event, now, rand)
    actions.extend(more)
    timers, expiry = _check_expiry(timers, now)
    actions.extend(expiry)
    actions.append(_schedule(timers))
    if any(not isinstance(action, Schedule | Log) for action in actions) or event_changes(event):
        actions.append(Persist())
    return timers, actions


def event_changes(event: Event) -> bool:
    """Events whose facts must reach the timers store even when no other action follows."""
    return isinstance(event, NotifyReceived | SoaAnswer | TransferDone | Start)


def _transition(
    timers: ZoneTimers, event: Event, now: float, rand: Random
) -> tuple[ZoneTimers, list[Action]]:
    if isinstance(event, Start):
        return _on_start(timers, event, now, rand)
    if isinstance(event, TimerFired):
        if timers.in_flight is InFlight.NONE and now >= timers.next_refresh:
            return _start_soa_query(timers, now)
        return timers, []
    if isinstance(event, NotifyReceived):
        return _on_notify(timers, event, now)
    if isinstance(event, SoaAnswer):
        return _on_soa(timers, event, now, rand)
    if isinstance(event, TransferDone):
        return _on_transfer(timers, event, now, rand)
    if isinstance(event, ForceRefresh):
        if timers.in_flight is not InFlight.NONE:
            return replace(timers, pending=True), []
        return _start_soa_query(timers, now)
    if isinstance(event, ForceRetransfer):
        if timers.in_flight is not InFlight.NONE:
            return replace(timers, pending_retransfer=True), []
        timers, actions = _start_transfer(timers, now, forced=True)
        return timers, [Log("info", "retransfer requested: forcing AXFR"), *actions]
    raise TypeError(f"unknown event {event!r}")


def _on_start(
    timers: ZoneTimers, event: Start, now: float, rand: Random
) -> tuple[ZoneTimers, list[Action]]:
    spread = timers.settings.startup_spread * rand()
    if event.served is None:
        timers = replace(timers, state=State.NEVER_LOADED, next_refresh=now + spread)
        return timers, [Log("info", "no stored copy: SERVFAIL until the first transfer")]
    timers = _with_soa(timers, event.served)
    last_success = event.last_success if event.last_success is not None else now
    next_refresh = event.next_refresh if event.next_refresh is not None else now + spread
    timers = replace(
        timers,
        state=State.OK,
        served_serial=event.served.serial,
        served_at=last_success,
        last_success=last_success,
        expires_at=last_success + timers.expire,
        next_refresh=min(next_refresh, now + timers.refresh),
    )
    return timers, [Log("info", f"serving stored copy, serial {event.served.serial}")]


def _on_notify(
    timers: ZoneTimers, event: NotifyReceived, now: float
) -> tuple[ZoneTimers, list[Action]]:
    timers = replace(timers, notified_serial=event.serial, notified_at=now)
    if (
        event.serial is not None
        and timers.served_serial is not None
        and not serials.is_newer(event.serial, timers.served_serial)
        and not timers.pending
    ):
        return timers, [
            Log("info", f"NOTIFY for serial {event.serial}, not newer than ours: no refresh")
        ]
    if timers.in_flight is not InFlight.NONE:
        # Coalesce: one more refresh once the current operation ends, however many arrive.
        return replace(timers, pending=True), []
    return _start_soa_query(timers, now)


def _on_soa(
    timers: ZoneTimers, event: SoaAnswer, now: float, rand: Random
) -> tuple[ZoneTimers, list[Action]]:
    if timers.in_flight is not InFlight.SOA_QUERY:
        return timers, [Log("warning", "SOA answer with no SOA query in flight: ignored")]
    if event.serial is None:
        timers, actions = _failed(timers, now, event.error or "SOA query failed", rand)
        return _after_operation(timers, now, actions)
    timers = replace(timers, primary_serial=event.serial, primary_seen_at=now)
    served = timers.served_serial
    if served is None:
        return _start_transfer(timers, now)
    order = serials.compare(event.serial, served)
    if order is serials.Order.NEWER:
        timers = replace(timers, rollback_count=0)
        return _start_transfer(timers, now)
    if order is serials.Order.EQUAL:
        timers = replace(timers, rollback_count=0)
        timers, actions = _refreshed(timers, now, rand)
        return _after_operation(timers, now, actions)
    # Lower serial, or exactly 2^31 away (undefined in RFC 1982): not newer.
    count = timers.rollback_count + 1
    timers = replace(timers, rollback_count=count)
    logs: list[Action] = []
    if count == 1:
        why = (
            "exactly 2^31 from ours, undefined in RFC 1982, treated as not newer"
            if order is serials.Order.UNDEFINED
            else "lower than ours"
        )
        logs.append(
            Log(
                "warning",
                f"primary {event.primary} has serial {event.serial}, {why} ({served}): ignored",
            )
        )
    rollback_after = timers.settings.rollback_after
    if rollback_after and count >= rollback_after:
        logs.append(
            Log(
                "warning",
                f"serial {event.serial} seen {count} times in a row: accepting it by AXFR",
            )
        )
        timers = replace(timers, rollback_count=0)
        timers, more = _start_transfer(timers, now, forced=True)
        return timers, logs + more
    timers, more = _refreshed(timers, now, rand)
    return _after_operation(timers, now, logs + more)


def _on_transfer(
    timers: ZoneTimers, event: TransferDone, now: float, rand: Random
) -> tuple[ZoneTimers, list[Action]]:
    if timers.in_flight is not InFlight.TRANSFER:
        return timers, [Log("warning", "transfer result with no transfer in flight: ignored")]
    if not event.ok:
        timers = replace(timers, axfr_next=timers.axfr_next or event.was_ixfr)
        timers, failure = _failed(timers, now, event.error or "transfer failed", rand)
        if event.was_ixfr:
            failure.append(Log("info", "the next transfer will be an AXFR"))
        return _after_operation(timers, now, failure)
    actions: list[Action] = []
    timers = replace(timers, axfr_next=False)
    if event.new is not None:
        timers = _with_soa(timers, event.new)
        timers = replace(timers, served_serial=event.new.serial, served_at=now)
        actions.append(Publish(event.new.serial))
        actions.append(Log("info", f"now serving serial {event.new.serial} from {event.primary}"))
    timers, more = _refreshed(timers, now, rand)
    return _after_operation(timers, now, actions + more)
