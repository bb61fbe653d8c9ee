"""The periodic drift rounds on the one scheduler: first rounds spread over one interval, one
timer for all zones, no task while idle, at most max_rounds zones at once, the next round one
jittered interval later, removed zones never checked again. Time is a FakeClock; the timer is
a fake loop; rounds are real asyncio tasks around an injected checker (the peers are not
asked here; test_unreachable_peer_is_a_finding asks a real, silent loopback socket)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authd.assure import periodic
from authd.assure.gather import ZoneView
from authd.assure.watch import JITTER, Watch
from authd.clock import FakeClock
from authd.config import Config, load_config
from authd.metrics import ZoneFacts
from authd.xfr.scheduler import Scheduler
from authd.zone.loader import load_zone_file
from tests.support.fakeloop import FakeLoop

NOW = 1_900_000_000.0
INTERVAL = 60.0
ZONE_TEXT = """$TTL 300
@ SOA ns1 hostmaster 7 3600 600 1209600 60
@ NS ns1
ns1 A 127.0.0.1
"""


def config(
    tmp_path: Path, zones: int, extra: str = 'peers = ["127.0.0.1@9"]\n', interval: str = "60s"
) -> Config:
    text = (
        '[server]\nlisten = ["127.0.0.1@5399"]\n[[remote]]\nid = "p"\naddresses = ["127.0.0.1"]\n'
    )
    for i in range(zones):
        text += f'[[zone]]\nname = "z{i}.test"\nprimaries = ["p"]\ndrift-interval = "{interval}"\n'
        text += extra
    (tmp_path / "authd.toml").write_text(text)
    return load_config(tmp_path / "authd.toml")


class Harness:
    """PeriodicChecks over the real Scheduler, a fake timer loop and a fake clock."""

    def __init__(self, cfg: Config, tmp_path: Path, rand: Callable[[], float]) -> None:
        self.cfg = cfg
        self.clock = FakeClock(now=NOW)
        self.loop = FakeLoop(self.clock)
        self.gate = asyncio.Event()
        self.checked: list[tuple[str, float]] = []
        self.scheduler: Scheduler[tuple[str, bytes]] = Scheduler(
            self.clock, self._fire, self.loop.call_later
        )
        (tmp_path / "zone").write_text(ZONE_TEXT)
        self.snapshots = {z.origin: load_zone_file(tmp_path / "zone", z.name) for z in cfg.zones}
        self.checks = periodic.PeriodicChecks(
            self.view,
            lambda origin, at: self.scheduler.set(("drift", origin), at),
            self.clock,
            rand=rand,
            check=self.check,
        )

    def _fire(self, keys: list[tuple[str, bytes]]) -> None:
        for _, origin in keys:
            self.checks.wake(origin)

    def view(self, origin: bytes) -> ZoneView | None:
        zone = next(z for z in self.cfg.zones if z.origin == origin)
        facts = ZoneFacts(zone.name, "ok", 7, 7, NOW, None, None)
        return ZoneView(self.cfg, zone, self.snapshots[origin], facts, self.clock.now())

    async def check(self, view: ZoneView, watch: Watch, now: Callable[[], float]) -> Watch:
        self.checked.append((view.zone.name, now()))
        await self.gate.wait()
        return watch

    def wakes(self) -> list[float]:
        return sorted(
            t for z in self.cfg.zones if (t := self.scheduler.heap.get(("drift", z.origin)))
        )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def seeded() -> Iterator[Callable[[], float]]:
    yield random.Random(7).random


async def test_first_rounds_are_spread_over_one_interval_with_one_timer(
    tmp_path: Path, seeded: Callable[[], float]
) -> None:
    h = Harness(config(tmp_path, 50), tmp_path, seeded)
    for zone in h.cfg.zones:
        h.checks.add(zone, h.cfg.server)
    wakes = h.wakes()
    assert len(wakes) == 50 and wakes[0] >= NOW and wakes[-1] < NOW + INTERVAL
    assert wakes[-1] - wakes[0] > INTERVAL / 2  # spread, not a burst
    assert len(h.loop.live()) == 1  # one timer for every zone
    assert h.checks.running == {}  # idle zones: no task


async def test_due_rounds_are_bounded_and_come_back_one_interval_later(tmp_path: Path) -> None:
    h = Harness(config(tmp_path, 6), tmp_path, lambda: 0.0)  # all due at once: worst case
    for zone in h.cfg.zones:
        h.checks.add(zone, h.cfg.server)
    h.loop.run_until(NOW)
    await settle()
    assert len(h.checked) == periodic.MAX_ROUNDS and h.checks.peak == periodic.MAX_ROUNDS
    assert len(h.checks.running) == 6  # the others wait for a slot (parked, not spinning)
    h.clock.advance(5.0)
    h.gate.set()
    await settle()
    assert len(h.checked) == 6 and h.checks.peak == periodic.MAX_ROUNDS
    assert h.checks.running == {}
    # rand 0.0: the next rounds come (1 - JITTER/2) intervals after they ended
    assert h.wakes() == [NOW + 5.0 + INTERVAL * (1 - JITTER / 2)] * 6
    h.loop.run_until(NOW + 5.0 + INTERVAL)
    await settle()
    assert len(h.checked) == 12
    assert [w.rounds for w in h.checks.watches.values()] == [0] * 6  # the checker's watch


async def test_a_removed_zone_is_never_checked_again(tmp_path: Path) -> None:
    h = Harness(config(tmp_path, 2), tmp_path, lambda: 0.5)
    for zone in h.cfg.zones:
        h.checks.add(zone, h.cfg.server)
    h.checks.remove(h.cfg.zones[0].origin)
    h.gate.set()
    h.loop.run_until(NOW + INTERVAL)
    await settle()
    assert [name for name, _ in h.checked] == ["z1.test"]
    assert h.checks.status(h.cfg.zones[0].origin) == {}
    assert h.checks.facts() and [n for n, _ in h.checks.facts()] == ["z1.test"]


def test_which_zones_are_watched(tmp_path: Path) -> None:
    cfg = config(tmp_path, 1, extra="")
    [zone] = cfg.zones
    assert not periodic.watched(zone, cfg.server)  # nothing to compare with
    assert periodic.watched(config(tmp_path, 1).zones[0], cfg.server)  # peers
    parent = config(tmp_path, 1, extra='parent = ["127.0.0.1@9"]\n')
    assert periodic.watched(parent.zones[0], parent.server)
    off = config(tmp_path, 1, interval="0s")
    assert not periodic.watched(off.zones[0], off.server)
    ns_names = load_config_text(tmp_path, '[server]\nns-names = ["ns2.z0.test"]\n')
    assert periodic.watched(ns_names.zones[0], ns_names.server)


def load_config_text(tmp_path: Path, server: str) -> Config:
    (tmp_path / "n.toml").write_text(
        server + '[[remote]]\nid = "p"\naddresses = ["127.0.0.1"]\n'
        '[[zone]]\nname = "z0.test"\nprimaries = ["p"]\n'
    )
    return load_config(tmp_path / "n.toml")


async def test_unreachable_peer_is_a_finding(tmp_path: Path) -> None:
    """A peer that never answers (a bound, silent loopback socket) is `unreachable`; the
    round still ends and the zone keeps its schedule."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        cfg = config(tmp_path, 1, extra=f'peers = ["127.0.0.1@{port}"]\ndrift-sample = false\n')
        [zone] = cfg.zones
        (tmp_path / "zone").write_text(ZONE_TEXT)
        snapshot = load_zone_file(tmp_path / "zone", zone.name)
        facts = ZoneFacts(zone.name, "ok", 7, 7, NOW, None, None)
        view = ZoneView(cfg, zone, snapshot, facts, NOW)
        clock = FakeClock(now=NOW)
        watch = await periodic.check_zone(view, Watch(), clock.now)
    finally:
        silent.close()
    [peer] = watch.peers
    assert peer.peer == f"127.0.0.1@{port}" and peer.serial is None
    assert [f.kind for f in peer.findings] == ["unreachable"]
    assert watch.rounds == 1 and watch.last_round == NOW
