"""Periodic drift and delegation checks (issue 13 items 3 and 4): every `drift-interval`, per
zone, ask each peer (the provider's public servers) for the SOA and a rotating sample of the
served version's RRsets and compare (zone/drift.py); every DELEGATION_EVERY rounds, with
`parent` set, ask the parent for the NS set, glue and DS and check them (zone/delegation.py).
The findings go to watch.py's record: status, metrics and the alert read it.

Pacing and cost: a zone's round is a wake-up in the one scheduler of all zones (keyed
("drift", origin), secondary.py dispatches it here); an idle zone has no task. The first
rounds are spread over one interval, later ones are jittered (watch.py), at most
`max_rounds` zones run a round at once, and each round asks at most gather.IN_FLIGHT
questions at a time under gather.MAX_QUERIES in all: queries in flight overall stay at or
below max_rounds * IN_FLIGHT. A peer that does not answer is the finding `unreachable`,
never an error of the zone.

Which zones: secondaries with drift-interval > 0 and something to compare with: `peers`
set, or `[server] ns-names` (so the zone's other apex NS are the provider's), or `parent`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from authd.assure import watch as watches
from authd.assure.gather import WILDCARD, Gatherer, ZoneView, apex_ns, bounded
from authd.clock import Clock
from authd.config import Endpoint, ServerConfig, ZoneConfig
from authd.zone import delegation, drift, names

log = logging.getLogger("authd.assure")

MAX_ROUNDS = 4  # zones checked at once (each at most gather.IN_FLIGHT queries in flight)
MAX_PEERS = 4
DRIFT_SAMPLE = 3  # names beyond the apex set per round (drift.questions)

Checker = Callable[[ZoneView, watches.Watch, Callable[[], float]], Awaitable[watches.Watch]]


def watched(zone: ZoneConfig, server: ServerConfig) -> bool:
    """Whether a zone gets periodic checks at all."""
    if not zone.is_secondary or zone.drift_interval <= 0:
        return False
    return zone.peers is not None or bool(server.ns_names) or bool(zone.parent)


async def peer_addresses(view: ZoneView, gather: Gatherer) -> tuple[list[Endpoint], str]:
    """The peers to ask, and why there are none when there are none."""
    if view.zone.peers is not None:
        return list(view.zone.peers)[:MAX_PEERS], ""
    own = set(view.config.server.ns_names)
    if not own:
        return [], "no peers: set peers, or [server] ns-names to tell the provider's NS apart"
    others = [n for n in apex_ns(view.snapshot) if n not in own]
    found = await gather.addresses(others)
    listening = {e.host for e in view.config.server.listen} - set(WILDCARD)
    out: list[Endpoint] = []
    for name in others:
        for address in found.get(name, ()):
            endpoint = Endpoint(address, 53)
            if address not in listening and endpoint not in out:
                out.append(endpoint)
    if not out:
        return [], (
            f"no address found for the provider's NS names ({', '.join(others) or 'none'}): "
            "set peers, or server.resolver"
        )
    return out[:MAX_PEERS], ""


def _own_ns_keys(view: ZoneView) -> frozenset[bytes]:
    return frozenset(names.key_from_text(n) for n in view.config.server.ns_names)


async def check_zone(
    view: ZoneView, watch: watches.Watch, now: Callable[[], float]
) -> watches.Watch:
    """One round for one zone: the peers, and the parent when due."""
    gather = Gatherer(view)
    zone, snapshot = view.zone, view.snapshot
    delegation_due = bool(zone.parent) and watch.delegation_due()
    peers, note = await peer_addresses(view, gather)
    asked = drift.questions(snapshot, watch.rounds, DRIFT_SAMPLE) if zone.drift_sample else []
    states = await bounded(gather.peer(p, asked) for p in peers)
    watch = watches.peers_checked(
        watch, [(s.address, s.serial, s.drift) for s in states], now(), note
    )
    if delegation_due:
        parent, source = await gather.parent_view()
        listening = frozenset(e.host for e in view.config.server.listen) - set(WILDCARD)
        found = (
            None
            if parent is None
            else delegation.check(
                snapshot, parent, now(), own_ns=_own_ns_keys(view), own_addresses=listening
            )
        )
        watch = watches.delegation_checked(watch, found, now(), source)
    return watch


class PeriodicChecks:
    """Every watched zone's rounds; `schedule(origin, at)` sets its wake-up in the one
    scheduler, which calls `wake(origin)` when it is due."""

    def __init__(
        self,
        view: Callable[[bytes], ZoneView | None],
        schedule: Callable[[bytes, float | None], None],
        clock: Clock,
        *,
        rand: Callable[[], float] = random.random,
        check: Checker = check_zone,
        max_rounds: int = MAX_ROUNDS,
    ) -> None:
        self.view = view
        self.schedule = schedule
        self.clock = clock
        self.rand = rand
        self.check = check
        self.max_rounds = max_rounds
        self.zones: dict[bytes, ZoneConfig] = {}
        self.watches: dict[bytes, watches.Watch] = {}
        self.running: dict[bytes, asyncio.Task[None]] = {}  # only while a round runs
        self._gate: asyncio.Semaphore | None = None
        self.peak = 0  # most rounds that ran at once (tests check the bound)
        self._active = 0

    def add(self, zone: ZoneConfig, server: ServerConfig) -> None:
        """A zone configured (or reconfigured): its first round within one interval."""
        if not watched(zone, server):
            self.remove(zone.origin)
            return
        self.zones[zone.origin] = zone
        at = watches.first_round(self.clock.now(), zone.drift_interval, self.rand())
        self.watches[zone.origin] = replace(
            self.watches.get(zone.origin, watches.Watch()), next_round=at
        )
        self.schedule(zone.origin, at)

    def remove(self, origin: bytes) -> None:
        self.zones.pop(origin, None)
        self.watches.pop(origin, None)
        self.schedule(origin, None)
        task = self.running.pop(origin, None)
        if task is not None:
            task.cancel()

    def wake(self, origin: bytes) -> None:
        """The zone's round is due: one task until it ends."""
        if origin not in self.zones or origin in self.running:
            return
        task = asyncio.get_running_loop().create_task(self._round(origin))
        self.running[origin] = task
        task.add_done_callback(lambda _: self._ended(origin, task))

    def _ended(self, origin: bytes, task: asyncio.Task[None]) -> None:
        if self.running.get(origin) is task:
            del self.running[origin]

    async def _round(self, origin: bytes) -> None:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.max_rounds)
        try:
            async with self._gate:
                self._active += 1
                self.peak = max(self.peak, self._active)
                try:
                    await self._check(origin)
                finally:
                    self._active -= 1
        finally:
            zone = self.zones.get(origin)
            if zone is not None:  # still configured: the next round
                at = watches.next_round(self.clock.now(), zone.drift_interval, self.rand())
                self.watches[origin] = replace(self.watches[origin], next_round=at)
                self.schedule(origin, at)

    async def _check(self, origin: bytes) -> None:
        view = self.view(origin)
        watch = self.watches.get(origin)
        if view is None or watch is None:
            return  # nothing served yet: nothing to compare
        if not watched(view.zone, view.config.server):  # a reload made it a file zone, ...
            self.remove(origin)
            return
        try:
            found = await self.check(view, watch, self.clock.now)
        except Exception:  # a bug in one round must not stop the next ones
            log.exception("zone %s: drift check failed", view.zone.name)
            return
        if origin in self.watches:
            self.watches[origin] = found
            self._log_changes(view.zone.name, watch, found)

    @staticmethod
    def _log_changes(zone: str, before: watches.Watch, after: watches.Watch) -> None:
        """One line when a peer's findings change (not every round)."""
        old = {p.peer: {f.kind for f in p.findings} for p in before.peers}
        for peer in after.peers:
            kinds = {f.kind for f in peer.findings}
            if kinds == old.get(peer.peer, set()):
                continue
            if kinds:
                detail = "; ".join(f"{f.kind}: {f.detail}" for f in peer.findings)
                log.warning(
                    "zone %s: drift against peer %s: %s",
                    zone,
                    peer.peer,
                    detail,
                    extra={"zone": zone, "peer": peer.peer, "reason": "drift"},
                )
            else:
                log.info("zone %s: peer %s agrees again", zone, peer.peer, extra={"zone": zone})
        if before.delegation != after.delegation and after.delegation:
            log.warning(
                "zone %s: delegation: %s",
                zone,
                "; ".join(f"{f.kind}: {f.detail}" for f in after.delegation),
                extra={"zone": zone, "reason": "delegation"},
            )

    def status(self, origin: bytes) -> dict[str, Any]:
        """`drift` and `delegation` for `authd zone status --json` (empty: not watched)."""
        zone, watch = self.zones.get(origin), self.watches.get(origin)
        if zone is None or watch is None:
            return {}
        out: dict[str, Any] = {"drift": watches.drift_status(watch, zone.drift_interval)}
        if zone.parent:
            out["delegation"] = watches.delegation_status(watch)
        return out

    def facts(self) -> list[tuple[str, watches.Watch]]:
        return [(self.zones[o].name, w) for o, w in self.watches.items() if o in self.zones]

    async def stop(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
