"""Replication against real primaries on loopback (issue 3): knotd and named with TSIG
hmac-sha256 and NOTIFY to an `authd serve` subprocess; restarts, failover, expiry, NOTIFY ACL
and IXFR fallback. Each test starts its own servers on free ports and stops them by PID.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.conftest import free_port, require_binary
from tests.interop.primaries import (
    HOST,
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_primary,
    query,
    served_serial,
    start_named_primary,
    wait_for,
    write_zone,
)

ZONE = "repl.test"


@pytest.fixture
def knot_bins() -> tuple[str, str]:
    return require_binary("knotd"), require_binary("knotc")


@pytest.fixture
def cleanup() -> Iterator[list[KnotPrimary | AuthdSecondary]]:
    """Everything appended here is stopped at the end, whatever happened."""
    started: list[KnotPrimary | AuthdSecondary] = []
    try:
        yield started
    finally:
        for thing in reversed(started):
            thing.stop()


def transfers(authd: AuthdSecondary, kind: str, result: str) -> float:
    return authd.metric("authd_xfr_transfers_total", zone=ZONE, type=kind, result=result)


def all_transfers(authd: AuthdSecondary) -> float:
    total = 0.0
    for kind in ("AXFR", "IXFR", "AXFR-style IXFR", "AXFR after IXFR failed"):
        for result in ("updated", "fell-back-to-axfr"):
            total += transfers(authd, kind, result)
    return total


def start_pair(
    tmp_path: Path,
    bins: tuple[str, str],
    cleanup: list[KnotPrimary | AuthdSecondary],
    names: int = 10,
    journal: bool = True,
    notify: bool = True,
    settings: dict[str, str | int] | None = None,
    **soa: int,
) -> tuple[KnotPrimary, AuthdSecondary]:
    """knotd primary for ZONE (serial 1) and authd as its secondary, first load done."""
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1, names=names, **soa)
    authd_port = free_port(HOST)
    targets = [(HOST, authd_port)] if notify else []
    knot = knot_primary(*bins, tmp_path / "knot", {ZONE: zone_file}, targets, journal)
    cleanup.append(knot)
    zone = SecondaryZone(ZONE, [knot.address], settings or {})
    authd = AuthdSecondary(tmp_path / "authd", [zone], port=authd_port)
    cleanup.append(authd.start())
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 1, 10), authd.log()
    return knot, authd


# --- 1. knotd: AXFR, then IXFR after NOTIFY, within 1 s on a 10k-record zone ---------------


def test_knotd_axfr_then_notify_ixfr_within_one_second(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    knot, authd = start_pair(tmp_path, knot_bins, cleanup, names=10_000)
    status = authd.status(ZONE)
    assert status["transfer"] == "AXFR" and status["records"] >= 10_000, status
    assert transfers(authd, "AXFR", "updated") == 1

    began = time.monotonic()
    knot.set_record(ZONE, f"new.{ZONE}.", "A", "192.0.2.77")
    assert authd.wait_serial(ZONE, 2, 5), authd.log()
    elapsed = time.monotonic() - began
    print(f"knotd zone-commit -> authd serves serial 2 (10k records): {elapsed:.3f} s")

    answer = query(HOST, authd.port, f"new.{ZONE}.", "A")
    assert answer is not None and answer.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in answer.answer[0]] == ["192.0.2.77"]
    assert authd.status(ZONE)["transfer"] == "IXFR"
    assert transfers(authd, "IXFR", "updated") == 1
    assert elapsed < 1.0, f"NOTIFY to served took {elapsed:.3f} s"


# --- 2. named: AXFR, then IXFR from ixfr-from-differences after a reload --------------------


def test_named_axfr_then_ixfr_after_reload(
    tmp_path: Path, cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    named = require_binary("named")
    source = write_zone(tmp_path / "src" / f"{ZONE}.zone", ZONE, 1, names=50)
    authd_port = free_port(HOST)
    primary = start_named_primary(named, tmp_path / "named", {ZONE: source}, [(HOST, authd_port)])
    try:
        zone = SecondaryZone(ZONE, [primary.address])
        authd = AuthdSecondary(tmp_path / "authd", [zone], port=authd_port)
        cleanup.append(authd.start())
        authd.refresh(ZONE)
        assert authd.wait_serial(ZONE, 1, 10), authd.log()
        assert authd.status(ZONE)["transfer"] == "AXFR"

        # named writes the zone beside its config as <zone>.db; edit it and reload
        write_zone(tmp_path / "named" / f"{ZONE}.db", ZONE, 2, names=51)
        primary.reload()
        assert wait_for(lambda: primary_serial(primary.port) == 2, 10), primary.log()
        assert authd.wait_serial(ZONE, 2, 10), authd.log()
        assert authd.serial(ZONE) == primary_serial(primary.port)
        assert authd.status(ZONE)["transfer"] == "IXFR", authd.status(ZONE)
        assert transfers(authd, "IXFR", "updated") == 1
        answer = query(HOST, authd.port, f"h50.{ZONE}.", "A")
        assert answer is not None and answer.rcode() == dns.rcode.NOERROR
    finally:
        primary.stop()


def primary_serial(port: int) -> int | None:
    return served_serial(HOST, port, ZONE)
