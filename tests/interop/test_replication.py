"""Replication against real primaries on loopback (issue 3): knotd and named with TSIG
hmac-sha256 and NOTIFY to an `authd serve` subprocess; restarts, failover, expiry, NOTIFY ACL
and IXFR fallback. Each test starts its own servers on free ports and stops them by PID.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from authd.bench.primaries import (
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_primary,
    query,
    send_notify,
    served_serial,
    start_named_primary,
    wait_for,
    write_zone,
)
from authd.bench.servers import HOST
from tests.support.system import free_port, require_binary

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


# --- 3. restart with every primary down: the stored copy answers at once -------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill9"])
def test_restart_serves_stored_copy_with_primaries_down(
    tmp_path: Path,
    knot_bins: tuple[str, str],
    cleanup: list[KnotPrimary | AuthdSecondary],
    stop_signal: signal.Signals,
) -> None:
    knot, authd = start_pair(tmp_path, knot_bins, cleanup, names=2000)
    knot.set_record(ZONE, f"new.{ZONE}.", "A", "192.0.2.77")
    assert authd.wait_serial(ZONE, 2, 5), authd.log()  # base copy + one journal entry
    authd.stop(stop_signal)
    knot.stop()

    authd.start()
    began = authd.started_at
    assert wait_for(lambda: authd.serial(ZONE) == 2, 10), authd.log()
    elapsed = time.monotonic() - began
    print(f"restart after {stop_signal.name}: first answer with serial 2 after {elapsed:.3f} s")
    answer = query(HOST, authd.port, f"new.{ZONE}.", "A")
    assert answer is not None and [r.to_text() for r in answer.answer[0]] == ["192.0.2.77"]
    status = authd.status(ZONE)
    assert status["state"] == "ok" and status["serial"] == 2, status
    assert status["loaded_at"] is not None and status["records"] == 2000 + 4, status
    assert authd.http("/readyz")[0] == 200
    assert elapsed < 5.0


# --- 4. several primaries: a dead first one, then failover the other way --------------------


def test_failover_between_primaries(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    dead_port = free_port(HOST)
    second_file = write_zone(tmp_path / "second" / f"{ZONE}.zone", ZONE, 1)
    second = knot_primary(*knot_bins, tmp_path / "second", {ZONE: second_file})
    cleanup.append(second)
    zone = SecondaryZone(ZONE, [(HOST, dead_port), second.address])
    authd = AuthdSecondary(tmp_path / "authd", [zone])
    cleanup.append(authd.start())
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 1, 10), authd.log()
    assert authd.status(ZONE)["primary"] == f"{HOST}@{second.port}"

    # the first primary comes up (newer serial), the second goes away
    first_file = write_zone(tmp_path / "first" / f"{ZONE}.zone", ZONE, 5)
    first = knot_primary(*knot_bins, tmp_path / "first", {ZONE: first_file}, port=dead_port)
    cleanup.append(first)
    second.stop()
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 5, 10), authd.log()
    assert authd.status(ZONE)["primary"] == f"{HOST}@{dead_port}"


# --- 5. past EXPIRE: serve-stale or SERVFAIL, and recovery by itself -------------------------


@pytest.mark.parametrize("on_expire", ["serve-stale", "servfail"])
def test_expire_then_recover(
    tmp_path: Path,
    knot_bins: tuple[str, str],
    cleanup: list[KnotPrimary | AuthdSecondary],
    on_expire: str,
) -> None:
    settings: dict[str, str | int] = {
        "on-expire": on_expire,
        "refresh-min": 1,
        "retry-min": 1,
        "expire-min": 1,
    }
    knot, authd = start_pair(
        tmp_path, knot_bins, cleanup, settings=settings, refresh=1, retry=1, expire=3
    )
    knot.stop()
    assert wait_for(lambda: authd.status(ZONE)["state"] == "expired", 10), authd.status(ZONE)
    assert authd.metric("authd_zone_expired", zone=ZONE) == 1
    answer = query(HOST, authd.port, ZONE + ".")
    assert answer is not None
    if on_expire == "serve-stale":
        assert answer.rcode() == dns.rcode.NOERROR and authd.serial(ZONE) == 1
    else:
        assert answer.rcode() == dns.rcode.SERVFAIL
    # Under EDNS the answer says why (RFC 8914): 3 Stale Answer or 24 Invalid Data.
    code = 3 if on_expire == "serve-stale" else 24
    assert ede_codes(HOST, authd.port) == [code]
    assert wait_for(lambda: authd.metric("authd_responses_ede_total", code=str(code)) >= 1, 5)

    knot.start()
    assert wait_for(lambda: authd.status(ZONE)["state"] == "ok", 10), authd.log()
    assert authd.wait_serial(ZONE, 1, 5)
    assert authd.metric("authd_zone_expired", zone=ZONE) == 0
    assert ede_codes(HOST, authd.port) == []


def ede_codes(host: str, port: int) -> list[int]:
    """The Extended DNS Error codes of the zone's SOA answer to an EDNS query."""
    message = dns.message.make_query(ZONE + ".", "SOA", use_edns=0)
    answer = dns.query.udp(message, host, port=port, timeout=2)
    return [option.code for option in answer.options if option.otype == dns.edns.EDE]


# --- 6. NOTIFY: a stranger gets NOTAUTH; a burst from the primary makes one transfer ---------


def test_notify_acl_and_burst(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    knot, authd = start_pair(tmp_path, knot_bins, cleanup, notify=False)
    before = authd.status(ZONE)
    for signed in (False, True):
        rcode = send_notify(authd.address, ZONE, 9, source="127.0.0.2", signed=signed)
        assert rcode == dns.rcode.NOTAUTH, (signed, rcode)
    time.sleep(1.0)
    after = authd.status(ZONE)
    assert after["last_attempt"] == before["last_attempt"], (before, after)
    assert after["primary_serial"] == before["primary_serial"]
    assert knot.log().count("outgoing") == 2  # the first AXFR: started, finished

    knot.set_record(ZONE, f"new.{ZONE}.", "A", "192.0.2.77")  # no NOTIFY from knotd here
    transfers_before = all_transfers(authd)
    rcodes = [send_notify(authd.address, ZONE, 2) for _ in range(50)]
    assert rcodes == [dns.rcode.NOERROR] * 50
    assert authd.wait_serial(ZONE, 2, 5), authd.log()
    time.sleep(1.0)
    assert all_transfers(authd) == transfers_before + 1
    assert knot.log().count("IXFR, outgoing") == 2, knot.log()  # one IXFR: started, finished


# --- 7. IXFR without history at the primary: still updated ---------------------------------


def test_ixfr_without_primary_history_still_updates(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    knot, authd = start_pair(tmp_path, knot_bins, cleanup, journal=False)
    knot.set_record(ZONE, f"new.{ZONE}.", "A", "192.0.2.77")
    assert authd.wait_serial(ZONE, 2, 5), authd.log()
    status = authd.status(ZONE)
    print(f"IXFR without history answered as: {status['transfer']}")
    assert status["transfer"] in ("AXFR-style IXFR", "AXFR after IXFR failed"), status
    assert (
        transfers(authd, status["transfer"], "updated")
        + transfers(authd, status["transfer"], "fell-back-to-axfr")
        == 1
    )
    answer = query(HOST, authd.port, f"new.{ZONE}.", "A")
    assert answer is not None and [r.to_text() for r in answer.answer[0]] == ["192.0.2.77"]
