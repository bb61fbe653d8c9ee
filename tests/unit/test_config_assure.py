"""The assurance keys of the config (issue 13): server.ns-names and server.resolver,
[[operator]] labels, and per zone/template peers, drift-ignore-types, parent, ds-check."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from authd.config import Config, ConfigError, Endpoint, Operator, ZoneConfig, load_config

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
    assert config.server.ns_names == () and config.server.resolver is None
    assert config.operators == ()
    [zone] = config.zones
    assert zone.peers is None  # the zone's other apex NS, found at report time
    assert zone.drift_ignore_types == frozenset() and zone.parent == ()
    assert zone.ds_check == "off"


def test_every_key_parsed(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[server]
ns-names = ["NS.Extra.Example.", "ns2.extra.example"]
resolver = "127.0.0.53"

[[operator]]
name = "Provider"
ns = ["provider.example"]
prefixes = ["192.0.2.0/24"]

[[template]]
id = "default"
peers = ["192.0.2.53", "198.51.100.53@5353"]
drift-ignore-types = ["CAA", "TYPE65534"]
parent = ["203.0.113.1"]
ds-check = "parent"
"""
        + ZONE
        + 'ds-check = "off"\n',
    )
    assert config.server.ns_names == ("ns.extra.example", "ns2.extra.example")
    assert config.server.resolver == Endpoint("127.0.0.53", 53)
    assert config.operators == (
        Operator("Provider", ("provider.example",), (ipaddress.ip_network("192.0.2.0/24"),)),
    )
    [zone] = config.zones
    assert zone.peers == (Endpoint("192.0.2.53", 53), Endpoint("198.51.100.53", 5353))
    assert zone.drift_ignore_types == frozenset({257, 65534})
    assert zone.parent == (Endpoint("203.0.113.1", 53),)
    assert zone.ds_check == "off"  # the zone's own value wins over its template's


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
[server]
ns-names = ["bad..name"]
resolver = "not-an-address"

[[operator]]
ns = ["provider.example"]

[[operator]]
name = "Empty"
"""
        + ZONE
        + """peers = ["192.0.2.1", "192.0.2.1"]
drift-ignore-types = ["NOPE"]
parent = ["300.1.1.1"]
ds-check = "sometimes"
""",
    )
    assert any(e.startswith("server.ns-names[0]: ") for e in found), found
    assert any(e.startswith("server.resolver: ") for e in found), found
    assert "operator[0].name: missing: every [[operator]] needs a name" in found, found
    assert "operator[1].ns: an operator needs ns names or prefixes to match" in found, found
    assert "zone[0].peers[1]: 192.0.2.1@53 is listed twice" in found, found
    assert 'zone[0].drift-ignore-types[0]: "NOPE" is not a DNS record type' in found, found
    assert any(e.startswith("zone[0].parent[0]: ") for e in found), found
    assert any(e.startswith("zone[0].ds-check: ") and "sometimes" in e for e in found), found


def test_ds_check_needs_what_it_checks_against(tmp_path: Path) -> None:
    found = errors(tmp_path, ZONE + 'ds-check = "parent"\n')
    assert found == ['zone[0].ds-check: ds-check = "parent" needs the servers in parent']
    found = errors(tmp_path, ZONE + 'ds-check = "trust-anchor"\n')
    assert found == ['zone[0].ds-check: ds-check = "trust-anchor" needs a trust-anchor file']


def test_drift_interval_and_sample(tmp_path: Path) -> None:
    def zone(extra: str) -> ZoneConfig:
        path = tmp_path / "d.toml"
        path.write_text(
            '[[remote]]\nid = "p"\naddresses = ["192.0.2.1"]\n'
            f'[[zone]]\nname = "example.com"\nprimaries = ["p"]\n{extra}'
        )
        [z] = load_config(path).zones
        return z

    default = zone("")
    assert default.drift_interval == 60.0 and default.drift_sample is True
    set_ = zone('drift-interval = "5m"\ndrift-sample = false\n')
    assert set_.drift_interval == 300.0 and set_.drift_sample is False
    assert zone("drift-interval = 0\n").drift_interval == 0.0  # off
    for bad, why in (
        ('drift-interval = "500ms"', "must be 0 (off) or at least 1 s"),
        ('drift-interval = "2d"', "out of range"),
        ('drift-sample = "yes"', "expected true or false"),
    ):
        with pytest.raises(ConfigError) as info:
            zone(bad + "\n")
        assert why in str(info.value), str(info.value)
