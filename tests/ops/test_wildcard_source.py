"""Issue 12, defect 1: on a wildcard listen (0.0.0.0, ::) every answer leaves from the
address the query was sent to, over UDP and TCP, IPv4 and IPv6, with one and two workers.

The server runs in a network namespace the test creates (`unshare -n`), where lo carries a
second IPv6 address (fd00::2) beside ::1, and 127.0.0.2 beside 127.0.0.1. That needs root
and `ip`; without them the test skips with the reason, and fails under
AUTHD_REQUIRE_INTEROP=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.conftest import EXAMPLE_ZONE, VENV_BIN
from tests.support.system import REQUIRE_INTEROP_ENV, interop_required, require_binary

HELPER = Path(__file__).with_name("wildcard_netns.py")


def need_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "needs root to create a network namespace (unshare -n)"
    if interop_required():
        pytest.fail(f"{reason}; {REQUIRE_INTEROP_ENV}=1 demands it", pytrace=False)
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.mark.parametrize("workers", [1, 2])
def test_wildcard_listen_answers_from_the_queried_address(tmp_path: Path, workers: int) -> None:
    need_root()
    unshare = require_binary("unshare")
    require_binary("ip")
    done = subprocess.run(
        [
            unshare,
            "-n",
            "--",
            sys.executable,
            str(HELPER),
            str(VENV_BIN / "authd"),
            str(EXAMPLE_ZONE),
            str(tmp_path / "netns"),
            str(workers),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    log = tmp_path / "netns" / "authd.log"
    detail = done.stderr + (log.read_text(errors="replace") if log.exists() else "")
    assert done.returncode == 0, detail
    results = json.loads(done.stdout.strip().splitlines()[-1])
    # Over UDP each answer from the address asked (None: it never arrived); over TCP the
    # kernel already answers from the accepted connection's local address.
    expected = {
        destination: {"udp": [destination] * len(seen["udp"]), "tcp": destination}
        for destination, seen in results.items()
    }
    assert set(results) == {"127.0.0.1", "127.0.0.2", "::1", "fd00::2"}
    assert results == expected, detail
