"""Config files for tests: a directory with a zone file and a TSIG key file, and the
errors load_config reports for a given text."""

from __future__ import annotations

from pathlib import Path

import pytest

from authd.config import ConfigError, ConfigIssue, load_config
from authd.keys import generate_tsig_key


def write_config(tmp_path: Path, text: str) -> Path:
    """A config directory with one zone file and one private key file, and the config text."""
    (tmp_path / "zones").mkdir(exist_ok=True)
    (tmp_path / "zones" / "local.zone").write_text("; not parsed by the config\n")
    key_file = tmp_path / "xfr.key"
    if not key_file.exists():
        key_file.write_text(generate_tsig_key("xfr-key") + generate_tsig_key("other-key"))
        key_file.chmod(0o600)
    path = tmp_path / "authd.toml"
    path.write_text(text)
    return path


def errors_of(tmp_path: Path, text: str) -> list[ConfigIssue]:
    """The errors of a config that must not load; each names the file first."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for issue in info.value.errors:
        assert issue.file == str(path)
        assert str(issue).startswith(f"{path}: ")
    return info.value.errors


PREAMBLE = """
[tsig]
key-files = ["xfr.key"]

[[remote]]
id = "provider"
addresses = ["192.0.2.53", "2001:db8::53@5353"]
key = "xfr-key"

[[remote]]
id = "backup"
addresses = ["198.51.100.1"]
"""


def only_error(tmp_path: Path, text: str) -> ConfigIssue:
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1, errors
    return errors[0]
