"""`authd zone status` lines for catalog zones and their members (issue 15)."""

from __future__ import annotations

from authd.cli import format_zone_status


def test_member_and_catalog_lines() -> None:
    member = {"zone": "one.test", "state": "ok", "serial": 3, "kind": "secondary"}
    text = format_zone_status({**member, "catalog": "catz.test", "group": "strict"}, 0.0)
    assert "catz.test (group strict)" in text
    assert "catz.test" in format_zone_status({**member, "catalog": "catz.test"}, 0.0)
    assert "group" not in format_zone_status({**member, "catalog": "catz.test"}, 0.0)
    assert "catalog" not in format_zone_status(member, 0.0)
    catalog = {
        **member,
        "zone": "catz.test",
        "catalog_members": 12,
        "catalog_broken": None,
        "catalog_held": "serial 5: the update removes 11 of 12 members",
    }
    text = format_zone_status(catalog, 0.0)
    assert "12" in text and "removes 11 of 12 members" in text and "broken" not in text
