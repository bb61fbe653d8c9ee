"""Tests of xfr/consumer.py: published catalog versions -> member zones added, removed, held."""

from __future__ import annotations

import os
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from authd.config import Config, ZoneConfig, load_config, member_zone
from authd.xfr.catalogs import Membership
from authd.xfr.consumer import CatalogConsumer, purge_removed, removed_dir_name
from authd.zone import names
from authd.zone.snapshot import Snapshot, SnapshotBuilder
from tests.support.config import write_config

CATZ = "catz.example."
ORIGIN = names.key_from_text(CATZ)


def version(
    serial: int, members: dict[str, str], *, groups: dict[str, str] | None = None, text: str = '"2"'
) -> Snapshot:
    builder = SnapshotBuilder(ORIGIN)
    rows = [
        (CATZ, "SOA", f"invalid. invalid. {serial} 3600 600 2147483646 0"),
        (CATZ, "NS", "invalid."),
        (f"version.{CATZ}", "TXT", text),
    ]
    rows += [(f"{uid}.zones.{CATZ}", "PTR", f"{zone}.") for zone, uid in members.items()]
    for zone, group in (groups or {}).items():
        rows.append((f"group.{members[zone]}.zones.{CATZ}", "TXT", f'"{group}"'))
    for owner, rtype, rdata in rows:
        rdtype = dns.rdatatype.from_text(rtype)
        wire = dns.rdata.from_text(dns.rdataclass.IN, rdtype, rdata).to_wire()
        assert wire is not None
        builder.add(names.key_from_text(owner), rdtype, 0, wire)
    return builder.build()


def config(tmp_path: Path, share: float = 0.5) -> Config:
    return load_config(
        write_config(
            tmp_path,
            f"""
[[remote]]
id = "primary"
addresses = ["127.0.0.1@5399"]
[[template]]
id = "signed"
on-expire = "servfail"
[[zone]]
name = "catz.example"
primaries = ["primary"]
catalog = true
catalog-max-removed-share = {share}
""",
        )
    )


class Host:
    """Records what the consumer asks for, as the App would do it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.served: dict[str, ZoneConfig] = {}
        self.calls: list[tuple[str, str]] = []
        self.batches: list[int] = []
        self.explicit: set[bytes] = set()

    def explicit_zones(self) -> set[bytes]:
        return self.explicit

    def member_config(self, membership: Membership) -> ZoneConfig | str:
        if membership.group == "bad":
            return "no such settings"
        name = dns.name.from_text(names.display(membership.zone))
        return member_zone(self.config, self.config.zones[0], name, membership.group)

    def add_member(self, config: ZoneConfig, batch: int) -> None:
        self.calls.append(("add", config.name))
        self.batches.append(batch)
        self.served[config.name] = config

    def remove_member(self, zone: bytes, keep: float, catalog: str) -> None:
        self.calls.append(("remove", names.display(zone)))
        del self.served[names.display(zone)]

    def reset_member(self, config: ZoneConfig) -> None:
        self.calls.append(("reset", config.name))
        self.served[config.name] = config

    def reconfigure_member(self, config: ZoneConfig) -> None:
        if self.served.get(config.name) != config:
            self.calls.append(("regroup", config.name))
            self.served[config.name] = config


def consumer(tmp_path: Path, host: Host) -> CatalogConsumer:
    c = CatalogConsumer(host, tmp_path)
    c.configure(host.config.zones)
    return c


def many(n: int, start: int = 0) -> dict[str, str]:
    return {f"z{i}.example": f"u{i}" for i in range(start, n)}


def test_versions_add_remove_reset_and_regroup(tmp_path: Path) -> None:
    host = Host(config(tmp_path))
    c = consumer(tmp_path, host)
    c.published(ORIGIN, version(1, {"one.example": "a", "two.example": "b"}))
    assert sorted(host.served) == ["one.example", "two.example"]
    assert host.batches == [2, 2]  # added together: their first SOA checks are spread
    c.published(
        ORIGIN,
        version(2, {"one.example": "a2", "three.example": "c"}, groups={"three.example": "signed"}),
    )
    assert sorted(host.served) == ["one.example", "three.example"]
    assert ("remove", "two.example") in host.calls and ("reset", "one.example") in host.calls
    three = host.served["three.example"]
    assert three.group == "signed" and three.member_of == "catz.example"
    assert three.on_expire == "servfail"  # the template the group names
    assert three.primaries == host.config.zones[0].primaries
    assert host.served["one.example"].on_expire == "serve-stale"  # no group, no default
    c.published(ORIGIN, version(3, {"one.example": "a2", "three.example": "c"}))
    assert host.calls[-1] == ("regroup", "three.example")
    assert c.status(ORIGIN)["catalog_members"] == 2
    assert c.changes[("catz.example", "added")] == 3  # one, two, three


def test_broken_version_changes_nothing_and_says_why(tmp_path: Path) -> None:
    host = Host(config(tmp_path))
    c = consumer(tmp_path, host)
    c.published(ORIGIN, version(1, {"one.example": "a"}))
    c.published(ORIGIN, version(2, {}, text='"1"'))  # bad version: would remove every member
    assert list(host.served) == ["one.example"]
    status = c.status(ORIGIN)
    assert status["catalog_broken"] is not None and "version" in status["catalog_broken"]
    assert status["catalog_serial"] == 1
    assert c.facts()[0].broken and c.facts()[0].changes["broken"] == 1
    c.published(ORIGIN, version(3, {"one.example": "a"}))
    assert c.status(ORIGIN)["catalog_broken"] is None and not c.facts()[0].broken


def test_mass_removal_is_held_until_approved(tmp_path: Path) -> None:
    host = Host(config(tmp_path))
    c = consumer(tmp_path, host)
    c.published(ORIGIN, version(1, many(20)))
    c.published(ORIGIN, version(2, many(20, 15)))  # 15 of 20 removed
    assert len(host.served) == 20  # nothing of it applied
    status = c.status(ORIGIN)
    assert status["catalog_held"].startswith("serial 2: the update removes 15 of 20 members")
    assert c.facts()[0].held
    # a newer version within the limit replaces the held one
    c.published(ORIGIN, version(3, many(20, 5)))
    assert len(host.served) == 15 and c.status(ORIGIN)["catalog_held"] is None
    c.published(ORIGIN, version(4, {}))
    assert len(host.served) == 15 and c.facts()[0].held
    assert c.holds(ORIGIN) and c.holds(ORIGIN, "4") and not c.holds(ORIGIN, 3)
    assert "serial 4 approved: 0 added, 15 removed" in c.approve(ORIGIN)
    assert host.served == {} and not c.facts()[0].held
    assert "no update is held" in c.approve(ORIGIN) and not c.holds(ORIGIN)


def test_members_persist_across_restart_and_a_held_update_stays_held(tmp_path: Path) -> None:
    host = Host(config(tmp_path))
    c = consumer(tmp_path, host)
    c.published(ORIGIN, version(1, many(12), groups={"z3.example": "signed"}))
    c.published(ORIGIN, version(2, many(12, 11)))  # held
    restarted = Host(config(tmp_path))
    c2 = consumer(tmp_path, restarted)
    c2.reconcile_all()  # start-up: the members applied last, before any catalog copy
    assert sorted(restarted.served) == sorted(many(12))
    assert restarted.served["z3.example"].group == "signed"
    c2.published(ORIGIN, version(2, many(12, 11)))  # the stored copy is the held version
    assert len(restarted.served) == 12 and c2.facts()[0].held


def test_configured_zone_wins(tmp_path: Path) -> None:
    host = Host(config(tmp_path))
    host.explicit = {names.key_from_text("one.example.")}
    c = consumer(tmp_path, host)
    c.published(ORIGIN, version(1, {"one.example": "a", "two.example": "b"}))
    assert list(host.served) == ["two.example"]


def test_member_without_usable_settings_is_not_served(tmp_path: Path) -> None:
    host = Host(config(tmp_path))
    c = consumer(tmp_path, host)
    c.published(
        ORIGIN, version(1, {"one.example": "a", "two.example": "b"}, groups={"two.example": "bad"})
    )
    assert list(host.served) == ["one.example"]
    assert c.status(ORIGIN)["catalog_members"] == 1  # the unusable one is not counted
    c.published(ORIGIN, version(2, {"one.example": "a", "two.example": "b"}))
    assert sorted(host.served) == ["one.example", "two.example"]  # tried again


def test_removed_data_is_deleted_after_its_keep_period(tmp_path: Path) -> None:
    folder = tmp_path / "catalog-removed"
    early = folder / removed_dir_name(names.key_from_text("a.example."), 1000.0)
    late = folder / removed_dir_name(names.key_from_text("b.example."), 5000.0)
    for path in (early, late):
        path.mkdir(parents=True)
        (path / "full").write_bytes(b"x")
    assert purge_removed(tmp_path, 999.0) == []
    assert purge_removed(tmp_path, 1000.0) == [early]
    assert not early.exists() and late.exists()
    assert purge_removed(tmp_path, 10_000.0) == [late]
    assert os.listdir(folder) == []


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_share_bounds(tmp_path: Path, share: float) -> None:
    host = Host(config(tmp_path, share))
    c = consumer(tmp_path, host)
    c.published(ORIGIN, version(1, many(11)))
    c.published(ORIGIN, version(2, many(11, 10)))
    assert len(host.served) == (11 if share == 0.0 else 1)
