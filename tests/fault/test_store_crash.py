"""Crash and disk-full faults at the zone store layer (authd/zone/store.py).

A worker subprocess keeps storing new versions of a zone (journal appends, compactions,
full copies, timers) and is killed with SIGKILL at random moments. After every kill the
store must load either the last version the worker reported done or the one it had
begun, with valid checksums and exactly that version's content, and leave no temp files.

The CI run does a few dozen kills; the long run is a command:
    AUTHD_CRASH_ITERATIONS=1000 .venv/bin/python -m pytest -q tests/fault/test_store_crash.py
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

if __name__ == "__main__":  # the worker runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from authd.zone import names
from authd.zone.snapshot import SOA, Record, Snapshot, SnapshotBuilder
from authd.zone.store import TEMP_SUFFIX, LoadedZone, Store, StoreError, VersionMeta

ORIGIN = names.key_from_text("crash.test.")
HOSTS = 300
A, NS, TXT = 1, 2, 16
TXT_OWNER = b"\x03txt" + ORIGIN
ITERATIONS = int(os.environ.get("AUTHD_CRASH_ITERATIONS", "30"))


# -- the zone as a function of its serial ---------------------------------------------------


def soa(serial: int) -> bytes:
    head = b"\x03ns1" + ORIGIN + b"\x0ahostmaster" + ORIGIN
    return head + struct.pack(">IIIII", serial, 3600, 600, 86400, 300)


def host(i: int) -> bytes:
    label = f"h{i}".encode()
    return bytes([len(label)]) + label + ORIGIN


def host_value(i: int, serial: int) -> bytes:
    """Host i's address at `serial`: the last step (serial >= 2) that changed it."""
    last = serial - ((serial - i) % HOSTS)
    return struct.pack(">I", last if last >= 2 else 0)


def txt(serial: int) -> bytes:
    text = str(serial).encode()
    return bytes([len(text)]) + text


def zone_at(serial: int) -> Snapshot:
    builder = SnapshotBuilder(ORIGIN)
    builder.add(ORIGIN, SOA, 3600, soa(serial))
    builder.add(ORIGIN, NS, 3600, b"\x03ns1" + ORIGIN)
    builder.add(TXT_OWNER, TXT, 60, txt(serial))
    for i in range(HOSTS):
        builder.add(host(i), A, 300, host_value(i, serial))
    return builder.build()


def diff_to(serial: int) -> tuple[list[Record], list[Record]]:
    """The IXFR step from serial - 1 to serial."""
    i = serial % HOSTS
    deleted: list[Record] = [
        (ORIGIN, SOA, 3600, soa(serial - 1)),
        (TXT_OWNER, TXT, 60, txt(serial - 1)),
        (host(i), A, 300, host_value(i, serial - 1)),
    ]
    added: list[Record] = [
        (ORIGIN, SOA, 3600, soa(serial)),
        (TXT_OWNER, TXT, 60, txt(serial)),
        (host(i), A, 300, host_value(i, serial)),
    ]
    return deleted, added


# -- the worker ------------------------------------------------------------------------------


def worker(state_dir: str, seed: int, steps: int) -> None:
    """Store versions forever (bounded): prints "begin N" before and "done N" after each."""
    rng = random.Random(seed)
    with Store(state_dir, compact_max_entries=6) as store:
        loaded = store.load(ORIGIN)
        if loaded is None:
            current = zone_at(1)
            print("begin 1", flush=True)
            store.save_full(current, VersionMeta("AXFR", 1.0))
            store.save_timers(ORIGIN, {"serial": 1})
            print("done 1", flush=True)
        else:
            current = loaded.snapshot
            # A kill between a version and its timers leaves them one behind: catch up,
            # as the secondary does when it restores a zone.
            timers = store.load_timers(ORIGIN)
            if timers is None or timers["serial"] != current.serial:
                store.save_timers(ORIGIN, {"serial": current.serial})
        print(f"ready {current.serial}", flush=True)
        for _ in range(steps):
            serial = current.serial + 1
            print(f"begin {serial}", flush=True)
            if rng.random() < 0.1:
                current = zone_at(serial)
                store.save_full(current, VersionMeta("AXFR", float(serial)))
            else:
                deleted, added = diff_to(serial)
                current = current.apply_diff(deleted, added)
                store.append_diff(
                    ORIGIN,
                    serial - 1,
                    serial,
                    deleted,
                    added,
                    VersionMeta("IXFR", float(serial)),
                    snapshot=current,
                )
            store.save_timers(ORIGIN, {"serial": serial})
            print(f"done {serial}", flush=True)


# -- the crash test ----------------------------------------------------------------------------


def progress(output: str, start: int) -> tuple[int, int]:
    """(last serial done, last serial begun) from the worker's output."""
    done = begun = start
    for line in output.splitlines():
        word, _, value = line.partition(" ")
        if word == "done":
            done = int(value)
        elif word == "begin":
            begun = int(value)
    return done, max(begun, done)


def run_until_killed(state_dir: Path, rng: random.Random) -> tuple[int, int, int]:
    """Start a worker, kill it at a random moment; (done, begun, serial at start)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "worker", str(state_dir), str(rng.randrange(1 << 30)), "400"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while True:
            line = proc.stdout.readline()
            if not line:
                _, err = proc.communicate(timeout=10)
                pytest.fail(f"worker exited before it was ready: {err}")
            lines.append(line)
            if line.startswith("ready"):
                break
        time.sleep(rng.uniform(0.0, 0.08))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # Read through the same buffered file as readline() did: it may hold lines already.
        out = proc.stdout.read()
        err = proc.stderr.read() if proc.stderr is not None else ""
        assert proc.returncode == -signal.SIGKILL, f"worker ended by itself: {err}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    start = int(lines[-1].split()[1])
    done, begun = progress("".join(lines) + out, start)
    return done, begun, start


def test_kill_at_random_moments_leaves_the_old_or_the_new_version(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("AUTHD_CRASH_SEED", "0")) or None)
    state_dir = tmp_path / "state"
    temp_files_seen = torn_tails = stale_journals = 0
    new_versions = 0
    for iteration in range(ITERATIONS):
        done, begun, start = run_until_killed(state_dir, rng)
        zone_dir = next(state_dir.glob("*.zstate"))
        temp_files_seen += bool(list(zone_dir.glob("*" + TEMP_SUFFIX)))
        with Store(state_dir) as store:
            assert not list(zone_dir.glob("*" + TEMP_SUFFIX)), "temp files survived open"
            result = store.try_load(ORIGIN)
            timers = store.load_timers(ORIGIN)
        context = f"iteration {iteration}: done {done}, begun {begun}"
        assert isinstance(result, LoadedZone), f"{context}: {result}"
        serial = result.snapshot.serial
        assert serial in (done, begun), f"{context}: loaded serial {serial}"
        assert list(result.snapshot.records()) == list(zone_at(serial).records()), context
        assert result.meta.received_at == float(serial), context
        assert timers is not None and timers["serial"] in (done, begun), context
        assert isinstance(timers["serial"], int) and timers["serial"] <= serial, context
        for warning in result.warnings:
            assert "torn" in warning or "stale" in warning, f"{context}: {warning}"
            torn_tails += "torn" in warning
            stale_journals += "stale" in warning
        new_versions += serial > start
    print(
        f"{ITERATIONS} kills: {new_versions} made progress; temp files left by "
        f"{temp_files_seen}, torn tails cut {torn_tails}, stale journals {stale_journals}"
    )
    assert new_versions > ITERATIONS // 2  # the kills landed while versions were being stored


# -- disk full on a real small file system ---------------------------------------------------


@pytest.fixture
def small_tmpfs() -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and mount rights; skips otherwise: the unit tests inject
    ENOSPC instead)."""
    mount = shutil.which("mount")
    point = Path(tempfile.mkdtemp(prefix="authd-tmpfs-"))
    if os.geteuid() != 0 or mount is None:
        point.rmdir()
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        point.rmdir()
        print(f"SKIP: cannot mount a tmpfs: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)
        point.rmdir()


def fill(directory: Path) -> Path:
    """Fill the file system with one file until ENOSPC."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        chunk = b"\xff" * 4096
        try:
            while True:
                handle.write(chunk)
        except OSError:
            pass
    return filler


def test_disk_full_keeps_the_stored_version_and_the_next_save_succeeds(
    small_tmpfs: Path,
) -> None:
    state_dir = small_tmpfs / "state"
    with Store(state_dir) as store:
        store.save_full(zone_at(1), VersionMeta("AXFR", 1.0))
        store.save_timers(ORIGIN, {"serial": 1})
        filler = fill(small_tmpfs)
        with pytest.raises(StoreError) as full_copy:
            store.save_full(zone_at(2), VersionMeta("AXFR", 2.0))
        assert full_copy.value.disk_full and "unchanged" in str(full_copy.value)
        deleted, added = diff_to(2)
        with pytest.raises(StoreError) as append:
            store.append_diff(ORIGIN, 1, 2, deleted, added, VersionMeta("IXFR", 2.0))
        assert append.value.disk_full
        with pytest.raises(StoreError) as timers:
            store.save_timers(ORIGIN, {"serial": 2})
        assert timers.value.disk_full
        zone_dir = store.zone_dir(ORIGIN)
        assert not list(zone_dir.glob("*" + TEMP_SUFFIX))
    with Store(state_dir) as store:
        result = store.try_load(ORIGIN)
        assert isinstance(result, LoadedZone) and result.snapshot.serial == 1
        assert store.load_timers(ORIGIN) == {"serial": 1}
        filler.unlink()  # space returns
        store.append_diff(ORIGIN, 1, 2, deleted, added, VersionMeta("IXFR", 2.0))
        store.save_full(zone_at(3), VersionMeta("AXFR", 3.0))
        store.save_timers(ORIGIN, {"serial": 3})
    with Store(state_dir) as store:
        result = store.try_load(ORIGIN)
        assert isinstance(result, LoadedZone)
        assert list(result.snapshot.records()) == list(zone_at(3).records())
        assert store.load_timers(ORIGIN) == {"serial": 3}


def test_the_zone_model_is_consistent() -> None:
    """The worker's diffs lead from zone_at(n - 1) to zone_at(n) (guards the test itself)."""
    current = zone_at(1)
    for serial in range(2, HOSTS + 40):
        current = current.apply_diff(*diff_to(serial))
    assert list(current.records()) == list(zone_at(HOSTS + 39).records())


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
