"""RFC 7314 section 4 in the pure lifecycle machine (as Knot applies it), fake time only:
a secondary fed by another secondary restarts its expire clock from what that server's copy
has left, never from a full SOA expire, and never beyond the SOA expire."""

from __future__ import annotations

from authd.xfr.timers import Settings, SoaTimers
from authd.zone.lifecycle import (
    Action,
    Event,
    Guarded,
    HeldStored,
    Published,
    SetExpiry,
    SoaChecked,
    Start,
    State,
    Stored,
    TimerFired,
    Transferred,
    Verified,
    Zone,
    persisted,
    step,
)

T0 = 1_700_000_000.0
SOA = SoaTimers(serial=10, refresh=3600, retry=600, expire=86400)
EXPIRE = SOA.expire


class Driver:
    """Steps the machine like the shell does (no jitter), keeping the last step's actions."""

    def __init__(self) -> None:
        self.zone = Zone(Settings(jitter=0.0, startup_spread=0.0))
        self.actions: list[Action] = []

    def send(self, event: Event, now: float) -> None:
        self.zone, self.actions = step(self.zone, event, now, rand=lambda: 0.0)

    def did(self, kind: type) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]

    def deliver(self, soa: SoaTimers, now: float) -> None:
        """A transfer without EDNS EXPIRE brought `soa`'s version, published at `now`."""
        for event in (
            Transferred(ok=True, candidate=soa, primary="p1"),
            Verified(ok=True),
            Stored(ok=True),
            Published(confirmed=True),
        ):
            self.send(event, now)


def loaded() -> Driver:
    """A zone started from a stored copy of SOA at T0: it expires at T0 + EXPIRE."""
    driver = Driver()
    stored = {"served_serial": 10, "last_success": T0, "next_refresh": T0 + 3600}
    driver.send(Start(served=SOA, stored=stored), T0)
    return driver


def test_a_transfer_with_expire_takes_the_upstream_deadline() -> None:
    zone = Driver()
    zone.send(Start(), T0)
    zone.send(TimerFired(), T0)
    zone.send(SoaChecked(serial=10, primary="mid", expire=5000), T0)
    zone.send(Transferred(ok=True, candidate=SOA, primary="mid", expire=4000), T0 + 10)
    zone.send(Verified(ok=True), T0 + 30)
    zone.send(Stored(ok=True), T0 + 40)
    zone.send(Published(confirmed=True), T0 + 50)
    # Received at T0+10 with 4000 s left: the upstream copy expires at T0+4010, so does ours.
    assert zone.zone.expires_at == T0 + 4010
    assert zone.did(SetExpiry) == [SetExpiry(T0 + 4010)]
    assert (zone.zone.edns_expire, zone.zone.edns_expire_at) == (4000, T0 + 10)


def test_a_transfer_without_expire_restarts_the_full_soa_expire() -> None:
    zone = Driver()
    zone.send(Start(), T0)
    zone.send(TimerFired(), T0)
    zone.send(SoaChecked(serial=10), T0)
    zone.deliver(SOA, T0 + 5)
    assert zone.zone.expires_at == T0 + 5 + EXPIRE and zone.zone.edns_expire is None


def test_never_beyond_the_soa_expire() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaChecked(serial=10, expire=10 * EXPIRE), T0 + 3600)
    assert zone.zone.expires_at == T0 + 3600 + EXPIRE


def test_a_soa_check_never_shortens_the_timer_but_may_lengthen_it() -> None:
    zone = loaded()  # expires at T0 + EXPIRE
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaChecked(serial=10, primary="mid", expire=100), T0 + 3600)
    assert zone.zone.expires_at == T0 + EXPIRE  # kept: RFC 7314 4, second paragraph
    assert zone.did(SetExpiry) == []  # unchanged: no message to the workers
    assert zone.zone.edns_expire == 100  # but status shows what was received
    zone.send(TimerFired(), T0 + 7200)
    zone.send(SoaChecked(serial=10, expire=EXPIRE - 600), T0 + 7200)
    assert zone.zone.expires_at == T0 + 7200 + EXPIRE - 600
    assert zone.did(SetExpiry) == [SetExpiry(T0 + 6600 + EXPIRE)]


def test_an_upstream_past_expire_keeps_us_expired() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + EXPIRE + 1)
    assert zone.zone.state is State.EXPIRED
    zone.send(TimerFired(), T0 + EXPIRE + 900)
    zone.send(SoaChecked(serial=10, expire=0), T0 + EXPIRE + 900)
    assert zone.zone.state is State.EXPIRED  # its copy has expired too: so has ours


def test_an_ixfr_up_to_date_applies_the_transfer_rule() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaChecked(serial=11), T0 + 3600)  # newer: transfer
    zone.send(Transferred(ok=True, candidate=None, was_ixfr=True, expire=50), T0 + 3601)
    assert zone.zone.expires_at == T0 + 3651


def test_a_restart_keeps_a_deadline_cut_short() -> None:
    zone = loaded()
    zone.send(TimerFired(), T0 + 3600)
    zone.send(SoaChecked(serial=11), T0 + 3600)
    zone.send(Transferred(ok=True, candidate=None, was_ixfr=True, expire=5400), T0 + 3600)
    assert zone.zone.expires_at == T0 + 9000
    stored = persisted(zone.zone)
    again = Driver()
    again.send(Start(served=SOA, stored=stored), T0 + 8000)
    assert again.zone.expires_at == T0 + 9000  # not last_success + a full expire
    assert again.did(SetExpiry) == [SetExpiry(T0 + 9000)]
    other = dict(stored, served_serial=9)  # timers of another version: not trusted
    fresh = Driver()
    fresh.send(Start(served=SOA, stored=other), T0 + 8000)
    assert fresh.zone.expires_at == T0 + 3600 + EXPIRE


def test_through_the_change_guard_passed_or_held_the_transfer_expire_counts() -> None:
    newer = SoaTimers(serial=11, refresh=3600, retry=600, expire=86400)
    for held in (False, True):
        zone = loaded()
        zone.send(TimerFired(), T0 + 3600)
        zone.send(SoaChecked(serial=11), T0 + 3600)
        zone.send(Transferred(ok=True, candidate=newer, expire=500), T0 + 3600)
        zone.send(Verified(ok=True), T0 + 3601)
        if held:  # the old version keeps serving; the primary answered with 500 s left
            zone.send(Guarded(passed=False, reason="too many changes"), T0 + 3602)
            zone.send(HeldStored(ok=True, reason="too many changes"), T0 + 3603)
        else:
            zone.send(Guarded(passed=True), T0 + 3602)
            zone.send(Stored(ok=True), T0 + 3603)
            zone.send(Published(confirmed=True), T0 + 3604)
        assert zone.zone.expires_at == T0 + 4100, held
        assert zone.zone.candidate_deadline is None
