"""run.report gathering without a network: only what the config names is asked, and with
peers = [], no resolver and no parent nothing is, and the report says what it could not
check. authd's own NS names come from its listening addresses when ns-names is unset."""

from __future__ import annotations

from pathlib import Path

from authd.assure import run
from authd.config import load_config
from authd.metrics import ZoneFacts
from authd.zone.loader import load_zone_file

NOW = 1_900_000_000.0
ZONE_TEXT = """$ORIGIN example.com.
$TTL 300
@ SOA ns1 hostmaster 7 3600 600 1209600 60
@ NS ns1
@ NS ns1.provider.example.
@ NS ns.extra.example.
ns1 A 127.0.0.1
www A 192.0.2.80
"""


def view(tmp_path: Path, extra: str = "", zone_text: str = ZONE_TEXT) -> run.ZoneView:
    (tmp_path / "example.com.zone").write_text(zone_text)
    (tmp_path / "authd.toml").write_text(
        '[server]\nlisten = ["127.0.0.1@5399"]\n'
        + extra
        + '\n[[zone]]\nname = "example.com"\nfile = "example.com.zone"\npeers = []\n'
    )
    config = load_config(tmp_path / "authd.toml")
    [zone] = config.zones
    snapshot = load_zone_file(tmp_path / "example.com.zone", "example.com")
    facts = ZoneFacts("example.com", "ok", 7, None, NOW - 60, None, None)
    return run.ZoneView(config, zone, snapshot, facts, NOW, {"example.com": snapshot})


async def test_nothing_configured_nothing_asked(tmp_path: Path) -> None:
    report = await run.report(view(tmp_path))
    assert report["queries"] == 0
    assert report["own_ns_from"] == "listen addresses"
    own = [s["name"] for s in report["ns"] if s["own"]]
    assert own == ["ns1.example.com"]  # its glue is the address authd listens on
    assert report["ns_zones"] == [
        {
            "name": "ns1.example.com",
            "zone": "example.com",
            "ns": ["ns.extra.example", "ns1.example.com", "ns1.provider.example"],
            "how": "in the zone itself",
        }
    ]
    kinds = {f["kind"]: f["verdict"] for f in report["findings"]}
    assert kinds == {"parent-unchecked": "unknown"}
    assert report["independent"] == "unknown"
    assert report["peers"] == []


async def test_configured_own_name_outside_the_served_zones(tmp_path: Path) -> None:
    report = await run.report(view(tmp_path, 'ns-names = ["ns.extra.example"]\n'))
    assert report["queries"] == 0 and report["own_ns_from"] == "server.ns-names"
    [entry] = report["ns_zones"]
    assert entry["zone"] is None
    assert "no server.resolver configured" in entry["how"]
    kinds = {f["kind"] for f in report["findings"]}
    assert kinds == {"ns-zone-unchecked", "parent-unchecked"}
    assert report["operators"] == {
        "example.com": ["ns1.example.com"],
        "extra.example": ["ns.extra.example"],
        "provider.example": ["ns1.provider.example"],
    }


def test_own_addresses_replace_wildcards(tmp_path: Path) -> None:
    (tmp_path / "authd.toml").write_text(
        '[server]\nlisten = ["0.0.0.0@53", "::@53", "192.0.2.7@5300", "0.0.0.0@5300"]\n'
    )
    config = load_config(tmp_path / "authd.toml")
    assert [str(e) for e in run.own_addresses(config)] == [
        "127.0.0.1@53",
        "::1@53",
        "192.0.2.7@5300",
        "127.0.0.1@5300",
    ]


async def test_own_name_below_a_delegation_is_not_in_the_served_zone(tmp_path: Path) -> None:
    delegated = ZONE_TEXT + "sub NS ns.sub\nns.sub A 192.0.2.9\n"
    report = await run.report(view(tmp_path, 'ns-names = ["ns.sub.example.com"]\n', delegated))
    [entry] = report["ns_zones"]
    assert entry["zone"] is None and "no server.resolver" in entry["how"], entry
