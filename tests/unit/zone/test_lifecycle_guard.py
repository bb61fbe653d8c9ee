"""The lifecycle machine's change guard, approvals, rejections, hold timeout, rollback and
pin (issue 14), with injected time (no sleeps, no sockets)."""

from __future__ import annotations

from authd.xfr.timers import Settings, SoaTimers
from authd.zone.lifecycle import (
    Action,
    Approve,
    Discard,
    DropHeld,
    Event,
    ForceRefresh,
    Guard,
    Guarded,
    HeldStored,
    Hold,
    Load,
    Loaded,
    Phase,
    Publish,
    Published,
    QuerySoa,
    Record,
    Reject,
    Rollback,
    SoaChecked,
    Start,
    Store,
    Stored,
    TimerFired,
    Transfer,
    Transferred,
    Unpin,
    Verified,
    Wake,
    Zone,
    persisted,
    step,
)

T0 = 1_700_000_000.0
SOA10 = SoaTimers(10, 3600, 600, 86400)
REASON = "held by the change guard: rrsets-removed: 90 of 100 RRsets (90%) would disappear"


def soa(serial: int) -> SoaTimers:
    return SoaTimers(serial, 3600, 600, 86400)


class Machine:
    def __init__(self, hold_timeout: float | None = None) -> None:
        self.zone = Zone(Settings(jitter=0.0, startup_spread=0.0), hold_timeout=hold_timeout)
        self.actions: list[Action] = []
        stored = {"served_serial": 10, "last_success": T0, "next_refresh": T0 + 3600}
        self.send(Start(served=SOA10, stored=stored), T0)

    def send(self, event: Event, now: float) -> list[Action]:
        self.zone, self.actions = step(self.zone, event, now, rand=lambda: 0.0)
        return self.actions

    def did(self, kind: type) -> list[Action]:
        return [a for a in self.actions if isinstance(a, kind)]

    def wake(self) -> float | None:
        (wake,) = self.did(Wake)
        assert isinstance(wake, Wake)
        return wake.at

    def served(self) -> int | None:
        return self.zone.served.serial if self.zone.served is not None else None

    def held(self) -> int | None:
        return self.zone.held.serial if self.zone.held is not None else None

    def phase(self) -> Phase:
        return self.zone.phase

    def to_guard(self, serial: int, now: float) -> None:
        """A refresh brings `serial`: SOA check, transfer, verified; the guard is asked."""
        self.send(ForceRefresh(), now)
        self.send(SoaChecked(serial, primary="p1"), now)
        assert self.did(Transfer), self.actions
        self.send(Transferred(True, soa(serial), primary="p1"), now)
        self.send(Verified(True), now)

    def hold(self, serial: int, now: float, digest: str = "d" * 96) -> None:
        self.to_guard(serial, now)
        assert self.did(Guard) == [Guard(pinned=self.zone.pinned is not None)]
        self.send(Guarded(False, REASON, digest), now)
        (hold,) = self.did(Hold)
        assert isinstance(hold, Hold) and hold.serial == serial
        self.send(HeldStored(True, reason=hold.reason, digest=hold.digest), now)

    def finish_publish(self, serial: int, now: float) -> None:
        assert self.did(Store) == [Store()]
        self.send(Stored(True), now)
        assert self.did(Publish) == [Publish(serial)]
        self.send(Published(True), now)


def test_a_tripped_guard_holds_the_version_and_keeps_serving_the_old_one() -> None:
    m = Machine()
    m.hold(11, T0 + 10)
    assert m.did(Discard) and m.held() == 11 and m.served() == 10
    assert m.phase() is Phase.NONE and m.zone.held_reason == REASON
    assert Record("held", 11, "d" * 96, REASON) in m.actions
    record = persisted(m.zone)
    assert record["held_serial"] == 11 and record["held_reason"] == REASON
    # The primary still has 11: it is not transferred again, and the hold stays.
    m.send(TimerFired(), m.zone.next_refresh)
    m.send(SoaChecked(11, primary="p1"), m.zone.next_refresh)
    assert not m.did(Transfer) and m.held() == 11 and m.served() == 10


def test_approve_publishes_the_held_version_and_remembers_its_digest() -> None:
    m = Machine()
    m.hold(11, T0 + 10)
    m.send(Approve(11), T0 + 20)
    assert m.did(Load) == [Load(11, held=True)] and m.phase() is Phase.LOAD
    assert Record("approved", 11, "d" * 96, "approved") in m.actions
    m.send(Loaded(soa(11), source="approval"), T0 + 21)
    m.finish_publish(11, T0 + 22)
    assert m.served() == 11 and m.held() is None and m.did(DropHeld)
    assert "d" * 96 in m.zone.approved
    # The same version again (e.g. after an unpin) is not held by the guard.
    m.to_guard(12, T0 + 30)
    m.send(Guarded(False, REASON, "d" * 96), T0 + 30)
    assert m.did(Store) == [Store()] and not m.did(Hold)


def test_approve_of_another_serial_does_nothing() -> None:
    m = Machine()
    m.hold(11, T0 + 10)
    m.send(Approve(12), T0 + 20)
    assert not m.did(Load) and m.held() == 11


def test_reject_drops_the_hold_and_refuses_that_serial() -> None:
    m = Machine()
    m.hold(11, T0 + 10)
    m.send(Reject(11), T0 + 20)
    assert m.did(DropHeld) and m.held() is None and m.served() == 10
    assert any(isinstance(a, Record) and a.event == "rejected" for a in m.actions)
    assert persisted(m.zone)["rejected_serials"] == "11"
    m.send(TimerFired(), m.zone.next_refresh)
    m.send(SoaChecked(11, primary="p1"), m.zone.next_refresh)
    assert not m.did(Transfer)  # refused
    m.send(TimerFired(), m.zone.next_refresh)
    m.send(SoaChecked(12, primary="p1"), m.zone.next_refresh)
    assert m.did(Transfer)  # a newer serial is taken through the guard as always


def test_a_newer_version_that_passes_releases_the_hold() -> None:
    m = Machine()
    m.hold(11, T0 + 10)
    m.to_guard(12, T0 + 20)
    m.send(Guarded(True), T0 + 20)
    m.finish_publish(12, T0 + 21)
    assert m.served() == 12 and m.held() is None and m.did(DropHeld)
    assert persisted(m.zone)["held_serial"] is None


def test_a_newer_version_that_trips_replaces_the_held_one() -> None:
    m = Machine()
    m.hold(11, T0 + 10)
    m.hold(12, T0 + 20, digest="e" * 96)
    assert m.held() == 12 and m.served() == 10 and m.zone.held_digest == "e" * 96


def test_hold_timeout_publishes_with_a_wake_up() -> None:
    m = Machine(hold_timeout=600)
    m.hold(11, T0 + 10)
    assert m.zone.held_until == T0 + 610 and m.wake() == T0 + 610
    m.send(TimerFired(), T0 + 610)
    assert m.did(Load) == [Load(11, held=True)]
    m.send(Loaded(soa(11), source="approval"), T0 + 611)
    m.finish_publish(11, T0 + 612)
    assert m.served() == 11 and m.held() is None and m.zone.held_until is None


def rolled_back(m: Machine, serial: int, now: float) -> None:
    m.send(Rollback(serial), now)
    assert m.did(Load) == [Load(serial, held=False)]
    m.send(Loaded(soa(serial), source="rollback"), now)
    m.finish_publish(serial, now)


def test_rollback_pins_and_every_new_version_is_held_without_a_timeout() -> None:
    m = Machine(hold_timeout=600)
    rolled_back(m, 9, T0 + 5)
    assert m.served() == 9 and m.zone.pinned == 9
    assert Record("pinned", 9, "", "rollback") in m.actions
    assert m.zone.expires_at == T0 + 86400  # a rollback is no refresh: expire goes on
    m.to_guard(12, T0 + 10)
    assert m.did(Guard) == [Guard(pinned=True)]
    m.send(Guarded(True), T0 + 10)  # even a version the rules pass is held while pinned
    (hold,) = m.did(Hold)
    assert isinstance(hold, Hold) and "pinned to serial 9" in hold.reason
    m.send(HeldStored(True, reason=hold.reason, digest="f" * 96), T0 + 10)
    assert m.held() == 12 and m.served() == 9 and m.zone.held_until is None


def test_unpin_drops_the_pin_hold_and_refreshes() -> None:
    m = Machine()
    rolled_back(m, 9, T0 + 5)
    m.hold(12, T0 + 10)
    m.send(Unpin(), T0 + 20)
    assert m.zone.pinned is None and m.held() is None and m.did(DropHeld)
    assert m.did(QuerySoa) and Record("unpinned", 9) in m.actions
    m.send(SoaChecked(12, primary="p1"), T0 + 21)
    assert m.did(Transfer)  # caught up through the guard
    m.send(Transferred(True, soa(12), primary="p1"), T0 + 22)
    m.send(Verified(True), T0 + 22)
    assert m.did(Guard) == [Guard(pinned=False)]


def test_a_command_while_busy_runs_when_the_operation_ends() -> None:
    m = Machine()
    m.hold(11, T0 + 10)
    m.send(ForceRefresh(), T0 + 20)
    m.send(Approve(None), T0 + 20)
    assert not m.did(Load) and m.zone.queued == Approve(None)
    m.send(SoaChecked(11, primary="p1"), T0 + 21)  # the SOA check ends: the approval runs
    assert m.did(Load) == [Load(11, held=True)] and m.zone.queued is None


def test_a_failed_load_leaves_everything_as_it_was() -> None:
    m = Machine()
    m.send(Rollback(3), T0 + 5)
    m.send(Loaded(None, "serial 3 is not in the history"), T0 + 5)
    assert m.phase() is Phase.NONE and m.served() == 10 and m.zone.pinned is None
    assert "not in the history" in m.zone.last_error


def test_held_pinned_rejected_and_approved_survive_a_restart() -> None:
    m = Machine(hold_timeout=600)
    m.hold(11, T0 + 10)
    m.send(Approve(11), T0 + 11)
    m.send(Loaded(soa(11), source="approval"), T0 + 11)
    m.finish_publish(11, T0 + 11)
    m.hold(12, T0 + 20, digest="e" * 96)
    m.send(Reject(12), T0 + 21)
    rolled_back(m, 10, T0 + 30)
    m.hold(13, T0 + 40, digest="c" * 96)
    stored = persisted(m.zone)
    again = Zone(Settings(jitter=0.0, startup_spread=0.0), hold_timeout=600)
    again, _ = step(again, Start(served=soa(10), stored=stored), T0 + 50, rand=lambda: 0.0)
    assert again.pinned == 10 and again.rejected == frozenset({12})
    assert again.held is not None and again.held.serial == 13 and again.held_digest == "c" * 96
    assert "d" * 96 in again.approved and again.held_reason == m.zone.held_reason
