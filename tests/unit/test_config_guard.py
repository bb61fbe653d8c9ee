"""The change guard's config (issue 14): [template.guard] and a zone's guard table, merged
key by key; each limit can be turned off; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from authd.config import Config, ConfigError, load_config
from authd.zone.guard import GuardPolicy

BASE = """
[[remote]]
id = "p"
addresses = ["127.0.0.1@5301"]

[[template]]
id = "default"
primaries = ["p"]
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "authd.toml"
    path.write_text(text)
    return load_config(path)


def errors(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return "\n".join(str(e) for e in info.value.errors)


def test_defaults_catch_accidents_only(tmp_path: Path) -> None:
    config = load(tmp_path, BASE + '[[zone]]\nname = "a.example"\n')
    assert config.zones[0].guard == GuardPolicy()
    assert config.zones[0].guard.max_removed_share == 0.5 and config.zones[0].guard.enabled


def test_template_and_zone_keys_merge_and_turn_limits_off(tmp_path: Path) -> None:
    text = (
        BASE
        + """
[template.guard]
max-removed-share = 0.3
min-rrsets = 100
hold-timeout = "1h"
ns-replaced = false

[[zone]]
name = "a.example"

[[zone]]
name = "b.example"
guard = { max-removed-share = false, max-delegations-removed = false, hold-timeout = false }
"""
    )
    a, b = load(tmp_path, text).zones
    assert a.guard.max_removed_share == 0.3 and a.guard.min_rrsets == 100
    assert a.guard.hold_timeout == 3600 and a.guard.ns_replaced is False
    assert a.guard.max_delegations_removed == 25
    # b keeps the template's keys it does not set, and turns three limits off
    assert b.guard.max_removed_share is None and b.guard.max_delegations_removed is None
    assert b.guard.hold_timeout is None and b.guard.min_rrsets == 100
    assert b.guard.ns_replaced is False


def test_the_guard_can_be_turned_off(tmp_path: Path) -> None:
    text = BASE + '[[zone]]\nname = "a.example"\nguard = { enabled = false }\n'
    assert load(tmp_path, text).zones[0].guard.enabled is False


@pytest.mark.parametrize(
    ("guard", "expected"),
    [
        ("max-removed-sahre = 0.5", "zone[0].guard.max-removed-sahre: unknown key"),
        ("max-removed-share = 1.5", "zone[0].guard.max-removed-share: 1.5 is out of range"),
        ("max-removed-share = true", "zone[0].guard.max-removed-share: expected a number"),
        ('min-rrsets = "20"', "zone[0].guard.min-rrsets: expected an integer"),
        ('hold-timeout = "soon"', "zone[0].guard.hold-timeout"),
        ('enabled = "yes"', "zone[0].guard.enabled: expected true or false"),
    ],
)
def test_bad_guard_keys_are_errors(tmp_path: Path, guard: str, expected: str) -> None:
    text = BASE + f'[[zone]]\nname = "a.example"\nguard = {{ {guard} }}\n'
    assert expected in errors(tmp_path, text)


def test_guard_must_be_a_table(tmp_path: Path) -> None:
    text = BASE + '[[zone]]\nname = "a.example"\nguard = true\n'
    assert "guard: expected a table" in errors(tmp_path, text)
