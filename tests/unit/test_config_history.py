"""The history and export keys of the config (issue 14): history-versions per zone/template,
[export] dir and interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from authd.config import Config, ConfigError, load_config

ZONE = """
[[zone]]
name = "example.com"
file = "example.com.zone"
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "authd.toml"
    path.write_text(text)
    return load_config(path)


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return [f"{e.key}: {e.reason}" for e in info.value.errors]


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, ZONE)
    assert config.zones[0].history_versions == 20
    assert config.export.dir is None and config.export.interval == 3600


def test_history_versions_from_template_and_zone(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[[template]]
id = "default"
history-versions = 50

[[zone]]
name = "a.example"
file = "a.zone"

[[zone]]
name = "b.example"
file = "b.zone"
history-versions = 0
""",
    )
    assert [z.history_versions for z in config.zones] == [50, 0]


def test_export_keys(tmp_path: Path) -> None:
    config = load(tmp_path, ZONE + '[export]\ndir = "exports"\ninterval = "15m"\n')
    assert config.export.dir == tmp_path / "exports"
    assert config.export.interval == 900


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ZONE.replace('file = "', 'history-versions = -1\nfile = "'), "history-versions"),
        (ZONE.replace('file = "', 'history-versions = "20"\nfile = "'), "history-versions"),
        (ZONE + '[export]\ninterval = "1h"\n', "export.interval: needs [export] dir"),
        (ZONE + '[export]\ndir = "x"\ninterval = "0s"\n', "export.interval"),
        (ZONE + '[export]\ndir = ""\n', "export.dir: must not be empty"),
        (ZONE + '[export]\ndir = "x"\nkeep = 3\n', "export.keep"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, expected: str) -> None:
    found = errors(tmp_path, text)
    assert any(expected in line for line in found), found
