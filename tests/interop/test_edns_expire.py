"""EDNS EXPIRE (RFC 7314) end to end, real servers on loopback (issue 13, Tests).

1. knotd primary -> authd: `kdig +expire` against authd shows EXPIRE counting down from the
   SOA expire authd restarted its clock with.
2. knotd primary -> knotd middle secondary -> authd: the middle clamps its expire timer to
   600 s (`expire-max-interval`), far below the SOA EXPIRE field (14 days). authd applies the
   middle's EDNS EXPIRE: its expires_at is about now + 600, not now + 14 days, status shows
   the value received, and kdig against authd says so too. The same chain with the remote's
   `edns-expire = false` restarts the full SOA expire (the option was not sent).
3. ... -> that authd -> a second authd fed by the first (provide-xfr): the second authd's
   expire clock is the first's remaining time (from the EXPIRE in the first AXFR message and
   in SOA answers), and `kdig +expire` against it shows it.

Skips when knotd/knotc/kdig are missing, fails under AUTHD_REQUIRE_INTEROP=1.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.bench.primaries import (
    KEY,
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_preamble,
    knot_primary,
    wait_for,
    write_zone,
)
from authd.bench.servers import HOST, RunningServer, soa_answers
from tests.support.system import free_port, require_binary

ZONE = "expire.test"
SOA_EXPIRE = 1209600  # write_zone's default SOA EXPIRE field
MIDDLE_EXPIRE = 600  # the middle knotd's expire-max-interval


@pytest.fixture
def bins() -> tuple[str, str, str]:
    return require_binary("knotd"), require_binary("knotc"), require_binary("kdig")


@pytest.fixture
def cleanup() -> Iterator[list[KnotPrimary | AuthdSecondary | RunningServer]]:
    started: list[KnotPrimary | AuthdSecondary | RunningServer] = []
    try:
        yield started
    finally:
        for thing in reversed(started):
            thing.stop()


def kdig_expire(kdig: str, address: tuple[str, int]) -> int:
    """The EXPIRE value `kdig +expire` prints for the zone's SOA."""
    done = subprocess.run(
        [kdig, f"@{address[0]}", "-p", str(address[1]), "+expire", "+norec", ZONE, "SOA"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    match = re.search(r"EXPIRE: (\d+)", done.stdout)
    assert match is not None, done.stdout + done.stderr
    return int(match.group(1))


class HubAuthd(AuthdSecondary):
    """authd that gives transfers (provide-xfr) to the remote "down" at `down_port`."""

    down_port = 0

    def config_text(self) -> str:
        return super().config_text() + (
            f'\n[[remote]]\nid = "down"\naddresses = ["{HOST}@{self.down_port}"]\n'
            f'key = "{KEY.name}"\n'
        )


class NoExpireAuthd(AuthdSecondary):
    """authd whose remotes say `edns-expire = false`."""

    def config_text(self) -> str:
        text = super().config_text()
        return text.replace(f'key = "{KEY.name}"\n', f'key = "{KEY.name}"\nedns-expire = false\n')


def start_middle(knotd: str, workdir: Path, primary: tuple[str, int]) -> RunningServer:
    """knotd as a secondary of `primary`, expire timer clamped to MIDDLE_EXPIRE seconds,
    giving transfers to KEY."""
    port = free_port(HOST)
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    (workdir / "db").mkdir(exist_ok=True)
    conf = workdir / "knot.conf"
    conf.write_text(
        knot_preamble(workdir, port)
        + f"""remote:
  - id: primary
    address: {primary[0]}@{primary[1]}
    key: {KEY.name}
acl:
  - id: xfr
    key: {KEY.name}
    action: transfer
template:
  - id: default
    storage: "{workdir}/db"
    zonefile-sync: -1
zone:
  - domain: "{ZONE}."
    master: primary
    acl: xfr
    expire-max-interval: {MIDDLE_EXPIRE}
"""
    )
    log_path = workdir / "knotd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [knotd, "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
    server = RunningServer("knotd-middle", process, HOST, port, workdir, log_path)
    if not wait_for(lambda: soa_answers(HOST, port, ZONE), 20.0, 0.05):
        text = server.log()
        server.stop()
        raise RuntimeError(f"the middle knotd did not load {ZONE}:\n{text}")
    return server


def start_authd(
    workdir: Path,
    upstream: tuple[str, int],
    cleanup: list[KnotPrimary | AuthdSecondary | RunningServer],
    kind: type[AuthdSecondary] = AuthdSecondary,
) -> AuthdSecondary:
    authd = kind(workdir, [SecondaryZone(ZONE, [upstream])])
    cleanup.append(authd.start())
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 1, 10), authd.log()
    return authd


def test_kdig_expire_from_authd_counts_down(
    tmp_path: Path,
    bins: tuple[str, str, str],
    cleanup: list[KnotPrimary | AuthdSecondary | RunningServer],
) -> None:
    knotd, knotc, kdig = bins
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1)
    knot = knot_primary(knotd, knotc, tmp_path / "knot", {ZONE: zone_file})
    cleanup.append(knot)
    assert kdig_expire(kdig, knot.address) == SOA_EXPIRE  # a primary: its SOA EXPIRE (Knot)
    authd = start_authd(tmp_path / "authd", knot.address, cleanup)
    status = authd.status(ZONE)
    assert status["edns_expire"] == SOA_EXPIRE, status  # what knotd answered, recorded
    first = kdig_expire(kdig, authd.address)
    assert SOA_EXPIRE - 60 <= first <= SOA_EXPIRE, first
    assert wait_for(lambda: kdig_expire(kdig, authd.address) < first, 5.0, 0.25)


def test_authd_applies_the_middle_secondarys_expire(
    tmp_path: Path,
    bins: tuple[str, str, str],
    cleanup: list[KnotPrimary | AuthdSecondary | RunningServer],
) -> None:
    knotd, knotc, kdig = bins
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1)
    knot = knot_primary(knotd, knotc, tmp_path / "knot", {ZONE: zone_file})
    cleanup.append(knot)
    middle = start_middle(knotd, tmp_path / "middle", knot.address)
    cleanup.append(middle)
    left = kdig_expire(kdig, middle.address)
    assert 0 < left <= MIDDLE_EXPIRE, left  # the middle's copy has 10 minutes left

    authd = start_authd(tmp_path / "authd", middle.address, cleanup)
    status = authd.status(ZONE)
    now = time.time()
    assert 0 < status["edns_expire"] <= MIDDLE_EXPIRE, status
    # expires_at is the middle's remaining time, not a full SOA expire (RFC 7314 4).
    assert now < status["expires_at"] <= now + MIDDLE_EXPIRE, status
    assert 0 < kdig_expire(kdig, authd.address) <= MIDDLE_EXPIRE

    plain = start_authd(tmp_path / "plain", middle.address, cleanup, NoExpireAuthd)
    status = plain.status(ZONE)
    assert status["edns_expire"] is None, status  # not asked, not received
    assert status["expires_at"] > time.time() + SOA_EXPIRE - 120, status


def test_a_second_authd_fed_by_the_first_takes_its_remaining_time(
    tmp_path: Path,
    bins: tuple[str, str, str],
    cleanup: list[KnotPrimary | AuthdSecondary | RunningServer],
) -> None:
    knotd, knotc, kdig = bins
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1)
    knot = knot_primary(knotd, knotc, tmp_path / "knot", {ZONE: zone_file})
    cleanup.append(knot)
    middle = start_middle(knotd, tmp_path / "middle", knot.address)
    cleanup.append(middle)
    down_port = free_port(HOST)
    hub = HubAuthd(
        tmp_path / "hub", [SecondaryZone(ZONE, [middle.address], {"provide-xfr": ["down"]})]
    )
    hub.down_port = down_port
    cleanup.append(hub.start())
    hub.refresh(ZONE)
    assert hub.wait_serial(ZONE, 1, 10), hub.log()
    hub_left = kdig_expire(kdig, hub.address)
    assert 0 < hub_left <= MIDDLE_EXPIRE, hub_left

    down = AuthdSecondary(tmp_path / "down", [SecondaryZone(ZONE, [hub.address])], port=down_port)
    cleanup.append(down.start())
    down.refresh(ZONE)
    assert down.wait_serial(ZONE, 1, 10), down.log()
    status = down.status(ZONE)
    now = time.time()
    assert status["transfer"] == "AXFR", status
    assert 0 < status["edns_expire"] <= MIDDLE_EXPIRE, status
    assert now < status["expires_at"] <= now + MIDDLE_EXPIRE, status  # not now + 14 days
    assert 0 < kdig_expire(kdig, down.address) <= hub_left
