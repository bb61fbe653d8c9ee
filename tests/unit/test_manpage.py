"""authd(8) is generated from the click commands and must be current; shell completion works
as documented there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authd import manpage

REPO = Path(__file__).resolve().parents[2]
MAN_PAGE = REPO / "man" / "authd.8"
AUTHD = Path(sys.executable).parent / "authd"


def test_man_page_is_current() -> None:
    assert MAN_PAGE.read_text() == manpage.render(), (
        "man/authd.8 is stale: run `python -m authd.manpage > man/authd.8`"
    )


def test_man_page_lists_every_command_and_option() -> None:
    text = manpage.render()
    for command in (
        "authd serve",
        "authd check\\-config",
        "authd keygen tsig",
        "authd zone status",
        "authd zone refresh",
        "authd zone retransfer",
        "authd zone verify",
        "authd zone dump",
        "authd reload",
        "authd bench",
        "authd version",
    ):
        assert f".SS {command} " in text, command
    assert "\\-\\-wait" in text and "\\-\\-no\\-zone\\-files" in text
    assert ".SH EXIT STATUS" in text and "_AUTHD_COMPLETE=bash_source authd" in text


def test_man_page_renders_without_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        print("SKIP: groff not found (Debian package groff-base)")
        pytest.skip("groff not found (Debian package groff-base)")
    result = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-z", str(MAN_PAGE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_bash_completion_as_documented() -> None:
    environment = {**os.environ, "_AUTHD_COMPLETE": "bash_source"}
    script = subprocess.run(
        [str(AUTHD)], env=environment, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "complete -o nosort -F _authd_completion authd" in script
    environment = {
        **os.environ,
        "_AUTHD_COMPLETE": "bash_complete",
        "COMP_WORDS": "authd zone re",
        "COMP_CWORD": "2",
    }
    words = subprocess.run(
        [str(AUTHD)], env=environment, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert words == ["plain,refresh", "plain,retransfer", "plain,report", "plain,reject"]
