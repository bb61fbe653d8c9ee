"""Tests of authd/members.py: catalog member changes applied to the application's zones in
order, one chain per zone, whatever the timing of the removals they wait for."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import dns.name

from authd.clock import FakeClock
from authd.config import ZoneConfig, member_zone
from authd.members import CatalogMembers
from tests.unit.xfr.test_consumer import config as catalog_config

MEMBER = "m.example"


class FakeApp:
    """The parts of App that CatalogMembers uses; a removal ends a few loop turns later
    (as Secondaries.remove waits for the zone's operations)."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = catalog_config(tmp_path)
        self.zones: dict[bytes, SimpleNamespace] = {}
        self.secondaries = None
        self.clock = FakeClock(now=1_700_000_000.0)
        self.store = SimpleNamespace(set_aside=lambda zone, into, name: None)
        self.log: list[str] = []

    def add_zone(self, config: ZoneConfig) -> SimpleNamespace:
        runtime = SimpleNamespace(config=config, secondary=None)
        self.zones[config.origin] = runtime
        self.log.append("add")
        return runtime

    def remove_zone(self, origin: bytes, why: str = "") -> asyncio.Task[None]:
        del self.zones[origin]
        self.log.append("remove")

        async def operations_end() -> None:
            for _ in range(3):
                await asyncio.sleep(0)

        return asyncio.get_running_loop().create_task(operations_end())


def member(app: FakeApp) -> ZoneConfig:
    config = member_zone(app.config, app.config.zones[0], dns.name.from_text(MEMBER), None)
    assert isinstance(config, ZoneConfig)
    return config


async def settle(members: CatalogMembers) -> None:
    while members._ops:
        await asyncio.wait(list(members._ops.values()))


async def test_removed_listed_and_removed_again_before_the_first_removal_ends(
    tmp_path: Path,
) -> None:
    """Three catalog versions in a row: the member's start waits behind the first removal,
    so the second removal must wait too, not be dropped (the member would be served
    while no catalog lists it)."""
    app = FakeApp(tmp_path)
    members = CatalogMembers(app)  # type: ignore[arg-type]
    config = member(app)
    members.add_member(config)
    assert config.origin in app.zones
    members.remove_member(config.origin, 0.0, "catz.example")
    members.add_member(config)  # listed again: started after the removal
    members.remove_member(config.origin, 0.0, "catz.example")  # and dropped again
    await settle(members)
    assert config.origin not in app.zones, app.log
    # Listed once more afterwards: served again.
    members.add_member(config)
    await settle(members)
    assert config.origin in app.zones


async def test_reset_while_a_start_waits_behind_a_removal(tmp_path: Path) -> None:
    app = FakeApp(tmp_path)
    members = CatalogMembers(app)  # type: ignore[arg-type]
    config = member(app)
    members.add_member(config)
    members.remove_member(config.origin, 0.0, "catz.example")
    members.add_member(config)
    members.reset_member(config)  # a new unique-id: purged and started afresh, once
    await settle(members)
    assert config.origin in app.zones
    assert app.log == ["add", "remove", "add", "remove", "add"], app.log


async def test_regrouped_while_a_start_waits_behind_a_removal(tmp_path: Path) -> None:
    app = FakeApp(tmp_path)
    members = CatalogMembers(app)  # type: ignore[arg-type]
    config = member(app)
    members.add_member(config)
    members.remove_member(config.origin, 0.0, "catz.example")
    members.add_member(config)
    regrouped = member_zone(app.config, app.config.zones[0], dns.name.from_text(MEMBER), "signed")
    assert isinstance(regrouped, ZoneConfig) and regrouped != config
    members.reconfigure_member(regrouped)  # the group changed: its settings follow
    await settle(members)
    assert app.zones[config.origin].config == regrouped
