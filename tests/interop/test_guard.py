"""The change guard, approve, reject, rollback and pin with a real knotd primary (issue 14).

knotd commits changes with knotc (each bumps the serial and sends NOTIFY); an `authd serve`
subprocess with 2 workers is its secondary; the CLI is run as an operator would. These are
the steps of the README's "When the provider pushes a bad zone" runbook (approve, reject,
rollback, unpin). Each test starts its own servers on free ports and stops them by PID.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import promql_parser
import pytest
import yaml

from authd.bench.primaries import (
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_primary,
    wait_for,
    write_zone,
)
from authd.bench.servers import HOST
from tests.support.system import free_port, require_binary

ZONE = "guard.test"
HOSTS = 100  # + SOA, NS, ns1 A: 103 RRsets, over the guard's min-rrsets (20)
ALERTS = Path(__file__).parents[2] / "contrib" / "prometheus" / "alerts.yml"
pytestmark = [pytest.mark.interop, pytest.mark.slow]


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


def cli(authd: AuthdSecondary, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "authd.cli", *args, "-c", str(authd.workdir / "authd.toml")]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def ok(authd: AuthdSecondary, *args: str) -> str:
    done = cli(authd, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def fails(authd: AuthdSecondary, *args: str) -> str:
    """A bad request: exit 1 with one line on stderr."""
    done = cli(authd, *args)
    assert done.returncode == 1, (args, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def commit(knot: KnotPrimary, *changes: tuple[str, ...]) -> None:
    knot.control("zone-begin", ZONE)
    for kind, *rest in changes:
        knot.control(f"zone-{kind}", ZONE, *rest)
    knot.control("zone-commit", ZONE)


def host(i: int) -> tuple[str, str]:
    return f"h{i}.{ZONE}.", f"10.0.{i >> 8 & 255}.{i & 255}"


ACCIDENT = tuple(("unset", host(i)[0], "A") for i in range(10, HOSTS))  # 90 of 100 hosts
RESTORE = tuple(("set", host(i)[0], "300", "A", host(i)[1]) for i in range(10, HOSTS))


def served_by_every_worker(authd: AuthdSecondary, serial: int, queries: int = 40) -> bool:
    """SO_REUSEPORT spreads fresh source ports over the workers: every answer has `serial`."""
    for _ in range(queries):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            response = dns.query.udp(
                dns.message.make_query(f"{ZONE}.", "SOA"),
                HOST,
                port=authd.port,
                timeout=2,
                sock=sock,
            )
        if int(response.answer[0][0].serial) != serial:
            return False
    return True


def alert_fires(authd: AuthdSecondary, name: str) -> bool:
    """The shipped rule's expression (`metric == 1`) is true on the scraped metrics."""
    document = yaml.safe_load(ALERTS.read_text())
    (rule,) = [r for g in document["groups"] for r in g["rules"] if r.get("alert") == name]
    parsed: Any = promql_parser.parse(rule["expr"])
    assert isinstance(parsed, promql_parser.BinaryExpr), rule["expr"]
    metric, threshold = parsed.lhs.name, float(parsed.rhs.val)
    assert str(parsed.op) in ("==", "BinaryOpType.Eql") or "==" in rule["expr"]
    return authd.metric(metric, zone=ZONE) == threshold


def status(authd: AuthdSecondary) -> dict[str, Any]:
    return authd.status(ZONE)


def test_hold_approve_release_rollback_pin_unpin_and_kill9(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1, names=HOSTS)
    port = free_port(HOST)
    knot = knot_primary(*knot_bins, tmp_path / "knot", {ZONE: zone_file}, [(HOST, port)])
    cleanup.append(knot)
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(ZONE, [knot.address])], port=port)
    authd.workers = 2
    cleanup.append(authd.start())
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 1, 10), authd.log()

    # Bad input: one line, exit 1.
    assert "nothing is held" in fails(authd, "zone", "approve", ZONE)
    assert "not held" in fails(authd, "zone", "reject", ZONE, "7")
    assert "not in the history" in fails(authd, "zone", "rollback", ZONE, "--to", "999")
    assert "not a serial" in fails(authd, "zone", "rollback", ZONE, "--to", "x")
    assert "not pinned" in fails(authd, "zone", "unpin", ZONE)

    # An ordinary edit passes the guard (serial 2).
    commit(knot, ("set", f"www.{ZONE}.", "300", "A", "192.0.2.80"))
    assert authd.wait_serial(ZONE, 2, 10), authd.log()
    assert not alert_fires(authd, "AuthdZoneHeld")

    # The pipeline accident (serial 3): held within one refresh (the NOTIFY's), 2 served.
    commit(knot, *ACCIDENT)
    assert wait_for(lambda: status(authd).get("held_serial") == 3, 10), authd.log()
    state = status(authd)
    assert state["state"] == "held" and "rrsets-removed" in state["held_reason"], state
    assert "90 of 104 RRsets" in state["held_reason"], state
    assert served_by_every_worker(authd, 2)
    assert alert_fires(authd, "AuthdZoneHeld")
    assert "HELD" in authd.log()

    # The provider fixes it (serial 4: the records back): compared with the served 2, it
    # passes and releases the hold by itself.
    commit(knot, *RESTORE)
    assert authd.wait_serial(ZONE, 4, 10), authd.log()
    assert wait_for(lambda: status(authd).get("held_serial") is None, 5)
    assert not alert_fires(authd, "AuthdZoneHeld")

    # The accident again (serial 5), approved this time.
    commit(knot, *ACCIDENT)
    assert wait_for(lambda: status(authd).get("held_serial") == 5, 10), authd.log()
    assert "not held (held: 5)" in fails(authd, "zone", "approve", ZONE, "6")
    assert "approved and served" in ok(authd, "zone", "approve", ZONE, "5")
    assert served_by_every_worker(authd, 5)
    assert status(authd)["state"] == "ok" and not alert_fires(authd, "AuthdZoneHeld")

    # Rollback to 4: served by every worker, pinned.
    out = ok(authd, "zone", "rollback", ZONE, "--to", "4")
    assert "rolled back to serial 4" in out and "pinned" in out
    assert served_by_every_worker(authd, 4)
    assert status(authd)["pinned"] == 4 and alert_fires(authd, "AuthdZonePinned")

    # A new primary version (6: the records back, plus a change) is held while pinned.
    commit(knot, *RESTORE, ("set", f"txt.{ZONE}.", "60", "TXT", '"six"'))
    assert wait_for(lambda: status(authd).get("held_serial") == 6, 10), authd.log()
    assert "pinned to serial 4" in status(authd)["held_reason"]
    assert served_by_every_worker(authd, 4)

    # kill -9 and restart: the pin, the held version and the history are still there.
    authd.stop(signal.SIGKILL)
    authd.start()
    state = status(authd)
    assert state["pinned"] == 4 and state["held_serial"] == 6 and state["serial"] == 4, state
    assert authd.serial(ZONE) == 4
    history = json.loads(ok(authd, "zone", "history", ZONE, "--json"))
    assert [v["serial"] for v in history["versions"]] == [1, 2, 4, 5, 4], history
    assert history["versions"][-1]["source"].startswith("rollback"), history

    # Unpin: the next refresh takes 6 through the guard (it passes against 4).
    assert "unpinned from serial 4" in ok(authd, "zone", "unpin", ZONE)
    assert authd.wait_serial(ZONE, 6, 10), authd.log()
    assert wait_for(lambda: status(authd).get("pinned") is None, 5)
    assert served_by_every_worker(authd, 6) and not alert_fires(authd, "AuthdZonePinned")

    ledger = ok(authd, "zone", "ledger", ZONE, "--verify")
    for word in ("held", "approved", "rolled-back", "pinned", "unpinned"):
        assert word in ledger, ledger
    assert "chain verified" in ledger


def test_reject_refuses_the_serial_and_a_newer_one_is_judged_again(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1, names=HOSTS)
    port = free_port(HOST)
    knot = knot_primary(*knot_bins, tmp_path / "knot", {ZONE: zone_file}, [(HOST, port)])
    cleanup.append(knot)
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(ZONE, [knot.address])], port=port)
    cleanup.append(authd.start())
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 1, 10), authd.log()
    commit(knot, *ACCIDENT)
    assert wait_for(lambda: status(authd).get("held_serial") == 2, 10), authd.log()
    assert "rejected" in ok(authd, "zone", "reject", ZONE, "2")
    assert status(authd)["held_serial"] is None and authd.serial(ZONE) == 1
    authd.refresh(ZONE)  # the primary still has 2: refused, not transferred again
    assert wait_for(lambda: status(authd).get("in_flight") == "none", 5)
    assert authd.serial(ZONE) == 1 and status(authd)["held_serial"] is None
    commit(knot, *RESTORE)
    assert authd.wait_serial(ZONE, 3, 10), authd.log()
    assert "rejected" in ok(authd, "zone", "ledger", ZONE, "--verify")


def test_hold_timeout_publishes_by_itself(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1, names=HOSTS)
    port = free_port(HOST)
    knot = knot_primary(*knot_bins, tmp_path / "knot", {ZONE: zone_file}, [(HOST, port)])
    cleanup.append(knot)
    zone = SecondaryZone(ZONE, [knot.address], {"guard.hold-timeout": "2s"})
    authd = AuthdSecondary(tmp_path / "authd", [zone], port=port)
    cleanup.append(authd.start())
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 1, 10), authd.log()
    commit(knot, *ACCIDENT)
    assert wait_for(lambda: status(authd).get("held_serial") == 2, 10), authd.log()
    assert status(authd)["held_until"] is not None and authd.serial(ZONE) == 1
    assert authd.wait_serial(ZONE, 2, 10), authd.log()  # the wake-up published it
    assert status(authd)["held_serial"] is None
    assert "hold-timeout passed" in authd.log()
