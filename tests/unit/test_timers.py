"""The refresh state machine with injected time and randomness (no sleeps, no sockets)."""

from __future__ import annotations

import pytest

from authd.xfr.timers import (
    Action,
    Event,
    ForceRefresh,
    ForceRetransfer,
    InFlight,
    Log,
    NotifyReceived,
    Persist,
    Publish,
    QuerySoa,
    Schedule,
    SetExpired,
    Settings,
    SoaAnswer,
    SoaTimers,
    Start,
    State,
    TimerFired,
    Transfer,
    TransferDone,
    ZoneTimers,
    step,
)

T0 = 1_700_000_000.0
SOA = SoaTimers(serial=10, refresh=3600, retry=600, expire=86400)


def no_jitter() -> float:
    return 0.0


class Zone:
    """Drives the machine like secondary.py does, recording the actions."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.timers = ZoneTimers(settings or Settings(jitter=0.0, startup_spread=0.0))
        self.actions: list[Action] = []

    def send(self, event: Event, now: float) -> list[Action]:
        self.timers, self.actions = step(self.timers, event, now, rand=no_jitter)
        return self.actions

    def did(self, kind: type) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]

    def schedule(self) -> float:
        (schedule,) = self.did(Schedule)
        assert isinstance(schedule, Schedule)
        return schedule.at

    def logs(self) -> str:
        return "\n".join(a.message for a in self.actions if isinstance(a, Log))


def state(zone: Zone) -> State:
    """The zone's state (a function, so type checkers do not narrow it between steps)."""
    return zone.timers.state


def loaded(settings: Settings | None = None, last_success: float = T0) -> Zone:
    zone = Zone(settings)
    zone.send(Start(served=SOA, last_success=last_success, next_refresh=T0 + 3600), T0)
    return zone


def test_never_loaded_queries_soa_then_axfr() -> None:
    zone = Zone()
    zone.send(Start(), T0)
    assert state(zone) is State.NEVER_LOADED and zone.timers.serving_servfail
    assert zone.schedule() == T0
    assert zone.did(QuerySoa) == [] and zone.did(Persist)
    zone.send(TimerFired(), T0)
    assert zone.did(QuerySoa) == [QuerySoa()]
    assert state(zone) is State.NEVER_LOADED and zone.timers.in_flight is InFlight.SOA_QUERY
    zone.send(SoaAnswer(serial=10), T0 + 1)
    assert zone.did(Transfer) == [Transfer(axfr=True)]
    zone.send(TransferDone(ok=True, new=SOA, primary="p1"), T0 + 2)
    assert zone.did(Publish) == [Publish(10)]
    assert state(zone) is State.OK and not zone.timers.serving_servfail
    assert zone.timers.served_serial == 10 and zone.timers.expires_at == T0 + 2 + 86400
    assert zone.schedule() == T0 + 2 + 3600


def test_start_jitter_spreads_the_first_refresh() -> None:
    settings = Settings(startup_spread=60.0)
    timers, _ = step(ZoneTimers(settings), Start(), T0, rand=lambda: 0.5)
    assert timers.next_refresh == T0 + 30.0


def test_refresh_up_to_date_resets_expire() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    assert zone.did(QuerySoa) and state(zone) is State.REFRESHING
    zone.send(SoaAnswer(serial=10), T0 + 3601)
    assert state(zone) is State.OK and zone.did(Transfer) == []
    assert zone.timers.last_success == T0 + 3601
    assert zone.timers.expires_at == T0 + 3601 + 86400
    assert zone.timers.primary_serial == 10 and zone.timers.primary_seen_at == T0 + 3601


def test_timer_before_due_does_nothing() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 100)
    assert zone.did(QuerySoa) == [] and state(zone) is State.OK


def test_newer_serial_asks_for_ixfr() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaAnswer(serial=11), T0 + 3600)
    assert zone.did(Transfer) == [Transfer(axfr=False)]
    assert zone.timers.in_flight is InFlight.TRANSFER


def test_failed_ixfr_makes_the_next_transfer_axfr() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaAnswer(serial=11), T0 + 3600)
    zone.send(TransferDone(ok=False, was_ixfr=True, error="cut"), T0 + 3601)
    assert state(zone) is State.OK and zone.timers.last_error == "cut"
    assert zone.schedule() == T0 + 3601 + 600  # retry
    zone.send(TimerFired(), T0 + 4201)
    zone.send(SoaAnswer(serial=11), T0 + 4201)
    assert zone.did(Transfer) == [Transfer(axfr=True)]
    zone.send(TransferDone(ok=True, new=SoaTimers(11, 3600, 600, 86400)), T0 + 4202)
    assert not zone.timers.axfr_next and zone.timers.served_serial == 11


def test_retry_then_expire_then_recover_serving_stale() -> None:
    zone = loaded()
    now = T0 + 3600
    zone.send(TimerFired(), now)
    while now < T0 + 86400:
        zone.send(SoaAnswer(serial=None, error="timeout"), now)
        assert state(zone) is State.OK
        now = zone.schedule()
        zone.send(TimerFired(), now)
    # The timer that fires at expires_at expires the zone.
    assert state(zone) is State.EXPIRED
    assert zone.did(SetExpired) == [SetExpired(True, False)]
    assert "expired" in zone.logs() and not zone.timers.serving_servfail
    # Retries keep going while expired; a success clears it.
    assert zone.did(QuerySoa)
    zone.send(SoaAnswer(serial=None, error="timeout"), now)
    assert state(zone) is State.EXPIRED and zone.schedule() == now + 600
    zone.send(TimerFired(), now + 600)
    zone.send(SoaAnswer(serial=10), now + 601)
    assert state(zone) is State.OK
    assert zone.did(SetExpired) == [SetExpired(False, False)]


def test_expired_with_servfail() -> None:
    zone = loaded(Settings(jitter=0.0, startup_spread=0.0, servfail_on_expire=True))
    zone.send(TimerFired(), T0 + 86400)
    assert state(zone) is State.EXPIRED and zone.timers.serving_servfail
    assert SetExpired(True, True) in zone.actions


def test_expiry_counts_from_last_success_across_restart() -> None:
    zone = Zone()
    zone.send(Start(served=SOA, last_success=T0 - 86000), T0)
    assert state(zone) is State.OK and zone.timers.expires_at == T0 - 86000 + 86400
    assert zone.schedule() == T0  # no stored refresh time: check the primary at once
    zone = Zone()
    zone.send(Start(served=SOA, last_success=T0 - 90000), T0)
    assert state(zone) is State.EXPIRED and zone.did(SetExpired)


def test_expires_while_a_transfer_is_in_flight() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaAnswer(serial=11), T0 + 3600)
    assert zone.schedule() == T0 + 86400  # the expiry still wakes us
    zone.send(TimerFired(), T0 + 86400)
    assert state(zone) is State.EXPIRED and zone.timers.in_flight is InFlight.TRANSFER
    zone.send(TransferDone(ok=True, new=SoaTimers(11, 3600, 600, 86400)), T0 + 86401)
    assert state(zone) is State.OK and SetExpired(False, False) in zone.actions


def test_soa_values_are_clamped() -> None:
    settings = Settings(refresh_min=300, retry_max=100, expire_min=7200, jitter=0.0)
    zone = Zone(settings)
    zone.send(Start(served=SoaTimers(1, refresh=5, retry=9999, expire=60), last_success=T0), T0)
    assert (zone.timers.refresh, zone.timers.retry, zone.timers.expire) == (300, 100, 7200)


def test_jitter_shortens_refresh_within_bounds() -> None:
    settings = Settings(jitter=0.2, startup_spread=0.0)
    timers, _ = step(ZoneTimers(settings), Start(served=SOA, last_success=T0), T0)
    timers, _ = step(timers, TimerFired(), T0 + 3600)
    timers, _ = step(timers, SoaAnswer(serial=10), T0 + 3600, rand=lambda: 0.999)
    assert T0 + 3600 + 3600 * 0.8 <= timers.next_refresh < T0 + 3600 + 3600


# -- NOTIFY --------------------------------------------------------------------------------


def test_notify_burst_becomes_one_refresh() -> None:
    zone = loaded()
    queries = 0
    for i in range(50):
        zone.send(NotifyReceived(serial=11, source="192.0.2.1"), T0 + 10 + i * 0.01)
        queries += len(zone.did(QuerySoa))
    assert queries == 1 and zone.timers.pending
    zone.send(SoaAnswer(serial=11), T0 + 11)
    assert zone.did(Transfer) == [Transfer(axfr=False)]
    zone.send(TransferDone(ok=True, new=SoaTimers(11, 3600, 600, 86400)), T0 + 12)
    # Exactly one more check for the NOTIFYs that came in meanwhile, then quiet.
    assert zone.did(QuerySoa) == [QuerySoa()] and not zone.timers.pending
    zone.send(SoaAnswer(serial=11), T0 + 13)
    assert zone.did(QuerySoa) == [] and zone.did(Transfer) == []
    assert zone.timers.notified_serial == 11 and zone.timers.notified_at == T0 + 10 + 49 * 0.01


def test_notify_for_a_serial_we_have_is_ignored() -> None:
    zone = loaded()
    zone.send(NotifyReceived(serial=10), T0 + 5)
    assert zone.did(QuerySoa) == [] and "not newer" in zone.logs()
    zone.send(NotifyReceived(serial=None), T0 + 6)
    assert zone.did(QuerySoa) == [QuerySoa()]


# -- serials -----------------------------------------------------------------------------


def test_serial_wraps_around_2_32() -> None:
    zone = Zone(Settings(jitter=0.0, startup_spread=0.0))
    zone.send(Start(served=SoaTimers(2**32 - 5, 3600, 600, 86400), last_success=T0), T0)
    zone.send(ForceRefresh(), T0 + 1)
    zone.send(SoaAnswer(serial=3), T0 + 2)
    assert zone.did(Transfer) == [Transfer(axfr=False)]


def test_serial_exactly_2_31_ahead_is_not_newer_and_logged() -> None:
    zone = loaded()
    zone.send(ForceRefresh(), T0 + 1)
    zone.send(SoaAnswer(serial=10 + 2**31, primary="p1"), T0 + 2)
    assert zone.did(Transfer) == [] and "2^31" in zone.logs()
    assert state(zone) is State.OK


def test_serial_going_backwards_is_ignored_with_one_warning() -> None:
    zone = loaded()
    warnings = 0
    for i in range(5):
        zone.send(ForceRefresh(), T0 + 10 * i)
        zone.send(SoaAnswer(serial=9, primary="p1"), T0 + 10 * i + 1)
        assert zone.did(Transfer) == []
        warnings += zone.logs().count("lower than ours")
    assert warnings == 1 and zone.timers.served_serial == 10
    # A newer serial resets the episode.
    zone.send(ForceRefresh(), T0 + 100)
    zone.send(SoaAnswer(serial=12), T0 + 101)
    assert zone.timers.rollback_count == 0


def test_serial_rollback_accepted_after_n_checks() -> None:
    zone = loaded(Settings(jitter=0.0, startup_spread=0.0, rollback_after=3))
    transfers: list[Action] = []
    for i in range(3):
        zone.send(ForceRefresh(), T0 + 10 * i)
        zone.send(SoaAnswer(serial=2), T0 + 10 * i + 1)
        transfers += zone.did(Transfer)
    assert transfers == [Transfer(axfr=True, forced=True)]
    zone.send(TransferDone(ok=True, new=SoaTimers(2, 3600, 600, 86400)), T0 + 40)
    assert zone.timers.served_serial == 2 and zone.did(Publish) == [Publish(2)]


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
    zone.send(SoaAnswer(serial=10), T0 + 3)
    assert zone.did(Transfer) == [Transfer(axfr=True, forced=True)]


@pytest.mark.parametrize(
    "event", [SoaAnswer(serial=10), TransferDone(ok=True, new=SOA)], ids=["soa", "transfer"]
)
def test_stray_results_are_ignored(event: Event) -> None:
    zone = loaded()
    before = zone.timers
    zone.send(event, T0 + 5)
    assert zone.timers == before and "ignored" in zone.logs()
