"""Catalog members as zones: what the catalog consumer (authd/xfr/consumer.py) decides, done
to the application's zones (the MemberHost port).

A removed member stops being served at once (the table and every worker drop it); what
waits (its operations ending, its stored data moved aside or purged) runs afterwards, one
chain per zone, so a member removed and listed again at once is started after the removal.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import dns.name

from authd.config import ZoneConfig, member_zone
from authd.xfr.catalogs import Membership
from authd.xfr.consumer import REMOVED_DIR, purge_removed, removed_dir_name
from authd.xfr.secondary import startup_spread
from authd.zone import names
from authd.zone.store import StoreError

if TYPE_CHECKING:
    from authd.app import App, ZoneRuntime

log = logging.getLogger("authd")

CLEANUP_INTERVAL = 3600.0  # seconds between looks for removed members' data past its keep


class CatalogMembers:
    def __init__(self, app: App) -> None:
        self.app = app
        self._ops: dict[bytes, asyncio.Task[None]] = {}  # one chain per member zone
        self._cleanup: asyncio.Task[None] | None = None

    def explicit_zones(self) -> set[bytes]:
        return {zone.origin for zone in self.app.config.zones}

    def member_config(self, membership: Membership) -> ZoneConfig | str:
        catalog = next((z for z in self.app.config.zones if z.origin == membership.catalog), None)
        if catalog is None:
            return f"catalog {names.display(membership.catalog)} is not configured"
        name = dns.name.from_text(names.display(membership.zone))
        return member_zone(self.app.config, catalog, name, membership.group)

    def add_member(self, config: ZoneConfig, batch: int = 1) -> None:
        if config.origin in self._ops:  # removed or reset a moment ago: after that
            self._member_op(config.origin, self._start_member_async(config))
        else:
            self._start_member(config, batch)

    def _start_member(self, config: ZoneConfig, batch: int = 1) -> None:
        if config.origin in self.app.zones:
            return
        runtime = self.app.add_zone(config)
        if self.app.secondaries is not None:  # first checks of a batch spread, as for a reload
            self.app.start_secondary(runtime, startup_spread(batch))
        group = f", group {config.group}" if config.group else ""
        log.info("zone %s: added by catalog %s%s", config.name, config.member_of, group)

    async def _start_member_async(self, config: ZoneConfig) -> None:
        self._start_member(config)

    def remove_member(self, zone: bytes, keep: float, catalog: str) -> None:
        why = f"removed from catalog {catalog}"
        delete_after = self.app.clock.now() + keep
        if zone in self.app.zones:
            removal = self.app.remove_zone(zone, why)
            self._member_op(zone, self._set_aside(zone, removal, delete_after))
        elif zone in self._ops:  # its start still waits behind an earlier change: after it
            self._member_op(zone, self._remove_later(zone, why, delete_after))

    async def _remove_later(self, zone: bytes, why: str, delete_after: float) -> None:
        removal = self.app.remove_zone(zone, why) if zone in self.app.zones else None
        await self._set_aside(zone, removal, delete_after)

    async def _set_aside(
        self, zone: bytes, removal: asyncio.Task[None] | None, delete_after: float
    ) -> None:
        if removal is not None:
            await removal
        if zone in self.app.zones:
            return  # listed again meanwhile: it serves from its stored data
        into = self.app.config.server.state_dir / REMOVED_DIR
        name = removed_dir_name(zone, delete_after)
        try:
            moved = await asyncio.to_thread(self.app.store.set_aside, zone, into, name)
        except StoreError as exc:
            log.error("zone %s: stored data not set aside: %s", names.display(zone), exc)
            return
        if moved is not None:
            log.info("zone %s: stored data kept in %s until deleted", names.display(zone), moved)

    def reset_member(self, config: ZoneConfig) -> None:
        removal = None
        if config.origin in self.app.zones:
            removal = self.app.remove_zone(config.origin, _reset_why(config))
        self._member_op(config.origin, self._reset(config, removal))

    async def _reset(self, config: ZoneConfig, removal: asyncio.Task[None] | None) -> None:
        if removal is None and config.origin in self.app.zones:
            # Started by a change queued before this one: stop it before its data goes.
            removal = self.app.remove_zone(config.origin, _reset_why(config))
        if removal is not None:
            await removal
        into = self.app.config.server.state_dir / REMOVED_DIR
        name = removed_dir_name(config.origin, self.app.clock.now())
        try:  # state purged: the whole zone directory (copy, journal, timers, history)
            moved = await asyncio.to_thread(self.app.store.set_aside, config.origin, into, name)
            if moved is not None:
                await asyncio.to_thread(shutil.rmtree, moved, True)
        except StoreError as exc:
            log.error("zone %s: stored data not purged: %s", config.name, exc)
        self._start_member(config)  # transferred afresh

    def reconfigure_member(self, config: ZoneConfig) -> None:
        runtime = self.app.zones.get(config.origin)
        if runtime is None:
            if config.origin in self._ops:  # its start waits behind an earlier change
                self._member_op(config.origin, self._reconfigure_later(config))
            return
        if runtime.config == config:
            return
        if runtime.secondary is None or self.app.secondaries is None:
            runtime.config = config
            return
        self._member_op(config.origin, self._restart_member(runtime, config))

    async def _reconfigure_later(self, config: ZoneConfig) -> None:
        if config.origin in self.app.zones:
            self.reconfigure_member(config)

    async def _restart_member(self, runtime: ZoneRuntime, config: ZoneConfig) -> None:
        assert self.app.secondaries is not None
        if self.app.zones.get(config.origin) is not runtime:
            return
        await self.app.secondaries.remove(config.origin)
        runtime.config = config
        self.app.start_secondary(runtime)
        log.info("zone %s: catalog group %s: template settings applied", config.name, config.group)

    def _member_op(self, zone: bytes, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` after the zone's earlier member operations (never two at once)."""
        previous = self._ops.get(zone)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await work
            except Exception:
                log.exception("zone %s: catalog member change failed", names.display(zone))

        task = asyncio.get_running_loop().create_task(run())
        self._ops[zone] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._ops.get(zone) is finished:
                del self._ops[zone]

        task.add_done_callback(done)

    def start_cleanup(self) -> None:
        self._cleanup = asyncio.get_running_loop().create_task(self._purge_removed())

    def stop_cleanup(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cancel()

    async def _purge_removed(self) -> None:
        """Delete removed members' data once their keep period is over (hourly)."""
        while True:
            state_dir = self.app.config.server.state_dir
            await asyncio.to_thread(purge_removed, state_dir, self.app.clock.now())
            await asyncio.sleep(CLEANUP_INTERVAL)


def _reset_why(config: ZoneConfig) -> str:
    return f"reset by catalog {config.member_of} (new unique-id)"
