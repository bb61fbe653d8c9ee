"""kill -9 of a live `authd serve` while it transfers, journals and compacts a medium zone.

A primary keeps producing new serials of a 20k-record zone, each changing 2000 records (so
IXFR diffs are large, the journal fills and compaction comes every few serials) and now and
then forgetting its history (so the next IXFR is answered AXFR-style: a full copy). authd is
killed with SIGKILL at a random moment after a NOTIFY. Then, with the primary refusing
everything, authd is started again and must serve a serial between the one clients last saw
and the newest published one, with exactly that version's content, and leave no temp files.
The loop stops at ITERATIONS or when the wall-clock budget is spent, whichever is first.

CI runs ITERATIONS (30, bounded by a wall-clock budget); the long run is a command:
    AUTHD_CRASH_E2E_ITERATIONS=1000 AUTHD_CRASH_E2E_BUDGET=7200 \\
        .venv/bin/python -m pytest -q tests/fault/test_crash_e2e.py
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.name
import dns.node
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.zone
import pytest

from tests.support.primary import (
    Behaviour,
    LiveSecondary,
    PrimaryThread,
    TestPrimary,
    make_zone,
    send_notify,
    test_key,
    zone_serial,
)

ZONE = "crash.test"
ORIGIN = dns.name.from_text(ZONE + ".")
HOSTS = 20_000
BLOCK = 2_000  # records each serial changes: ~150 kB diffs, journal past 1 MiB in ~7 serials
HISTORY = 40  # versions the primary keeps for IXFR; older clients get a full zone
ITERATIONS = int(os.environ.get("AUTHD_CRASH_E2E_ITERATIONS", "30"))
BUDGET = float(os.environ.get("AUTHD_CRASH_E2E_BUDGET", "120"))  # room for ~30 rounds in CI
KILL_WINDOW = 1.5  # seconds after the NOTIFY: covers SOA check, IXFR, verify, journal append
FULL_WINDOW = 4.0  # the same for a full copy of 20k records (transfer, full check, store)
FULL_EVERY = 5
PATIENT = "timeout = 30\nidle-timeout = 10"
STORE_TEMP = "*.authd-tmp"  # the store's half-written copies
CANDIDATE_TEMP = ".candidate-*"  # full versions handed to the validation pool
NORMAL = Behaviour(records_per_message=500)  # large messages: cheaper full transfers
REFUSE_ALL = {"SOA": dns.rcode.REFUSED, "IXFR": dns.rcode.REFUSED, "AXFR": dns.rcode.REFUSED}


def address(host: int, serial: int) -> str:
    """Host `host`'s address at `serial`: set by the last serial that rewrote its block."""
    blocks = HOSTS // BLOCK
    block = host // BLOCK
    last = serial - ((serial - block) % blocks)
    value = last if last >= 2 else 0
    return f"10.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


class Versions:
    """The zone at each serial; a new version shares every node it does not change."""

    def __init__(self) -> None:
        base = make_zone(ZONE + ".", 1, hosts=0)
        for i in range(HOSTS):
            self._set_host(base, i, 1)
        self.by_serial = {1: base}

    @staticmethod
    def _set_host(zone: dns.zone.Zone, i: int, serial: int) -> None:
        node = dns.node.Node()  # type: ignore[no-untyped-call]
        rdataset = dns.rdataset.from_text("IN", "A", 300, address(i, serial))
        node.replace_rdataset(rdataset)
        zone.nodes[dns.name.from_text(f"h{i}", ORIGIN)] = node

    def make(self, serial: int) -> dns.zone.Zone:
        previous = self.by_serial[max(self.by_serial)]
        zone = dns.zone.Zone(ORIGIN, relativize=False)
        zone.nodes = dict(previous.nodes)
        head = make_zone(ZONE + ".", serial, hosts=0)
        for name in (ORIGIN, dns.name.from_text("version", ORIGIN)):
            zone.nodes[name] = head.nodes[name]
        block = serial % (HOSTS // BLOCK)
        for i in range(block * BLOCK, (block + 1) * BLOCK):
            self._set_host(zone, i, serial)
        self.by_serial[serial] = zone
        return zone


def query(port: int, name: str, rdtype: str) -> dns.message.Message:
    message = dns.message.make_query(f"{name}.{ZONE}." if name else ZONE + ".", rdtype)
    return dns.query.udp(message, "127.0.0.1", port=port, timeout=2.0)


def served_content_matches(secondary: LiveSecondary, serial: int, rng: random.Random) -> None:
    """The served version is exactly `serial`'s: its TXT marker and sampled host addresses."""
    txt = query(secondary.port, "version", "TXT")
    assert txt.answer and txt.answer[0][0].to_text() == f'"{serial}"', txt.to_text()
    block = serial % (HOSTS // BLOCK)
    samples = [block * BLOCK, block * BLOCK + BLOCK - 1, *rng.sample(range(HOSTS), 3)]
    for i in samples:
        answer = query(secondary.port, f"h{i}", "A")
        assert answer.rcode() == dns.rcode.NOERROR and answer.answer, answer.to_text()
        assert answer.answer[0][0].to_text() == address(i, serial), (i, serial)


def temp_files(state: Path, pattern: str) -> list[Path]:
    return list(state.rglob(pattern))


@pytest.fixture
def versions() -> Versions:
    return Versions()


@pytest.fixture
def primary_runner(versions: Versions) -> Iterator[tuple[TestPrimary, PrimaryThread]]:
    primary = TestPrimary(
        [versions.by_serial[1]], key=test_key(), behaviour=NORMAL, immutable_versions=True
    )
    runner = PrimaryThread(primary)
    with runner:
        yield primary, runner


def test_kill9_during_transfers_journal_and_compaction(
    tmp_path: Path, versions: Versions, primary_runner: tuple[TestPrimary, PrimaryThread]
) -> None:
    primary, runner = primary_runner
    rng = random.Random(int(os.environ.get("AUTHD_CRASH_E2E_SEED", "7")))
    # The test primary renders a full 20k-record answer before its first byte: be patient.
    secondary = LiveSecondary(tmp_path / "authd", ZONE, primary.endpoint, transfer_settings=PATIENT)
    seen = 1  # the highest serial a client has been answered with: never go below it
    done = 0
    candidates: set[Path] = set()  # see test_stale_candidate_removed_at_start
    advanced = 0  # restarts that came back with a serial stored during the round
    started = time.monotonic()
    try:
        secondary.start()
        secondary.wait_serial(1, timeout=30)
        while done < ITERATIONS and time.monotonic() - started < BUDGET:
            # Keep the primary producing: one or two new serials, announced by NOTIFY. Every
            # FULL_EVERY-th round it forgets its history: the IXFR is answered with the whole
            # zone, and authd stores a full copy instead of appending to the journal.
            full = done % FULL_EVERY == FULL_EVERY - 1
            round_start = seen
            for _ in range(rng.randint(1, 2)):
                serial = max(versions.by_serial) + 1
                primary.publish(versions.make(serial))
                del primary.versions[: -1 if full else -HISTORY]
            newest = max(versions.by_serial)
            runner.run(send_notify(("127.0.0.1", secondary.port), ZONE + ".", newest, test_key()))
            time.sleep(rng.uniform(0.0, FULL_WINDOW if full else KILL_WINDOW))
            current = secondary.served_serial()
            if current is not None:
                seen = max(seen, current)
            secondary.kill()

            # Restart from disk alone: the primary refuses every query meanwhile.
            primary.behaviour = Behaviour(rcodes=dict(REFUSE_ALL))
            log_before = len(secondary.log_text())
            secondary.start(refresh=False)
            log = secondary.log_text()[log_before:]
            restarted = secondary.served_serial()
            assert restarted is not None, f"nothing served after restart {done}:\n{log}"
            assert seen <= restarted <= newest, (seen, restarted, newest, log)
            assert "unusable" not in log, log
            served_content_matches(secondary, restarted, rng)
            assert temp_files(secondary.state, STORE_TEMP) == []
            candidates.update(temp_files(secondary.state, CANDIDATE_TEMP))
            advanced += restarted > round_start
            seen = restarted
            primary.behaviour = NORMAL
            if restarted not in {zone_serial(zone) for zone in primary.versions}:
                # Out of the primary's history: catch up by a full transfer before the next
                # kill, or every later round would be a full transfer killed half-way.
                secondary.refresh()
                secondary.wait_serial(newest, timeout=30)
                seen = newest
            done += 1
        # At the end, catching up still works after all those crashes.
        secondary.refresh()
        secondary.wait_serial(max(versions.by_serial), timeout=20)
        served_content_matches(secondary, max(versions.by_serial), rng)
    finally:
        secondary.stop()
    elapsed = time.monotonic() - started
    print(
        f"crash e2e: {done} kill -9 iterations in {elapsed:.1f} s, {advanced} advanced, "
        f"{len(candidates)} .candidate-* files left behind"
    )
    assert advanced >= 1, "no kill came after a stored transfer: the window misses them"
    assert done >= min(ITERATIONS, 5), f"only {done} iterations fit in {BUDGET} s"


def test_stale_candidate_removed_at_start(
    tmp_path: Path, primary_runner: tuple[TestPrimary, PrimaryThread]
) -> None:
    primary, _ = primary_runner
    secondary = LiveSecondary(tmp_path / "authd", ZONE, primary.endpoint)
    secondary.state.mkdir(parents=True)
    (secondary.state / ".candidate-killed9").write_bytes(b"half a version")  # as a kill leaves
    try:
        secondary.start(refresh=False)
        assert temp_files(secondary.state, CANDIDATE_TEMP) == []
    finally:
        secondary.stop()
