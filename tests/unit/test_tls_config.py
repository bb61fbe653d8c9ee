"""`tls` on a [[remote]] (XoT): both ways to authenticate, the default port 853, and every
mistake reported with the file, the key path and why."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from authd.config import ConfigError, RemoteTls, load_config
from tests.support.config import write_config

PIN = base64.b64encode(hashlib.sha256(b"spki").digest()).decode()
OTHER_PIN = base64.b64encode(hashlib.sha256(b"next spki").digest()).decode()


def config_with(tmp_path: Path, tls: str, addresses: str = '["192.0.2.53"]') -> Path:
    (tmp_path / "tls").mkdir(exist_ok=True)
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / "tls" / name).write_text("-----BEGIN CERTIFICATE-----\n")
    return write_config(
        tmp_path,
        f"""
[tsig]
key-files = ["xfr.key"]

[[remote]]
id = "provider"
addresses = {addresses}
key = "xfr-key"
tls = {tls}

[[zone]]
name = "example.com"
primaries = ["provider"]
""",
    )


def remote_tls(tmp_path: Path, tls: str, addresses: str = '["192.0.2.53"]') -> RemoteTls | None:
    config = load_config(config_with(tmp_path, tls, addresses))
    return config.remotes[0].tls


def errors(tmp_path: Path, tls: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(config_with(tmp_path, tls))
    for issue in info.value.errors:
        assert issue.file.endswith("authd.toml")
    return [(issue.key, issue.reason) for issue in info.value.errors]


def test_ca_file_and_name_relative_to_the_config(tmp_path: Path) -> None:
    tls = remote_tls(tmp_path, '{ ca-file = "tls/ca.pem", name = "xfr.example.net" }')
    assert tls == RemoteTls(ca_file=tmp_path / "tls" / "ca.pem", name="xfr.example.net")


def test_pin_and_client_certificate(tmp_path: Path) -> None:
    tls = remote_tls(
        tmp_path,
        f'{{ cert-key = "{PIN}", cert-file = "tls/client.pem", key-file = "tls/client.key" }}',
    )
    assert tls is not None
    assert tls.pins == (hashlib.sha256(b"spki").digest(),)
    assert tls.ca_file is None and tls.name is None
    assert tls.cert_file == tmp_path / "tls" / "client.pem"
    assert tls.key_file == tmp_path / "tls" / "client.key"


def test_a_list_of_pins_for_rollover(tmp_path: Path) -> None:
    tls = remote_tls(tmp_path, f'{{ cert-key = ["{PIN}", "{OTHER_PIN}"] }}')
    assert tls is not None and len(tls.pins) == 2


def test_default_port_is_853_with_tls_and_53_without(tmp_path: Path) -> None:
    config = load_config(
        config_with(tmp_path, f'{{ cert-key = "{PIN}" }}', '["192.0.2.53", "192.0.2.54@8853"]')
    )
    assert [a.port for a in config.remotes[0].addresses] == [853, 8853]
    assert config.zones[0].primaries[0].tls is not None
    plain = write_config(
        _dir(tmp_path / "plain"),
        '[[remote]]\nid = "p"\naddresses = ["192.0.2.53"]\n'
        '[[zone]]\nname = "example.com"\nprimaries = ["p"]\n',
    )
    remote = load_config(plain).remotes[0]
    assert remote.addresses[0].port == 53 and remote.tls is None


@pytest.mark.parametrize(
    ("tls", "key", "reason"),
    [
        ('"on"', "remote[0].tls", "expected a table"),
        ("{ }", "remote[0].tls", "no way to authenticate the remote"),
        ('{ name = "x.example" }', "remote[0].tls.ca-file", "missing: the CA"),
        ('{ ca-file = "tls/ca.pem" }', "remote[0].tls.name", "missing: the name"),
        (
            f'{{ cert-key = "{PIN}", ca-file = "tls/ca.pem", name = "x" }}',
            "remote[0].tls.cert-key",
            "give either cert-key",
        ),
        ('{ cert-key = "not base64!" }', "remote[0].tls.cert-key", "is not base64"),
        ('{ cert-key = "AAAA" }', "remote[0].tls.cert-key", "(32 octets), got 3 octets"),
        ("{ cert-key = [] }", "remote[0].tls.cert-key", "at least one pin"),
        (f'{{ cert-key = ["{PIN}", 7] }}', "remote[0].tls.cert-key[1]", "expected a base64"),
        (
            '{ ca-file = "tls/missing.pem", name = "x" }',
            "remote[0].tls.ca-file",
            "missing.pem does not exist",
        ),
        (
            f'{{ cert-key = "{PIN}", key-file = "tls/client.key" }}',
            "remote[0].tls.key-file",
            "needs cert-file",
        ),
        (f'{{ cert-key = "{PIN}", verify = false }}', "remote[0].tls.verify", "unknown key"),
        ('{ ca-file = "tls/ca.pem", name = "" }', "remote[0].tls.name", "must not be empty"),
    ],
)
def test_errors_name_the_key_and_why(tmp_path: Path, tls: str, key: str, reason: str) -> None:
    found = errors(tmp_path, tls)
    assert any(k == key and reason in r for k, r in found), found


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
