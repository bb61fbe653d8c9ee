"""`authd zone refresh|retransfer --wait` (issue 12, defect 6) against a real knotd primary:
exit 0 only once the zone serves the primary's serial; non-zero with the zone's last error
when the primary is down, within the timeout."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.bench.primaries import (
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_primary,
    write_zone,
)
from authd.bench.servers import HOST
from tests.support.system import require_binary

ZONE = "wait.test"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[KnotPrimary, AuthdSecondary]]:
    """knotd with ZONE at serial 1 (no NOTIFY: only our commands move authd), and authd."""
    bins = require_binary("knotd"), require_binary("knotc")
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1)
    knot = knot_primary(*bins, tmp_path / "knot", {ZONE: zone_file})
    # A long refresh timer and a short SOA timeout: only our requests make attempts.
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(ZONE, [knot.address])])
    try:
        authd.start()
        yield knot, authd
    finally:
        authd.stop()
        knot.stop()


def authd_cli(
    authd: AuthdSecondary, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authd.cli", *args, "-c", str(authd.workdir / "authd.toml")],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_refresh_and_retransfer_wait_until_the_primary_serial_is_served(
    pair: tuple[KnotPrimary, AuthdSecondary],
) -> None:
    knot, authd = pair
    done = authd_cli(authd, "zone", "refresh", ZONE, "--wait", "--timeout", "20", timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr + authd.log()
    assert authd.serial(ZONE) == 1
    assert done.stdout.splitlines()[-1] == f"zone {ZONE}: serves serial 1, the primary's"

    knot.set_record(ZONE, f"new.{ZONE}.", "A", "192.0.2.77")  # serial 2, no NOTIFY sent
    assert knot.serial(ZONE) == 2
    done = authd_cli(authd, "zone", "refresh", ZONE, "--wait", "--timeout", "20", timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr + authd.log()
    assert authd.serial(ZONE) == 2  # served when the command returned, not later

    done = authd_cli(authd, "zone", "retransfer", ZONE, "--wait", "--timeout", "20", timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr + authd.log()
    assert "serves serial 2, the primary's" in done.stdout
    assert authd.status(ZONE)["transfer"] == "AXFR"


def test_wait_fails_with_the_last_error_when_the_primary_is_down(
    pair: tuple[KnotPrimary, AuthdSecondary],
) -> None:
    knot, authd = pair
    knot.stop()
    for command in ("refresh", "retransfer"):
        # The CLI must give its verdict by itself within --timeout (subprocess's limit is
        # only a guard against hanging forever).
        done = authd_cli(authd, "zone", command, ZONE, "--wait", "--timeout", "15", timeout=30)
        assert done.returncode == 1, done.stdout + done.stderr
        message = done.stderr.strip().splitlines()[-1]
        assert message.startswith(f"Error: zone {ZONE}: "), message
        # The outcome is the zone's last error, which names the primary that failed.
        assert f"failed: {knot.address[0]}@{knot.address[1]}: " in message, message
        assert "(still serving serial 1)" in message or "(nothing served)" in message, message


def test_without_wait_the_command_returns_at_once(pair: tuple[KnotPrimary, AuthdSecondary]) -> None:
    knot, authd = pair
    knot.stop()
    done = authd_cli(authd, "zone", "refresh", ZONE, timeout=30)
    assert done.returncode == 0 and "refresh started" in done.stdout


def test_wait_gives_up_at_the_timeout_while_the_primary_stays_silent(tmp_path: Path) -> None:
    """A primary that never answers: the first AXFR (nothing served yet, so no SOA query
    before it) is still in flight at --timeout."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((HOST, 0))  # bound, never read: queries vanish without an ICMP error
    stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stream.bind(silent.getsockname())  # the same port over TCP: connects, never answers
    stream.listen(8)
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(ZONE, [silent.getsockname()])])
    try:
        authd.start()
        done = authd_cli(authd, "zone", "refresh", ZONE, "--wait", "--timeout", "0.5", timeout=30)
        assert done.returncode == 1, done.stdout + done.stderr
        message = done.stderr.strip().splitlines()[-1]
        assert message.startswith(f"Error: zone {ZONE}: no outcome within 0.5 s (state "), message
    finally:
        authd.stop()
        silent.close()
        stream.close()
