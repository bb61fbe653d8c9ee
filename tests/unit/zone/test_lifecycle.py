"""The zone lifecycle machine with injected time and randomness (no sleeps, no sockets)."""

from __future__ import annotations

import pytest

from authd.xfr.timers import Settings, SoaTimers
from authd.zone.lifecycle import (
    Action,
    Discard,
    Event,
    ForceRefresh,
    ForceRetransfer,
    Guarded,
    HeldStored,
    Loaded,
    Log,
    NotifyReceived,
    Outcome,
    Persist,
    Phase,
    Publish,
    Published,
    QuerySoa,
    SetServing,
    SoaChecked,
    Start,
    State,
    Store,
    Stored,
    TimerFired,
    Transfer,
    Transferred,
    Verified,
    Verify,
    Wake,
    Zone,
    persisted,
    step,
)

T0 = 1_700_000_000.0
SOA = SoaTimers(serial=10, refresh=3600, retry=600, expire=86400)


def no_jitter() -> float:
    return 0.0


class Driver:
    """Drives the machine like the shell does, recording the actions of the last step."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.zone = Zone(settings or Settings(jitter=0.0, startup_spread=0.0))
        self.actions: list[Action] = []

    def send(self, event: Event, now: float) -> list[Action]:
        self.zone, self.actions = step(self.zone, event, now, rand=no_jitter)
        return self.actions

    def did(self, kind: type) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]

    def wake(self) -> float | None:
        (wake,) = self.did(Wake)
        assert isinstance(wake, Wake)
        return wake.at

    def logs(self) -> str:
        return "\n".join(a.message for a in self.actions if isinstance(a, Log))

    def deliver(self, soa: SoaTimers, now: float, primary: str = "p1") -> None:
        """A transfer brought `soa`'s version: verified, stored, published."""
        self.send(Transferred(ok=True, candidate=soa, primary=primary), now)
        assert self.did(Verify) and self.zone.downloaded is not None
        self.send(Verified(ok=True), now)
        if self.zone.phase is Phase.GUARD:  # something is served: the change guard looks
            self.send(Guarded(passed=True), now)
        assert self.did(Store) == [Store()]
        self.send(Stored(ok=True), now)
        assert self.did(Publish) == [Publish(soa.serial)]
        self.send(Published(confirmed=True), now)


def state(driver: Driver) -> State:
    """The zone's state (a function, so type checkers do not narrow it between steps)."""
    return driver.zone.state


def served(driver: Driver) -> int | None:
    return driver.zone.served.serial if driver.zone.served is not None else None


def loaded(settings: Settings | None = None, last_success: float = T0) -> Driver:
    driver = Driver(settings)
    stored = {"served_serial": 10, "last_success": last_success, "next_refresh": T0 + 3600}
    driver.send(Start(served=SOA, stored=stored), T0)
    return driver


def test_never_loaded_goes_straight_to_axfr_then_verify_store_publish() -> None:
    zone = Driver()
    zone.send(Start(), T0)
    assert state(zone) is State.NEVER_LOADED and zone.wake() == T0
    assert zone.did(QuerySoa) == [] and zone.did(Persist)
    zone.send(TimerFired(), T0)
    # Nothing served: no SOA query first (it would double a first load's queries; Knot).
    assert zone.did(QuerySoa) == [] and zone.did(Transfer) == [Transfer(axfr=True)]
    assert state(zone) is State.NEVER_LOADED and zone.zone.phase is Phase.TRANSFER
    zone.send(Transferred(ok=True, candidate=SOA, primary="p1"), T0 + 2)
    assert zone.did(Verify) == [Verify()] and zone.zone.phase is Phase.VERIFY
    assert zone.zone.downloaded is not None and zone.zone.downloaded.serial == 10
    assert served(zone) is None  # not visible before it is verified and stored
    zone.send(Verified(ok=True), T0 + 2)
    assert zone.did(Store) == [Store()] and served(zone) is None
    zone.send(Stored(ok=True), T0 + 2)
    assert zone.did(Publish) == [Publish(10)] and served(zone) is None
    zone.send(Published(confirmed=True), T0 + 2)
    assert state(zone) is State.OK and served(zone) == 10 and zone.zone.downloaded is None
    assert zone.zone.served is not None and zone.zone.served.source == "p1"
    assert zone.zone.expires_at == T0 + 2 + 86400 and zone.zone.outcome is Outcome.UPDATED
    assert zone.wake() == T0 + 2 + 3600


def test_start_jitter_spreads_the_first_refresh() -> None:
    settings = Settings(startup_spread=60.0)
    zone, _ = step(Zone(settings), Start(), T0, rand=lambda: 0.5)
    assert zone.next_refresh == T0 + 30.0


def test_refresh_up_to_date_resets_expire() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    assert zone.did(QuerySoa) and state(zone) is State.REFRESHING
    zone.send(SoaChecked(serial=10, primary="p1"), T0 + 3601)
    assert state(zone) is State.OK and zone.did(Transfer) == []
    assert zone.zone.last_success == T0 + 3601
    assert zone.zone.expires_at == T0 + 3601 + 86400
    assert zone.zone.primary is not None
    assert (zone.zone.primary.serial, zone.zone.primary.at) == (10, T0 + 3601)
    assert zone.zone.outcome is Outcome.UP_TO_DATE


def test_timer_before_due_does_nothing() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 100)
    assert zone.did(QuerySoa) == [] and state(zone) is State.OK


def test_newer_serial_asks_for_ixfr() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaChecked(serial=11), T0 + 3600)
    assert zone.did(Transfer) == [Transfer(axfr=False)]
    assert zone.zone.phase is Phase.TRANSFER


def test_failed_ixfr_makes_the_next_transfer_axfr() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaChecked(serial=11), T0 + 3600)
    zone.send(Transferred(ok=False, was_ixfr=True, error="cut"), T0 + 3601)
    assert state(zone) is State.OK and zone.zone.last_error == "cut"
    assert zone.zone.outcome is Outcome.TRANSFER_FAILED
    assert zone.wake() == T0 + 3601 + 600  # retry
    zone.send(TimerFired(), T0 + 4201)
    zone.send(SoaChecked(serial=11), T0 + 4201)
    assert zone.did(Transfer) == [Transfer(axfr=True)]
    zone.deliver(SoaTimers(11, 3600, 600, 86400), T0 + 4202)
    assert not zone.zone.axfr_next and served(zone) == 11


def test_retry_then_expire_then_recover_serving_stale() -> None:
    zone = loaded()
    now = T0 + 3600
    zone.send(TimerFired(), now)
    while now < T0 + 86400:
        zone.send(SoaChecked(serial=None, error="timeout"), now)
        assert state(zone) is State.OK
        at = zone.wake()
        assert at is not None
        now = at
        zone.send(TimerFired(), now)
    # The wake-up at expires_at expires the zone.
    assert now == T0 + 86400 and state(zone) is State.EXPIRED
    # serve-stale: answers go on, saying since when they are stale
    assert zone.did(SetServing) == [SetServing(False, T0 + 86400)]
    assert "expired" in zone.logs() and not zone.zone.servfail
    # Retries keep going while expired; a success clears it.
    assert zone.did(QuerySoa)
    zone.send(SoaChecked(serial=None, error="timeout"), now)
    assert state(zone) is State.EXPIRED and zone.wake() == now + 600
    zone.send(TimerFired(), now + 600)
    zone.send(SoaChecked(serial=10), now + 601)
    assert state(zone) is State.OK and "no longer expired" in zone.logs()


def test_expired_with_servfail() -> None:
    zone = loaded(Settings(jitter=0.0, startup_spread=0.0, servfail_on_expire=True))
    zone.send(TimerFired(), T0 + 86400)
    assert state(zone) is State.EXPIRED and zone.zone.servfail
    assert zone.did(SetServing) == [SetServing(True, T0 + 86400)]
    zone.send(SoaChecked(serial=10), T0 + 86401)
    assert zone.did(SetServing) == [SetServing(False, None)]


def test_expiry_counts_from_last_success_across_restart() -> None:
    zone = Driver()
    zone.send(Start(served=SOA, stored={"last_success": T0 - 86000}), T0)
    assert state(zone) is State.OK and zone.zone.expires_at == T0 - 86000 + 86400
    assert zone.wake() == T0  # no stored refresh time: check the primary at once
    zone = Driver()
    zone.send(Start(served=SOA, stored={"last_success": T0 - 90000}), T0)
    assert state(zone) is State.EXPIRED and "expired" in zone.logs()


def test_fresh_stored_timers_mean_no_soa_query_at_start() -> None:
    stored = {"served_serial": 10, "last_success": T0 - 60, "next_refresh": T0 + 3000}
    zone = Driver()
    zone.send(Start(served=SOA, stored=stored), T0)
    assert zone.wake() == T0 + 3000 and zone.did(QuerySoa) == []
    # Timers of another version than the one on disk are not trusted.
    zone = Driver()
    zone.send(Start(served=SOA, stored={**stored, "served_serial": 9}), T0)
    assert zone.wake() == T0


def test_last_error_survives_a_restart() -> None:
    zone = loaded()
    zone.send(ForceRefresh(), T0 + 1)
    zone.send(SoaChecked(serial=None, error="p1: refused"), T0 + 2)
    record = persisted(zone.zone)
    assert record["last_error"] == "p1: refused" and record["last_outcome"] == "soa-check-failed"
    again = Driver()
    again.send(Start(served=SOA, stored=record), T0 + 10)
    assert again.zone.last_error == "p1: refused" and again.zone.outcome is Outcome.SOA_FAILED


def test_expires_while_a_transfer_is_in_flight() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaChecked(serial=11), T0 + 3600)
    assert zone.wake() == T0 + 86400  # the expiry still wakes us
    zone.send(TimerFired(), T0 + 86400)
    assert state(zone) is State.EXPIRED and zone.zone.phase is Phase.TRANSFER
    zone.deliver(SoaTimers(11, 3600, 600, 86400), T0 + 86401)
    assert state(zone) is State.OK and served(zone) == 11


PIPELINE: list[Event] = [
    SoaChecked(serial=11),
    Transferred(ok=True, candidate=SoaTimers(11, 3600, 600, 86400)),
    Verified(ok=True),
    Guarded(passed=True),
    Stored(ok=True),
]
PHASES = [
    Phase.SOA_QUERY,
    Phase.TRANSFER,
    Phase.VERIFY,
    Phase.GUARD,
    Phase.STORE,
    Phase.PUBLISH,
]


@pytest.mark.parametrize("depth", range(len(PHASES)), ids=[p.value for p in PHASES])
def test_the_wake_up_includes_expiry_in_every_phase(depth: int) -> None:
    zone = loaded()
    zone.send(ForceRefresh(), T0 + 1)
    for event in PIPELINE[:depth]:
        zone.send(event, T0 + 1)
    assert zone.zone.phase is PHASES[depth]
    assert zone.wake() == T0 + 86400


def test_soa_values_are_clamped() -> None:
    settings = Settings(refresh_min=300, retry_max=100, expire_min=7200, jitter=0.0)
    zone = Driver(settings)
    zone.send(Start(served=SoaTimers(1, refresh=5, retry=9999, expire=60), stored={}), T0)
    assert (zone.zone.refresh, zone.zone.retry, zone.zone.expire) == (300, 100, 7200)


def test_jitter_shortens_refresh_within_bounds() -> None:
    settings = Settings(jitter=0.2, startup_spread=0.0)
    zone, _ = step(Zone(settings), Start(served=SOA, stored={"last_success": T0}), T0)
    zone, _ = step(zone, TimerFired(), T0 + 3600)
    zone, _ = step(zone, SoaChecked(serial=10), T0 + 3600, rand=lambda: 0.999)
    assert T0 + 3600 + 3600 * 0.8 <= zone.next_refresh < T0 + 3600 + 3600


# -- bootstrap ---------------------------------------------------------------------------


def test_bootstrap_backoff_for_a_zone_that_never_loaded() -> None:
    zone = Driver()
    zone.send(Start(), T0)
    now = T0
    waits = []
    for _ in range(6):
        zone.send(TimerFired(), now)
        assert zone.did(Transfer) == [Transfer(axfr=True)]
        zone.send(Transferred(ok=False, error="refused"), now)
        at = zone.wake()
        assert at is not None
        waits.append(at - now)
        now = at
    assert waits == [5, 20, 45, 80, 125, 180]  # 5 n^2 s, not the 900 s SOA retry default
    assert "no version yet" in zone.logs()
    # The primary comes up: served at the next attempt, and the count resets.
    zone.send(TimerFired(), now)
    zone.deliver(SOA, now)
    assert served(zone) == 10 and zone.zone.bootstrap_failures == 0


def test_bootstrap_backoff_is_capped_at_two_hours() -> None:
    zone = Driver()
    zone.send(Start(stored={"bootstrap_failures": 100}), T0)
    zone.send(TimerFired(), T0)
    zone.send(Transferred(ok=False, error="refused"), T0)
    assert zone.wake() == T0 + 7200


def test_a_rejected_first_version_backs_off_like_bootstrap() -> None:
    zone = Driver()
    zone.send(Start(), T0)
    zone.send(TimerFired(), T0)
    zone.send(SoaChecked(serial=10), T0)
    zone.send(Transferred(ok=True, candidate=SOA), T0)
    zone.send(Verified(ok=False, reason="cname-other-data: h1"), T0)
    assert zone.did(Discard) == [Discard()] and zone.zone.downloaded is None
    assert zone.zone.outcome is Outcome.REJECTED and zone.wake() == T0 + 5


def test_a_store_failure_discards_and_keeps_the_served_version() -> None:
    zone = loaded()
    zone.send(ForceRefresh(), T0 + 1)
    zone.send(SoaChecked(serial=11), T0 + 1)
    zone.send(Transferred(ok=True, candidate=SoaTimers(11, 3600, 600, 86400)), T0 + 2)
    zone.send(Verified(ok=True), T0 + 2)
    zone.send(Guarded(passed=True), T0 + 2)
    zone.send(Stored(ok=False, error="disk full"), T0 + 3)
    assert zone.did(Discard) and zone.did(Publish) == []
    assert served(zone) == 10 and zone.zone.outcome is Outcome.STORE_FAILED
    assert zone.wake() == T0 + 3 + 600


# -- NOTIFY --------------------------------------------------------------------------------


def test_notify_burst_becomes_one_refresh() -> None:
    zone = loaded()
    queries = 0
    for i in range(50):
        zone.send(NotifyReceived(serial=11, source="192.0.2.1"), T0 + 10 + i * 0.01)
        queries += len(zone.did(QuerySoa))
    assert queries == 1 and zone.zone.pending
    zone.send(SoaChecked(serial=11), T0 + 11)
    assert zone.did(Transfer) == [Transfer(axfr=False)]
    zone.deliver(SoaTimers(11, 3600, 600, 86400), T0 + 12)
    # Exactly one more check for the NOTIFYs that came in meanwhile, then quiet.
    assert zone.did(QuerySoa) == [QuerySoa()] and not zone.zone.pending
    zone.send(SoaChecked(serial=11), T0 + 13)
    assert zone.did(QuerySoa) == [] and zone.did(Transfer) == []
    assert zone.zone.notified is not None
    assert (zone.zone.notified.serial, zone.zone.notified.at) == (11, T0 + 10 + 49 * 0.01)


def test_notify_for_a_serial_we_have_is_ignored() -> None:
    zone = loaded()
    zone.send(NotifyReceived(serial=10), T0 + 5)
    assert zone.did(QuerySoa) == [] and "not newer" in zone.logs()
    zone.send(NotifyReceived(serial=None), T0 + 6)
    assert zone.did(QuerySoa) == [QuerySoa()]


# -- serials -----------------------------------------------------------------------------


def test_serial_wraps_around_2_32() -> None:
    zone = Driver()
    zone.send(Start(served=SoaTimers(2**32 - 5, 3600, 600, 86400), stored={}), T0)
    zone.send(ForceRefresh(), T0 + 1)
    zone.send(SoaChecked(serial=3), T0 + 2)
    assert zone.did(Transfer) == [Transfer(axfr=False)]


def test_serial_exactly_2_31_ahead_is_not_newer_and_logged() -> None:
    zone = loaded()
    zone.send(ForceRefresh(), T0 + 1)
    zone.send(SoaChecked(serial=10 + 2**31, primary="p1"), T0 + 2)
    assert zone.did(Transfer) == [] and "2^31" in zone.logs()
    assert state(zone) is State.OK


def test_serial_going_backwards_is_ignored_with_one_warning() -> None:
    zone = loaded()
    warnings = 0
    for i in range(5):
        zone.send(ForceRefresh(), T0 + 10 * i)
        zone.send(SoaChecked(serial=9, primary="p1"), T0 + 10 * i + 1)
        assert zone.did(Transfer) == []
        warnings += zone.logs().count("lower than ours")
    assert warnings == 1 and served(zone) == 10
    # A newer serial resets the episode.
    zone.send(ForceRefresh(), T0 + 100)
    zone.send(SoaChecked(serial=12), T0 + 101)
    assert zone.zone.rollback_count == 0


def test_serial_rollback_accepted_after_n_checks() -> None:
    zone = loaded(Settings(jitter=0.0, startup_spread=0.0, rollback_after=3))
    transfers: list[Action] = []
    for i in range(3):
        zone.send(ForceRefresh(), T0 + 10 * i)
        zone.send(SoaChecked(serial=2), T0 + 10 * i + 1)
        transfers += zone.did(Transfer)
    assert transfers == [Transfer(axfr=True, forced=True)]
    zone.send(Transferred(ok=True, candidate=SoaTimers(2, 3600, 600, 86400)), T0 + 40)
    assert zone.did(Verify) == [Verify(forced=True)]  # the checks accept the lower serial
    zone.send(Verified(ok=True), T0 + 40)
    assert zone.zone.phase is Phase.GUARD  # a forced version is still compared with ours
    zone.send(Guarded(passed=True), T0 + 40)
    zone.send(Stored(ok=True), T0 + 40)
    assert zone.did(Publish) == [Publish(2)]
    zone.send(Published(confirmed=True), T0 + 40)
    assert served(zone) == 2


# -- operator commands ---------------------------------------------------------------------


def test_retransfer_forces_axfr_without_soa_check() -> None:
    zone = loaded()
    zone.send(ForceRetransfer(), T0 + 1)
    assert zone.did(Transfer) == [Transfer(axfr=True, forced=True)] and zone.did(QuerySoa) == []


def test_retransfer_while_busy_runs_after() -> None:
    zone = loaded()
    zone.send(ForceRefresh(), T0 + 1)
    zone.send(ForceRetransfer(), T0 + 2)
    assert zone.did(Transfer) == []
    zone.send(SoaChecked(serial=10), T0 + 3)
    assert zone.did(Transfer) == [Transfer(axfr=True, forced=True)]


@pytest.mark.parametrize(
    "event",
    [
        SoaChecked(serial=10),
        Transferred(ok=True, candidate=SOA),
        Verified(ok=True),
        Stored(ok=True),
        Published(confirmed=True),
        Guarded(passed=True),
        HeldStored(ok=True),
        Loaded(candidate=SOA),
    ],
    ids=["soa", "transfer", "verdict", "stored", "published", "guarded", "held", "loaded"],
)
def test_stray_results_are_ignored(event: Event) -> None:
    zone = loaded()
    before = zone.zone
    zone.send(event, T0 + 5)
    assert zone.zone == before and "ignored" in zone.logs()


def test_persist_exactly_when_the_record_changes() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 100)  # not due: nothing changes
    assert zone.did(Persist) == []
    zone.send(ForceRefresh(), T0 + 101)
    assert zone.did(Persist) == [Persist()]  # last_attempt and state moved


def test_start_always_sets_the_serving_flag() -> None:
    """The serving side may hold a stale flag (a reload changed on-expire): Start says it."""
    zone = Driver()
    zone.send(Start(served=SOA, stored={"served_serial": 10, "last_success": T0}), T0)
    assert zone.did(SetServing) == [SetServing(False, None)]
    expired = Driver(Settings(jitter=0.0, startup_spread=0.0, servfail_on_expire=True))
    expired.send(Start(served=SOA, stored={"last_success": T0 - 90000}), T0)
    assert expired.did(SetServing) == [SetServing(True, T0 - 90000 + 86400)]
