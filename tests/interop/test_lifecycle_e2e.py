"""The zone lifecycle end to end, against a real knotd primary (issue 11, issue 12 defect 2):
expiry at SOA EXPIRE whatever REFRESH is, bootstrap back-off of a zone that never loaded,
per-remote SOA check metrics, and what status and the log say across a restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from authd.bench.primaries import (
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_primary,
    query,
    wait_for,
    write_zone,
)
from authd.bench.servers import HOST
from tests.conftest import free_port, require_binary


@pytest.fixture
def knot_bins() -> tuple[str, str]:
    return require_binary("knotd"), require_binary("knotc")


@pytest.fixture
def cleanup() -> Iterator[list[KnotPrimary | AuthdSecondary]]:
    started: list[KnotPrimary | AuthdSecondary] = []
    try:
        yield started
    finally:
        for thing in reversed(started):
            thing.stop()


def test_expiry_when_refresh_is_longer_than_expire(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    """SOA `1 3600 3600 8 60`, primary stopped: expired at 8 s, not at the next refresh."""
    zone = "exp.test"
    zone_file = write_zone(
        tmp_path / "knot" / f"{zone}.zone", zone, 1, refresh=3600, retry=3600, expire=8
    )
    knot = knot_primary(*knot_bins, tmp_path / "knot", {zone: zone_file})
    cleanup.append(knot)
    settings: dict[str, str | int] = {"on-expire": "servfail", "expire-min": 1}
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(zone, [knot.address], settings)])
    cleanup.append(authd.start())
    authd.refresh(zone)
    assert authd.wait_serial(zone, 1, 10), authd.log()
    loaded_at = time.monotonic()
    knot.stop()

    assert wait_for(lambda: authd.metric("authd_zone_expired", zone=zone) == 1, 14), authd.log()
    elapsed = time.monotonic() - loaded_at
    print(f"expired {elapsed:.2f} s after the last refresh (SOA expire 8 s)")
    assert 6.0 <= elapsed <= 12.0
    assert authd.status(zone)["state"] == "expired"
    assert "zone expired" in authd.log() and "answering SERVFAIL" in authd.log()
    assert wait_for(
        lambda: (
            (a := query(HOST, authd.port, zone + ".")) is not None
            and a.rcode() == dns.rcode.SERVFAIL
        ),
        2,
    )
    # Nothing asked the primary meanwhile: REFRESH is an hour.
    assert authd.metric("authd_xfr_soa_checks_total", zone=zone, result="network-error") == 0
    assert authd.metric("authd_xfr_soa_checks_total", zone=zone, result="timeout") == 0


def test_bootstrap_serves_within_seconds_once_the_primary_is_up(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    """authd starts while the primary is down; when it comes up the zone serves in seconds
    (bootstrap back-off 5 s, 20 s, ...), not after the 900 s default retry."""
    zone = "boot.test"
    port = free_port(HOST)
    zone_file = write_zone(tmp_path / "knot" / f"{zone}.zone", zone, 7)
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(zone, [(HOST, port)])])
    cleanup.append(authd.start())
    assert "authd started: 0 of 1 zones serving" in authd.log()
    assert authd.http("/readyz")[0] == 503
    remote = "p0"  # the [[remote]] id AuthdSecondary gives the first primary
    assert wait_for(
        lambda: authd.metric("authd_remote_last_failure_timestamp_seconds", remote=remote) > 0, 5
    ), authd.log()
    # Nothing served yet: each attempt is an AXFR with no SOA query before it (as Knot).
    failed = sum(
        authd.metric("authd_xfr_transfers_total", zone=zone, result=word)
        for word in ("timeout", "network-error", "refused")
    )
    assert failed >= 1
    assert authd.metric("authd_xfr_soa_checks_total", zone=zone) == 0
    status = authd.status(zone)
    assert status["state"] == "never-loaded" and status["last_error"], status
    assert 0 < status["next_refresh"] - time.time() <= 6, status  # seconds, not 900

    knot = knot_primary(*knot_bins, tmp_path / "knot", {zone: zone_file}, port=port)
    cleanup.append(knot)
    began = time.monotonic()
    assert authd.wait_serial(zone, 7, 30), authd.log()
    print(f"primary up -> zone served after {time.monotonic() - began:.2f} s")
    assert authd.metric("authd_xfr_soa_checks_total", zone=zone) == 0  # straight to AXFR
    assert authd.metric("authd_remote_last_success_timestamp_seconds", remote=remote) > 0
    assert authd.metric("authd_xfr_transfers_total", zone=zone, type="AXFR", result="updated") == 1
    assert authd.http("/readyz")[0] == 200


def test_restart_keeps_the_last_error_and_says_where_the_version_came_from(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    zone = "keep.test"
    zone_file = write_zone(tmp_path / "knot" / f"{zone}.zone", zone, 1)
    knot = knot_primary(*knot_bins, tmp_path / "knot", {zone: zone_file})
    cleanup.append(knot)
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(zone, [knot.address])])
    cleanup.append(authd.start())
    authd.refresh(zone)
    assert authd.wait_serial(zone, 1, 10), authd.log()
    knot.set_record(zone, f"new.{zone}.", "A", "192.0.2.77")
    authd.refresh(zone)
    assert authd.wait_serial(zone, 2, 10), authd.log()
    assert authd.status(zone)["transfer"] == "IXFR"
    knot.stop()
    authd.refresh(zone)
    assert wait_for(lambda: bool(authd.status(zone)["last_error"]), 10), authd.log()
    error = authd.status(zone)["last_error"]

    began = time.monotonic()
    authd.stop()
    print(f"SIGTERM -> exit in {time.monotonic() - began:.2f} s")
    authd.start()
    time.sleep(1.0)  # the first check after start would come within 0.02 s
    checks = authd.metric("authd_xfr_soa_checks_total", zone=zone)
    assert checks == 0, "timers still fresh: no SOA query at restart"
    status = authd.status(zone)
    assert status["serial"] == 2 and status["last_error"] == error, status
    assert status["last_outcome"] == "soa-check-failed", status
    line = next(x for x in authd.log().splitlines() if "serving serial 2" in x)
    assert "stored copy" in line and "via IXFR" not in line, line
