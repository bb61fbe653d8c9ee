"""The lifecycle of one secondary zone as one pure state machine.

`step(zone, event, now) -> (zone, actions)`: no clock, no I/O, no randomness of its
own (`rand` is passed in). The shell (authd/xfr/secondary.py) performs every action
and feeds each result back as an event. The `Zone` record is the only truth about a
zone: status, metrics and the timers store all read it. After NSD's xfrd (served /
downloaded / notified SOA, each with its time and source) and Knot's zone events
(timers as persisted data; bootstrap back-off).

Two dimensions: `state` is what the zone serves (RFC 1034 refresh), `phase` is the
one operation in flight, a pipeline from SOA check to publish.

    Start(no copy)          Start(copy on disk)
         |                        |
         v        published       v           expires_at passes
   +--------------+        +--------------+ ------------------> +--------------+
   | NEVER_LOADED |------->|  OK          |                     |   EXPIRED    |
   | (SERVFAIL)   |        | (REFRESHING  | <------------------ | (stale, or   |
   +--------------+        |  while busy) |  a primary answered | SERVFAIL)    |
     failures: bootstrap   +--------------+  (SOA equal, or     +--------------+
     back-off 5*n^2 s,       failures: SOA    a new version       failures: SOA
     capped at 2 h           retry            published)          retry

   phase (any state):
                     serial newer (or never loaded)
   NONE --timer/NOTIFY/refresh--> SOA_QUERY ---------------> TRANSFER --candidate--> VERIFY
     ^                               |  equal / lower            |  up to date         |
     |                               +---------> NONE <----------+                     | ok
     |                                            ^  failure: retry (Discard if any)  v
     +------------ PUBLISH <--stored-- STORE <--passed-- GUARD <--------------------+
          published: served = downloaded    ^                 | tripped, or pinned
                                            |                 v
                        approve / timeout / |               HOLD --stored--> NONE (held: the
                        rollback: LOAD -----+                                served copy stays)

Transitions (phase, event -> phase, actions); every other pair is ignored with a log:
    NONE       TimerFired (due), NotifyReceived (newer or no serial),
               ForceRefresh                           -> SOA_QUERY  QuerySoa
                 (nothing served yet                  -> TRANSFER   Transfer(axfr))
    NONE       ForceRetransfer                        -> TRANSFER   Transfer(axfr, forced)
    SOA_QUERY  SoaChecked newer, or nothing served   -> TRANSFER   Transfer
    SOA_QUERY  SoaChecked lower, rollback_after times -> TRANSFER  Transfer(axfr, forced)
    SOA_QUERY  SoaChecked equal/lower, or failed     -> NONE       (Wake at refresh / retry)
    TRANSFER   Transferred with a candidate          -> VERIFY     Verify
    TRANSFER   Transferred up to date, or failed     -> NONE
    VERIFY     Verified ok, something served         -> GUARD      Guard(pinned)
    VERIFY     Verified ok, nothing served yet       -> STORE      Store
    VERIFY     Verified rejected                     -> NONE       Discard
    GUARD      Guarded passed (or digest approved)   -> STORE      Store
    GUARD      Guarded tripped, or zone pinned       -> HOLD       Hold(serial, reason)
    HOLD       HeldStored ok                         -> NONE       held := downloaded, Record
    HOLD       HeldStored failed                     -> NONE       Discard
    NONE       Approve (something held)              -> LOAD       Load(held), approved += digest
    NONE       TimerFired past held_until            -> LOAD       Load(held)   (hold-timeout)
    NONE       Rollback(serial)                      -> LOAD       Load(history)
    LOAD       Loaded with a candidate               -> STORE      Store
    LOAD       Loaded failed                         -> NONE       Log
    any        Reject(held serial)                   -> same       DropHeld, Record, refused
    any        Unpin                                 -> same       DropHeld (if held), Record;
                                                                   a refresh now (or after)
    PUBLISH    Published after a release             -> NONE       pinned := serial (rollback);
                                                                   DropHeld when one is held
    STORE      Stored ok                             -> PUBLISH    Publish(serial)
    STORE      Stored failed                         -> NONE       Discard
    PUBLISH    Published (confirmed or not: logged)  -> NONE       served := downloaded
    busy       NotifyReceived / ForceRefresh / ForceRetransfer: remembered, run once after
    busy       Approve / Rollback: the last one remembered, run when the operation ends

Invariants:
- At most one operation is in flight (`phase`); a NOTIFY or forced refresh that
  arrives meanwhile sets `pending` and causes exactly one more refresh when the
  operation ends (a burst becomes one refresh).
- `served` changes only on Published, after Store: a version is durable before it
  is visible (DESIGN principle 10). `downloaded` is set exactly while a candidate
  exists (phases VERIFY, STORE, PUBLISH); every path out of those phases either
  publishes it or emits Discard.
- A zone expires exactly at `expires_at` = last successful refresh + expire (RFC 7314 4:
  or earlier, when the primary's EDNS EXPIRE said its own copy expires sooner; see
  `_deadline`), in any phase: every step ends with Wake(min(next_refresh if idle,
  expires_at if not yet expired)), so the shell wakes the machine at expiry whatever the
  refresh is.
- A serial is taken only when it is newer (RFC 1982); exactly 2^31 ahead is not
  newer. A lower serial is logged once; with `rollback_after` > 0 it is accepted (by
  a forced AXFR) after that many consecutive checks returned it.
- Any failed IXFR makes the next transfer an AXFR (a zone never stays stuck).
- A zone that never loaded retries after bootstrap_delay(n) (timers.py), not the
  SOA retry; the count resets once a version is served.
- `held` is set exactly while a verified version is stored as a candidate and not
  served; a newer version that is published (or a rollback, an unpin, a reject)
  drops it with DropHeld. A serial in `rejected`, or equal to the held one, is never
  transferred again (the SOA check counts it as up to date).
- While `pinned`, every new version is held (never published without an approval),
  and no hold timeout publishes it; a version whose digest was approved is not held
  by the guard again.
- Every step ends with exactly one Wake; Persist is emitted exactly when a field of
  `persisted()` changed; SetServing at Start and whenever `serving()` changed; SetExpiry
  at Start, on Published and whenever `expires_at` changed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from authd.xfr import serial as serials
from authd.xfr.timers import Random, Settings, SoaTimers, bootstrap_delay, clamped, jittered


class State(Enum):
    NEVER_LOADED = "never-loaded"
    OK = "ok"
    REFRESHING = "refreshing"
    EXPIRED = "expired"


class Phase(Enum):
    """The operation in flight (status key `in_flight`)."""

    NONE = "none"
    SOA_QUERY = "soa-query"
    TRANSFER = "transfer"
    VERIFY = "verify"
    GUARD = "guard"
    HOLD = "hold"
    LOAD = "load"  # an approved held version or a rollback's version, read from disk
    STORE = "store"
    PUBLISH = "publish"


class Outcome(Enum):
    """How the last refresh ended: a log word and a status field (`last_outcome`)."""

    NONE = "none"
    UP_TO_DATE = "up-to-date"
    UPDATED = "updated"
    SOA_FAILED = "soa-check-failed"
    TRANSFER_FAILED = "transfer-failed"
    REJECTED = "rejected"
    STORE_FAILED = "store-failed"


@dataclass(frozen=True, slots=True)
class Seen:
    """A serial and when and from where we learned it."""

    serial: int
    at: float
    source: str = ""


@dataclass(frozen=True, slots=True)
class Zone:
    """Everything about one secondary zone; the only copy of these facts."""

    settings: Settings
    state: State = State.NEVER_LOADED
    phase: Phase = Phase.NONE
    served: Seen | None = None  # the version every process answers from
    primary: Seen | None = None  # the serial last seen at a primary (SOA check or transfer)
    downloaded: Seen | None = None  # the candidate on its way to being served
    notified: Seen | None = None  # the serial announced by the last NOTIFY
    candidate: SoaTimers | None = None  # the candidate's SOA timers, applied on publish
    refresh: int = 3600
    retry: int = 900
    expire: int = 1209600
    last_attempt: float | None = None
    last_success: float | None = None  # last time a primary confirmed our version
    next_refresh: float = 0.0
    expires_at: float | None = None
    bootstrap_failures: int = 0
    pending: bool = False  # a refresh was asked for while something was in flight
    pending_retransfer: bool = False
    forced: bool = False  # the operation in flight accepts any serial (retransfer, rollback)
    axfr_next: bool = False  # the last IXFR failed
    rollback_count: int = 0
    outcome: Outcome = Outcome.NONE
    last_error: str = ""
    # The change guard and rollback (issue 14).
    hold_timeout: float | None = None  # config: a guard hold is published after this long
    held: Seen | None = None  # a verified version stored as a candidate, not served
    held_reason: str = ""  # the guard's rules and counts, or the pin
    held_digest: str = ""
    held_until: float | None = None  # hold-timeout: published automatically then
    pinned: int | None = None  # the serial a rollback pinned: newer versions are held
    rejected: frozenset[int] = frozenset()  # serials `zone reject` refused: never taken
    approved: tuple[str, ...] = ()  # digests approved once: not held by the guard again
    release: str = ""  # what the LOAD/STORE/PUBLISH in flight is: "approval" | "rollback"
    queued: Approve | Rollback | None = None  # a command that arrived while busy
    edns_expire: int | None = None  # the last EDNS EXPIRE a primary answered (RFC 7314)
    edns_expire_at: float | None = None  # when it was received
    candidate_deadline: float | None = None  # the transfer's EXPIRE as a deadline (publish)

    @property
    def servfail(self) -> bool:
        """Expired with on-expire=servfail: the zone answers SERVFAIL though it has data.

        (A zone with nothing served answers SERVFAIL anyway: serving knows it has no data.)
        """
        return self.state is State.EXPIRED and self.settings.servfail_on_expire

    @property
    def busy(self) -> bool:
        return self.phase is not Phase.NONE


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """The zone is configured: `served` is the copy loaded from disk (None: no copy).

    `stored` is the timers record from the last run (persisted(), possibly empty).
    """

    served: SoaTimers | None = None
    stored: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    pass


@dataclass(frozen=True, slots=True)
class NotifyReceived:
    serial: int | None  # from the NOTIFY's answer section, when it carried an SOA
    source: str = ""


@dataclass(frozen=True, slots=True)
class ForceRefresh:
    pass


@dataclass(frozen=True, slots=True)
class ForceRetransfer:
    pass


@dataclass(frozen=True, slots=True)
class SoaChecked:
    """Result of QuerySoa: `serial` None means every primary failed, `error` says why."""

    serial: int | None
    error: str = ""
    primary: str = ""
    expire: int | None = None  # the answer's EDNS EXPIRE (RFC 7314), when it carried one


@dataclass(frozen=True, slots=True)
class Transferred:
    """Result of Transfer. `candidate`: the SOA of the new version (None: up to date,
    or failed). `was_ixfr`: the attempt asked for IXFR, so a failure means AXFR next."""

    ok: bool
    candidate: SoaTimers | None = None
    was_ixfr: bool = False
    error: str = ""
    primary: str = ""
    expire: int | None = None  # the first message's EDNS EXPIRE (RFC 7314), when it had one


@dataclass(frozen=True, slots=True)
class Verified:
    ok: bool
    reason: str = ""  # why it was rejected (check: text)


@dataclass(frozen=True, slots=True)
class Stored:
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class Published:
    confirmed: bool  # every serving process acknowledged the version


@dataclass(frozen=True, slots=True)
class Guarded:
    """Result of Guard: `passed`, or the rules and counts that tripped (`reason`) and the
    candidate's digest (computed only for a version that would be held)."""

    passed: bool
    reason: str = ""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class HeldStored:
    """Result of Hold; `reason` and `digest` are the Hold action's, echoed."""

    ok: bool
    error: str = ""
    reason: str = ""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Approve:
    serial: int | None = None  # None: whatever is held


@dataclass(frozen=True, slots=True)
class Reject:
    serial: int


@dataclass(frozen=True, slots=True)
class Rollback:
    serial: int


@dataclass(frozen=True, slots=True)
class Unpin:
    pass


@dataclass(frozen=True, slots=True)
class Loaded:
    """Result of Load: the SOA of the version read (None: it could not be, `error` says why)."""

    candidate: SoaTimers | None
    error: str = ""
    source: str = ""


Event = (
    Start
    | TimerFired
    | NotifyReceived
    | ForceRefresh
    | ForceRetransfer
    | SoaChecked
    | Transferred
    | Verified
    | Stored
    | Published
    | Guarded
    | HeldStored
    | Approve
    | Reject
    | Rollback
    | Unpin
    | Loaded
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
class Verify:
    forced: bool = False


@dataclass(frozen=True, slots=True)
class Guard:
    """Compare the verified candidate with the served version (authd/zone/guard.py).
    `pinned`: it will be held whatever the rules say; only its digest is needed."""

    pinned: bool = False


@dataclass(frozen=True, slots=True)
class Hold:
    """Store the candidate durably as the held version (not served), then drop it."""

    serial: int
    reason: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Load:
    """Make a stored version the candidate: the held one, or `serial` from the history."""

    serial: int
    held: bool


@dataclass(frozen=True, slots=True)
class DropHeld:
    """Delete the held version from disk (it will not be served)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One ledger entry: held, approved, rejected, pinned, unpinned."""

    event: str
    serial: int | None
    digest: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Store:
    pass


@dataclass(frozen=True, slots=True)
class Publish:
    serial: int


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop the candidate version (rejected, or not stored)."""


@dataclass(frozen=True, slots=True)
class SetServing:
    """How serving answers for the zone: SERVFAIL or not, and since when it is past expire
    (None: not expired), so answers from a stale copy can say so (EDE)."""

    servfail: bool
    expired_at: float | None


@dataclass(frozen=True, slots=True)
class SetExpiry:
    """The expire deadline serving reports in EDNS EXPIRE answers (RFC 7314)."""

    expires_at: float | None


@dataclass(frozen=True, slots=True)
class Persist:
    pass


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # "info" | "warning" | "error"
    message: str


@dataclass(frozen=True, slots=True)
class Wake:
    at: float | None  # step the machine (TimerFired) at this time; None: only events will


Action = (
    QuerySoa
    | Transfer
    | Verify
    | Guard
    | Hold
    | Load
    | Store
    | Publish
    | Discard
    | DropHeld
    | Record
    | SetServing
    | SetExpiry
    | Persist
    | Log
    | Wake
)

IO_ACTIONS = (QuerySoa, Transfer, Verify, Guard, Hold, Load, Store, Publish)
"""Actions whose result comes back as exactly one event."""


# -- what is persisted ------------------------------------------------------------------


def persisted(zone: Zone) -> dict[str, int | float | str | None]:
    """The timers record: what a restart needs (and what status shows after one)."""

    def serial(seen: Seen | None) -> int | None:
        return seen.serial if seen is not None else None

    def at(seen: Seen | None) -> float | None:
        return seen.at if seen is not None else None

    return {
        "state": zone.state.value,
        "served_serial": serial(zone.served),
        "served_at": at(zone.served),
        "primary_serial": serial(zone.primary),
        "primary_seen_at": at(zone.primary),
        "primary": zone.primary.source if zone.primary is not None else None,
        "notified_serial": serial(zone.notified),
        "notified_at": at(zone.notified),
        "last_attempt": zone.last_attempt,
        "last_success": zone.last_success,
        "next_refresh": zone.next_refresh,
        "expires_at": zone.expires_at,
        "bootstrap_failures": zone.bootstrap_failures,
        "last_outcome": zone.outcome.value,
        "last_error": zone.last_error,
        "held_serial": serial(zone.held),
        "held_at": at(zone.held),
        "held_source": zone.held.source if zone.held is not None else None,
        "held_reason": zone.held_reason if zone.held is not None else None,
        "held_digest": zone.held_digest if zone.held is not None else None,
        "held_until": zone.held_until,
        "pinned_serial": zone.pinned,
        "rejected_serials": ",".join(str(n) for n in sorted(zone.rejected)) or None,
        "approved_digests": ",".join(zone.approved) or None,
    }


def serving(zone: Zone) -> tuple[bool, float | None]:
    """What serving must know: SERVFAIL, and the expiry time while expired."""
    return zone.servfail, zone.expires_at if zone.state is State.EXPIRED else None


def wake_at(zone: Zone) -> float | None:
    """When the machine must run next: the refresh if idle, and expiry in any phase."""
    at = zone.next_refresh if not zone.busy else None
    if zone.held_until is not None and not zone.busy:
        at = min(at, zone.held_until) if at is not None else zone.held_until
    if zone.expires_at is not None and zone.state in (State.OK, State.REFRESHING):
        at = zone.expires_at if at is None else min(at, zone.expires_at)
    return at


# -- the transition function --------------------------------------------------------------


def step(
    zone: Zone, event: Event, now: float, *, rand: Random = random.random
) -> tuple[Zone, list[Action]]:
    """Apply one event at time `now`; returns the new record and the actions to perform."""
    before = zone
    zone, actions = _check_expiry(zone, now)
    zone, more = _transition(zone, event, now, rand)
    actions.extend(more)
    zone, expiry = _check_expiry(zone, now)
    actions.extend(expiry)
    if serving(zone) != serving(before) or isinstance(event, Start):
        # At Start the serving side's flags are unknown (a reload may have changed on-expire).
        actions.append(SetServing(*serving(zone)))
    if zone.expires_at != before.expires_at or isinstance(event, Start | Published):
        actions.append(SetExpiry(zone.expires_at))
    if persisted(zone) != persisted(before):
        actions.append(Persist())
    actions.append(Wake(wake_at(zone)))
    return zone, actions


def _transition(zone: Zone, event: Event, now: float, rand: Random) -> tuple[Zone, list[Action]]:
    match event:
        case Start():
            return _on_start(zone, event, now, rand)
        case TimerFired():
            if not zone.busy and zone.held_until is not None and now >= zone.held_until:
                zone, actions = _start_load(zone, now, "approval", timeout=True)
                return zone, actions
            if not zone.busy and now >= zone.next_refresh:
                return _start_soa_query(zone, now)
            return zone, []
        case NotifyReceived():
            return _on_notify(zone, event, now)
        case ForceRefresh():
            if zone.busy:
                return replace(zone, pending=True), []
            return _start_soa_query(zone, now)
        case ForceRetransfer():
            if zone.busy:
                return replace(zone, pending_retransfer=True), []
            zone, actions = _start_transfer(zone, now, forced=True)
            return zone, [Log("info", "retransfer requested: forcing AXFR"), *actions]
        case (
            SoaChecked()
            | Transferred()
            | Verified()
            | Stored()
            | Published()
            | Guarded()
            | HeldStored()
            | Loaded()
        ):
            # The result of an I/O action: taken only in the phase that action runs in.
            phase, on_result = _RESULTS[type(event)]
            if zone.phase is not phase:
                return zone, [_stray(event, zone)]
            return on_result(zone, event, now, rand)
        case Approve() | Rollback():
            if zone.busy:
                return replace(zone, queued=event), []
            return _on_command(zone, event, now)
        case Reject():
            return _on_reject(zone, event)
        case Unpin():
            return _on_unpin(zone, now)
    raise TypeError(f"unknown event {event!r}")


def _stray(event: Event, zone: Zone) -> Log:
    return Log("warning", f"{type(event).__name__} while {zone.phase.value}: ignored")


# -- helpers ----------------------------------------------------------------------------


def _with_soa(zone: Zone, soa: SoaTimers) -> Zone:
    refresh, retry, expire = clamped(soa, zone.settings)
    return replace(zone, refresh=refresh, retry=retry, expire=expire)


def _begin(zone: Zone, now: float, phase: Phase) -> Zone:
    state = State.REFRESHING if zone.state is State.OK else zone.state
    return replace(zone, phase=phase, state=state, last_attempt=now)


def _idle(zone: Zone) -> Zone:
    """Nothing in flight any more; REFRESHING only exists while busy."""
    state = State.OK if zone.state is State.REFRESHING else zone.state
    return replace(zone, phase=Phase.NONE, state=state, forced=False, release="")


def _check_expiry(zone: Zone, now: float) -> tuple[Zone, list[Action]]:
    if (
        zone.state in (State.OK, State.REFRESHING)
        and zone.expires_at is not None
        and now >= zone.expires_at
    ):
        serving = (
            "answering SERVFAIL"
            if zone.settings.servfail_on_expire
            else "still serving the last good copy (stale)"
        )
        served = zone.served.serial if zone.served is not None else None
        return replace(zone, state=State.EXPIRED), [
            Log(
                "error",
                f"zone expired: no successful refresh for {zone.expire} s "
                f"(SOA expire; serial {served}); {serving}",
            )
        ]
    return zone, []


def _received(zone: Zone, expire: int | None, now: float) -> Zone:
    """Record an EDNS EXPIRE a primary answered (status shows the last one)."""
    if expire is None:
        return zone
    return replace(zone, edns_expire=expire, edns_expire_at=now)


def _deadline(zone: Zone, now: float, offered: float | None, soa_check: bool) -> float:
    """The new expire deadline (RFC 7314 4, as Knot applies it): `offered` is when the
    primary's own copy expires (its EDNS EXPIRE, None without one). After a transfer the
    deadline is that time; after a SOA check it is never earlier than ours (a refresh
    query does not shorten the timer); never later than our SOA expire from now."""
    full = now + zone.expire
    if offered is None:
        return full
    if soa_check and zone.expires_at is not None:
        offered = max(offered, zone.expires_at)
    return min(full, offered)


def _refreshed(
    zone: Zone,
    now: float,
    outcome: Outcome,
    rand: Random,
    *,
    offered: float | None = None,
    soa_check: bool = False,
) -> tuple[Zone, list[Action]]:
    """A primary confirmed our version: the expire clock restarts (up to the primary's
    EDNS EXPIRE, `offered`), the next refresh is due later."""
    actions: list[Action] = []
    if zone.state is State.EXPIRED:
        served = zone.served.serial if zone.served is not None else None
        actions.append(Log("info", f"zone no longer expired (serial {served})"))
    zone = _idle(zone)
    zone = replace(
        zone,
        state=State.OK if zone.served is not None else State.NEVER_LOADED,
        last_success=now,
        expires_at=_deadline(zone, now, offered, soa_check),
        next_refresh=now + jittered(zone.refresh, zone.settings, rand),
        outcome=outcome,
        last_error="",
    )
    return zone, actions


def _failed(
    zone: Zone, now: float, outcome: Outcome, error: str, rand: Random
) -> tuple[Zone, list[Action]]:
    zone = _idle(zone)
    if zone.served is None:
        failures = zone.bootstrap_failures + 1
        wait = bootstrap_delay(failures)
        zone = replace(zone, bootstrap_failures=failures)
        message = f"{outcome.value}, no version yet: attempt {failures + 1} in {wait:.0f} s"
    else:
        wait = zone.retry
        message = f"{outcome.value}, retry in {wait} s"
    zone = replace(
        zone,
        next_refresh=now + jittered(wait, zone.settings, rand),
        outcome=outcome,
        last_error=error,
    )
    return zone, [Log("warning", f"{message}: {error}")]


def _discarded(
    zone: Zone, now: float, outcome: Outcome, error: str, rand: Random
) -> tuple[Zone, list[Action]]:
    """The candidate is not going to be served: drop it, then fail like a transfer would."""
    zone = replace(zone, downloaded=None, candidate=None, candidate_deadline=None)
    zone, actions = _failed(zone, now, outcome, error, rand)
    return _after_operation(zone, now, [Discard(), *actions])


def _start_soa_query(zone: Zone, now: float) -> tuple[Zone, list[Action]]:
    if zone.served is None:
        # Nothing served: any serial is newer, so the SOA query would only double the
        # queries of a first load (Knot bootstraps with the AXFR alone).
        return _start_transfer(replace(zone, pending=False), now)
    return _begin(replace(zone, pending=False), now, Phase.SOA_QUERY), [QuerySoa()]


def _start_transfer(zone: Zone, now: float, *, forced: bool = False) -> tuple[Zone, list[Action]]:
    axfr = forced or zone.served is None or zone.axfr_next
    zone = _begin(replace(zone, pending_retransfer=False, forced=forced), now, Phase.TRANSFER)
    return zone, [Transfer(axfr=axfr, forced=forced)]


def _after_operation(zone: Zone, now: float, actions: list[Action]) -> tuple[Zone, list[Action]]:
    """Run what was asked for while busy: a queued approve or rollback first, then at
    most one more refresh (coalescing)."""
    if zone.queued is not None:
        command = zone.queued
        zone, more = _on_command(replace(zone, queued=None), command, now)
        if zone.busy:
            return zone, actions + more
        actions = actions + more
    if zone.pending_retransfer:
        zone, more = _start_transfer(zone, now, forced=True)
        return zone, actions + more
    if zone.pending:
        zone, more = _start_soa_query(zone, now)
        return zone, [
            *actions,
            Log("info", "refreshing again for a NOTIFY received meanwhile"),
            *more,
        ]
    return zone, actions


# -- per event ----------------------------------------------------------------------------


def _num(stored: Mapping[str, object], key: str) -> float | None:
    value = stored.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _restored(zone: Zone, stored: Mapping[str, object]) -> Zone:
    """Facts from the last run that status must not forget: last error, primary, NOTIFY."""
    error = stored.get("last_error")
    outcome = stored.get("last_outcome")
    known = {o.value: o for o in Outcome}
    primary_serial, primary_at = _num(stored, "primary_serial"), _num(stored, "primary_seen_at")
    notified_serial, notified_at = _num(stored, "notified_serial"), _num(stored, "notified_at")
    source = stored.get("primary")
    zone = _restored_guard(zone, stored)
    return replace(
        zone,
        last_error=error if isinstance(error, str) else "",
        outcome=known.get(outcome, Outcome.NONE) if isinstance(outcome, str) else Outcome.NONE,
        last_attempt=_num(stored, "last_attempt"),
        primary=(
            Seen(int(primary_serial), primary_at, source if isinstance(source, str) else "")
            if primary_serial is not None and primary_at is not None
            else None
        ),
        notified=(
            Seen(int(notified_serial), notified_at)
            if notified_serial is not None and notified_at is not None
            else None
        ),
    )


def _text(stored: Mapping[str, object], key: str) -> str:
    value = stored.get(key)
    return value if isinstance(value, str) else ""


def _restored_guard(zone: Zone, stored: Mapping[str, object]) -> Zone:
    """The held version, the pin, rejections and approvals survive a restart."""
    held_serial, held_at = _num(stored, "held_serial"), _num(stored, "held_at")
    pinned = _num(stored, "pinned_serial")
    rejected = frozenset(
        int(n) for n in _text(stored, "rejected_serials").split(",") if n.isdigit()
    )
    approved = tuple(d for d in _text(stored, "approved_digests").split(",") if d)
    zone = replace(
        zone,
        pinned=int(pinned) if pinned is not None else None,
        rejected=rejected,
        approved=approved,
    )
    if held_serial is None or held_at is None:
        return zone
    return replace(
        zone,
        held=Seen(int(held_serial), held_at, _text(stored, "held_source")),
        held_reason=_text(stored, "held_reason"),
        held_digest=_text(stored, "held_digest"),
        held_until=_num(stored, "held_until") if zone.hold_timeout is not None else None,
    )


def _on_start(zone: Zone, event: Start, now: float, rand: Random) -> tuple[Zone, list[Action]]:
    stored = event.stored or {}
    zone = _restored(zone, stored)
    spread = zone.settings.startup_spread * rand()
    if event.served is None:
        failures = _num(stored, "bootstrap_failures")
        zone = replace(
            zone,
            state=State.NEVER_LOADED,
            next_refresh=now + spread,
            bootstrap_failures=int(failures) if failures is not None else 0,
        )
        return zone, [Log("info", "no stored copy: SERVFAIL until the first transfer")]
    zone = _with_soa(zone, event.served)
    last_success = _num(stored, "last_success")
    next_refresh = _num(stored, "next_refresh")
    stored_serial = _num(stored, "served_serial")
    if stored_serial is None or int(stored_serial) != event.served.serial:
        next_refresh = None  # the timers belong to another version: check the primary soon
    if last_success is None:
        last_success = now
    served_at = _num(stored, "served_at") or last_success
    expires_at = last_success + zone.expire
    stored_expires_at = _num(stored, "expires_at")
    same_version = stored_serial is not None and int(stored_serial) == event.served.serial
    if stored_expires_at is not None and same_version:
        # The same version: a deadline an EDNS EXPIRE cut short stays short (RFC 7314 4).
        expires_at = min(expires_at, stored_expires_at)
    zone = replace(
        zone,
        state=State.OK,
        served=Seen(event.served.serial, served_at, "disk"),
        last_success=last_success,
        expires_at=expires_at,
        # Fresh timers from the last run: no SOA query until they are due (Knot, NSD).
        next_refresh=min(
            next_refresh if next_refresh is not None else now + spread, now + zone.refresh
        ),
    )
    return zone, [Log("info", f"serving stored copy, serial {event.served.serial}")]


def _on_notify(zone: Zone, event: NotifyReceived, now: float) -> tuple[Zone, list[Action]]:
    if event.serial is not None:
        zone = replace(zone, notified=Seen(event.serial, now, event.source))
    if (
        event.serial is not None
        and zone.served is not None
        and not serials.is_newer(event.serial, zone.served.serial)
        and not zone.pending
    ):
        return zone, [
            Log("info", f"NOTIFY for serial {event.serial}, not newer than ours: no refresh")
        ]
    if zone.busy:
        # Coalesce: one more refresh once the current operation ends, however many arrive.
        return replace(zone, pending=True), []
    return _start_soa_query(zone, now)


def _on_soa(zone: Zone, event: SoaChecked, now: float, rand: Random) -> tuple[Zone, list[Action]]:
    if event.serial is None:
        zone, actions = _failed(
            zone, now, Outcome.SOA_FAILED, event.error or "SOA query failed", rand
        )
        return _after_operation(zone, now, actions)
    zone = _received(
        replace(zone, primary=Seen(event.serial, now, event.primary)), event.expire, now
    )
    offered = now + event.expire if event.expire is not None else None
    if zone.served is None:
        return _start_transfer(zone, now)
    ours = zone.served.serial
    order = serials.compare(event.serial, ours)
    if order is serials.Order.NEWER and _refused(zone, event.serial):
        zone, actions = _refreshed(replace(zone, rollback_count=0), now, Outcome.UP_TO_DATE, rand)
        return _after_operation(zone, now, actions)
    if order is serials.Order.NEWER:
        return _start_transfer(replace(zone, rollback_count=0), now)
    if order is serials.Order.EQUAL:
        zone, actions = _refreshed(
            replace(zone, rollback_count=0),
            now,
            Outcome.UP_TO_DATE,
            rand,
            offered=offered,
            soa_check=True,
        )
        return _after_operation(zone, now, actions)
    # Lower serial, or exactly 2^31 away (undefined in RFC 1982): not newer.
    count = zone.rollback_count + 1
    zone = replace(zone, rollback_count=count)
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
                f"primary {event.primary} has serial {event.serial}, {why} ({ours}): ignored",
            )
        )
    rollback_after = zone.settings.rollback_after
    if rollback_after and count >= rollback_after:
        logs.append(
            Log(
                "warning",
                f"serial {event.serial} seen {count} times in a row: accepting it by AXFR",
            )
        )
        zone, more = _start_transfer(replace(zone, rollback_count=0), now, forced=True)
        return zone, logs + more
    zone, more = _refreshed(zone, now, Outcome.UP_TO_DATE, rand, offered=offered, soa_check=True)
    return _after_operation(zone, now, logs + more)


def _on_transfer(
    zone: Zone, event: Transferred, now: float, rand: Random
) -> tuple[Zone, list[Action]]:
    if not event.ok:
        zone = replace(zone, axfr_next=zone.axfr_next or event.was_ixfr)
        zone, actions = _failed(
            zone, now, Outcome.TRANSFER_FAILED, event.error or "transfer failed", rand
        )
        if event.was_ixfr:
            actions.append(Log("info", "the next transfer will be an AXFR"))
        return _after_operation(zone, now, actions)
    zone = _received(replace(zone, axfr_next=False), event.expire, now)
    offered = now + event.expire if event.expire is not None else None
    if event.candidate is None:  # the primary had nothing newer
        zone, actions = _refreshed(zone, now, Outcome.UP_TO_DATE, rand, offered=offered)
        return _after_operation(zone, now, actions)
    candidate = event.candidate
    if candidate.serial in zone.rejected:
        zone = replace(zone, primary=Seen(candidate.serial, now, event.primary))
        zone, actions = _refreshed(zone, now, Outcome.UP_TO_DATE, rand, offered=offered)
        message = f"serial {candidate.serial} was rejected by the operator: not taken"
        return _after_operation(zone, now, [Discard(), Log("info", message), *actions])
    zone = replace(
        zone,
        candidate_deadline=offered,
        phase=Phase.VERIFY,
        downloaded=Seen(candidate.serial, now, event.primary),
        primary=Seen(candidate.serial, now, event.primary),
        candidate=candidate,
    )
    return zone, [Verify(forced=zone.forced)]


def _on_verified(
    zone: Zone, event: Verified, now: float, rand: Random
) -> tuple[Zone, list[Action]]:
    if not event.ok:
        return _discarded(zone, now, Outcome.REJECTED, event.reason or "rejected", rand)
    if zone.served is None:  # nothing to compare with (and nothing to pin to): no guard
        return replace(zone, phase=Phase.STORE), [Store()]
    return replace(zone, phase=Phase.GUARD), [Guard(pinned=zone.pinned is not None)]


def _on_stored(zone: Zone, event: Stored, now: float, rand: Random) -> tuple[Zone, list[Action]]:
    if not event.ok:
        return _discarded(zone, now, Outcome.STORE_FAILED, event.error or "not stored", rand)
    assert zone.downloaded is not None
    return replace(zone, phase=Phase.PUBLISH), [Publish(zone.downloaded.serial)]


def _on_published(
    zone: Zone, event: Published, now: float, rand: Random
) -> tuple[Zone, list[Action]]:
    assert zone.downloaded is not None and zone.candidate is not None
    if zone.release:
        return _on_released(zone, event, now)
    downloaded = zone.downloaded
    offered = zone.candidate_deadline
    zone = _with_soa(zone, zone.candidate)
    zone = replace(
        zone,
        served=Seen(downloaded.serial, now, downloaded.source),
        downloaded=None,
        candidate=None,
        candidate_deadline=None,
        bootstrap_failures=0,
    )
    actions: list[Action] = [
        Log("info", f"now serving serial {downloaded.serial} from {downloaded.source}")
    ]
    if not event.confirmed:
        actions.append(Log("error", f"a worker did not confirm serial {downloaded.serial}"))
    if zone.held is not None:  # a newer version passed: the hold is over
        actions.append(
            Log(
                "info", f"held serial {zone.held.serial} dropped: serial {downloaded.serial} passed"
            )
        )
        actions.append(DropHeld())
        zone = _unheld(zone)
    zone, more = _refreshed(zone, now, Outcome.UPDATED, rand, offered=offered)
    return _after_operation(zone, now, actions + more)


# -- the change guard, approvals and rollback (issue 14) ------------------------------------


def _refused(zone: Zone, serial: int) -> bool:
    """A serial that is not transferred again: rejected, or the one already held."""
    return serial in zone.rejected or (zone.held is not None and zone.held.serial == serial)


def _unheld(zone: Zone) -> Zone:
    return replace(zone, held=None, held_reason="", held_digest="", held_until=None)


def _on_guarded(zone: Zone, event: Guarded, now: float, rand: Random) -> tuple[Zone, list[Action]]:
    assert zone.downloaded is not None
    serial = zone.downloaded.serial
    if event.passed and zone.pinned is None:
        return replace(zone, phase=Phase.STORE), [Store()]
    if zone.pinned is None and event.digest and event.digest in zone.approved:
        message = f"serial {serial}: approved before (same digest), not held: {event.reason}"
        return replace(zone, phase=Phase.STORE), [Log("info", message), Store()]
    reason = event.reason or "held"
    if zone.pinned is not None:
        reason = f"pinned to serial {zone.pinned} by a rollback"
    return replace(zone, phase=Phase.HOLD), [Hold(serial, reason, event.digest)]


def _on_held(zone: Zone, event: HeldStored, now: float, rand: Random) -> tuple[Zone, list[Action]]:
    assert zone.downloaded is not None
    if not event.ok:
        return _discarded(zone, now, Outcome.STORE_FAILED, event.error or "not held", rand)
    downloaded = zone.downloaded
    offered = zone.candidate_deadline  # the primary answered: its EXPIRE still counts
    pinned = zone.pinned is not None
    until = None if pinned or zone.hold_timeout is None else now + zone.hold_timeout
    zone = replace(
        zone,
        held=downloaded,
        held_reason=event.reason,
        held_digest=event.digest,
        held_until=until,
        downloaded=None,
        candidate=None,
        candidate_deadline=None,
    )
    served = zone.served.serial if zone.served is not None else None
    actions: list[Action] = [
        Discard(),
        Log(
            "error",
            f"serial {downloaded.serial} from {downloaded.source or '-'} HELD, still serving "
            f"serial {served}: {zone.held_reason}; `authd zone approve` publishes it, "
            "`authd zone reject` drops it",
        ),
        Record("held", downloaded.serial, zone.held_digest, zone.held_reason),
    ]
    if until is not None:
        actions.append(Log("info", f"held serial {downloaded.serial} is published at {until:.0f}"))
    zone, more = _refreshed(zone, now, Outcome.UP_TO_DATE, rand, offered=offered)
    return _after_operation(zone, now, actions + more)


def _start_load(
    zone: Zone, now: float, release: str, *, timeout: bool = False
) -> tuple[Zone, list[Action]]:
    """Read the held version back as the candidate (approval)."""
    assert zone.held is not None
    held = zone.held
    approved = zone.approved
    if zone.held_digest and zone.held_digest not in approved:
        approved = (*approved, zone.held_digest)[-APPROVALS_KEPT:]
    zone = _begin(
        replace(zone, release=release, approved=approved, held_until=None), now, Phase.LOAD
    )
    why = "hold-timeout passed" if timeout else "approved"
    return zone, [
        Log("info", f"held serial {held.serial}: {why}, publishing it"),
        Record("approved", held.serial, zone.held_digest, why),
        Load(held.serial, held=True),
    ]


APPROVALS_KEPT = 20


def _on_command(zone: Zone, event: Approve | Rollback, now: float) -> tuple[Zone, list[Action]]:
    if isinstance(event, Rollback):
        zone = _begin(replace(zone, release="rollback"), now, Phase.LOAD)
        return zone, [
            Log("warning", f"rollback to serial {event.serial} requested"),
            Load(event.serial, held=False),
        ]
    if zone.held is None or (event.serial is not None and event.serial != zone.held.serial):
        held = zone.held.serial if zone.held is not None else None
        return zone, [Log("warning", f"approve {event.serial}: held is {held}; nothing done")]
    return _start_load(zone, now, "approval")


def _on_reject(zone: Zone, event: Reject) -> tuple[Zone, list[Action]]:
    rejected = zone.rejected | {event.serial}
    actions: list[Action] = [Record("rejected", event.serial, "", "by the operator")]
    if zone.held is not None and zone.held.serial == event.serial:
        digest = zone.held_digest
        actions = [
            DropHeld(),
            Log("warning", f"held serial {event.serial} rejected: dropped, never taken"),
            Record("rejected", event.serial, digest, "by the operator"),
        ]
        zone = _unheld(zone)
    return replace(zone, rejected=rejected), actions


def _on_unpin(zone: Zone, now: float) -> tuple[Zone, list[Action]]:
    if zone.pinned is None:
        return zone, [Log("info", "unpin: the zone is not pinned")]
    actions: list[Action] = [
        Record("unpinned", zone.pinned),
        Log("warning", f"unpinned from serial {zone.pinned}: following the primary again"),
    ]
    zone = replace(zone, pinned=None)
    if zone.held is not None:  # held for the pin: the next refresh takes it through the guard
        actions.append(DropHeld())
        zone = _unheld(zone)
    if zone.busy:
        return replace(zone, pending=True), actions
    zone, more = _start_soa_query(zone, now)
    return zone, actions + more


def _on_loaded(zone: Zone, event: Loaded, now: float, rand: Random) -> tuple[Zone, list[Action]]:
    if event.candidate is None:
        zone = _idle(zone)
        zone = replace(zone, last_error=event.error)
        return _after_operation(zone, now, [Log("error", f"not published: {event.error}")])
    candidate = event.candidate
    zone = replace(
        zone,
        phase=Phase.STORE,
        downloaded=Seen(candidate.serial, now, event.source or zone.release),
        candidate=candidate,
    )
    return zone, [Store()]


def _on_released(zone: Zone, event: Published, now: float) -> tuple[Zone, list[Action]]:
    """An approved or rolled-back version is served: the primary did not confirm anything,
    so the refresh and expire timers go on as they were."""
    assert zone.downloaded is not None and zone.candidate is not None
    downloaded = zone.downloaded
    rollback = zone.release == "rollback"
    zone = _with_soa(zone, zone.candidate)
    zone = replace(
        zone,
        served=Seen(downloaded.serial, now, downloaded.source),
        downloaded=None,
        candidate=None,
        state=State.OK if zone.state is State.NEVER_LOADED else zone.state,
        outcome=Outcome.UPDATED,
        last_error="",
    )
    actions: list[Action] = [
        Log("info", f"now serving serial {downloaded.serial} ({zone.release})")
    ]
    if not event.confirmed:
        actions.append(Log("error", f"a worker did not confirm serial {downloaded.serial}"))
    if zone.held is not None and (rollback or zone.held.serial == downloaded.serial):
        if zone.held.serial != downloaded.serial:
            actions.append(Log("info", f"held serial {zone.held.serial} dropped by the rollback"))
        actions.append(DropHeld())
        zone = _unheld(zone)
    if rollback:
        zone = replace(zone, pinned=downloaded.serial)
        actions.append(Record("pinned", downloaded.serial, "", "rollback"))
        actions.append(
            Log(
                "warning",
                f"PINNED to serial {downloaded.serial}: newer versions are held until "
                "`authd zone unpin`",
            )
        )
    zone = _idle(zone)
    return _after_operation(zone, now, actions)


_OnResult = Callable[[Zone, Any, float, Random], tuple[Zone, list[Action]]]
_RESULTS: dict[type, tuple[Phase, _OnResult]] = {
    SoaChecked: (Phase.SOA_QUERY, _on_soa),
    Transferred: (Phase.TRANSFER, _on_transfer),
    Verified: (Phase.VERIFY, _on_verified),
    Stored: (Phase.STORE, _on_stored),
    Published: (Phase.PUBLISH, _on_published),
    Guarded: (Phase.GUARD, _on_guarded),
    HeldStored: (Phase.HOLD, _on_held),
    Loaded: (Phase.LOAD, _on_loaded),
}
"""Each I/O result event: the phase it ends, and its handler."""
