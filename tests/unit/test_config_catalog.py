"""Tests of the catalog keys of config.py (issue 15): catalog zones and their members' settings."""

from __future__ import annotations

from pathlib import Path

import dns.name

from authd.config import load_config, member_zone
from tests.support.config import errors_of, write_config

HEAD = """
[[remote]]
id = "primary"
addresses = ["127.0.0.1@5399"]
key = "xfr-key"
[tsig]
key-files = ["xfr.key"]
"""


def test_catalog_zone_defaults_and_keys(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            HEAD
            + """
[[zone]]
name = "catz.example"
primaries = ["primary"]
catalog = true
[[zone]]
name = "tuned.example"
primaries = ["primary"]
catalog = true
catalog-removed-keep = "1d"
catalog-max-removed-share = 0.2
[[zone]]
name = "plain.example"
primaries = ["primary"]
""",
        )
    )
    catz, tuned, plain = config.zones
    assert catz.catalog is not None and catz.catalog.removed_keep == 7 * 86400
    assert catz.catalog.max_removed_share == 0.5
    assert tuned.catalog is not None and tuned.catalog.removed_keep == 86400
    assert tuned.catalog.max_removed_share == 0.2
    assert plain.catalog is None


def test_catalog_keys_need_a_transferred_catalog_zone(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        HEAD
        + """
[[zone]]
name = "plain.example"
primaries = ["primary"]
catalog-removed-keep = "1d"
[[zone]]
name = "file.example"
file = "zones/local.zone"
catalog = true
[[zone]]
name = "bad.example"
primaries = ["primary"]
catalog = true
catalog-max-removed-share = 2
""",
    )
    text = "\n".join(str(e) for e in errors)
    assert "zone[0].catalog-removed-keep: only for a catalog zone (catalog = true)" in text
    assert "zone[1].catalog: a catalog zone is transferred from primaries" in text
    assert "zone[2].catalog-max-removed-share" in text


def test_member_takes_the_catalog_primaries_and_its_group_template(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            HEAD
            + """
[[remote]]
id = "elsewhere"
addresses = ["127.0.0.2@5399"]
[[template]]
id = "default"
history-versions = 3
[[template]]
id = "strict"
primaries = ["elsewhere"]
on-expire = "servfail"
[[zone]]
name = "catz.example"
primaries = ["primary"]
catalog = true
""",
        )
    )
    catz = config.zones[0]
    name = dns.name.from_text("member.example")
    strict = member_zone(config, catz, name, "strict")
    assert not isinstance(strict, str)
    assert strict.on_expire == "servfail" and strict.template == "strict"
    assert strict.primaries == catz.primaries  # the catalog's, with its TSIG key
    assert strict.primaries[0].key is not None
    assert strict.member_of == "catz.example" and strict.group == "strict"
    assert strict.name == "member.example" and strict.catalog is None
    for group in (None, "unknown"):  # no group, or one no template has: "default"
        plain = member_zone(config, catz, name, group)
        assert not isinstance(plain, str)
        assert plain.template == "default" and plain.history_versions == 3
        assert plain.on_expire == "serve-stale"
