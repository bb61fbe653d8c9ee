"""Zones added by `authd reload` take a NOTIFY from their primary (issue 15).

Each worker builds its NOTIFY ACL and TSIG keyring from the config when it is forked; on the
old main a reload never updated them, so zones added by reload refused every NOTIFY and only
took a new serial at their next refresh (an hour here). A reload now re-forks the workers
from the reloaded config. knotd is the primary of every zone and NOTIFYs authd (2 workers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd import control
from authd.bench.primaries import (
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_primary,
    served_serial,
    write_zone,
)
from authd.bench.servers import HOST
from tests.support.system import free_port, require_binary

ADDED = 100  # zones added by the reload, as in the issue


@pytest.fixture
def started() -> Iterator[list[KnotPrimary | AuthdSecondary]]:
    things: list[KnotPrimary | AuthdSecondary] = []
    try:
        yield things
    finally:
        for thing in reversed(things):
            thing.stop()


def answers(authd: AuthdSecondary, zone: str, serial: int) -> bool:
    return all(served_serial(HOST, authd.port, zone) == serial for _ in range(4))


def all_serve(authd: AuthdSecondary, zones: list[str], serial: int, timeout: float) -> list[str]:
    """The zones not answering `serial` (from several source ports) when `timeout` ran out."""
    deadline = time.monotonic() + timeout
    missing = zones
    while missing and time.monotonic() < deadline:
        missing = [z for z in missing if not answers(authd, z, serial)]
        time.sleep(0.05)
    return missing


def test_zones_added_by_reload_take_notify_from_their_primary(
    tmp_path: Path, started: list[KnotPrimary | AuthdSecondary]
) -> None:
    knotd, knotc = require_binary("knotd"), require_binary("knotc")
    names = ["first.test"] + [f"added{i}.test" for i in range(ADDED)]
    # SOA refresh 3600 s, retry 600 s: within this test only a NOTIFY brings a new serial.
    files = {n: write_zone(tmp_path / "knot" / f"{n}.zone", n, 1, names=5) for n in names}
    authd_port = free_port(HOST)
    knot = knot_primary(knotd, knotc, tmp_path / "knot", files, [(HOST, authd_port)])
    started.append(knot)
    authd = AuthdSecondary(
        tmp_path / "authd", [SecondaryZone(names[0], [knot.address])], port=authd_port
    )
    authd.workers = 2
    started.append(authd.start())
    authd.refresh(names[0])
    assert not all_serve(authd, names[:1], 1, 15), authd.log()

    authd.zones = [SecondaryZone(n, [knot.address]) for n in names]
    (authd.workdir / "authd.toml").write_text(authd.config_text())
    summary = control.call(authd.socket, "reload")
    assert f"{ADDED} added" in str(summary), summary
    added = names[1:]
    for name in added:  # skip the spread of the first refresh
        authd.refresh(name)
    assert not all_serve(authd, added, 1, 60), authd.log()[-3000:]

    for name in added:
        knot.set_record(name, f"new.{name}.", "A", "192.0.2.77")  # serial 2, NOTIFY sent
    missing = all_serve(authd, added, 2, 30)
    assert not missing, f"still at serial 1 after NOTIFY: {missing}\n{authd.log()[-3000:]}"
    accepted = sum(
        authd.metric("authd_xfr_notifies_total", zone=n, result="accepted") for n in added
    )
    assert accepted >= ADDED
