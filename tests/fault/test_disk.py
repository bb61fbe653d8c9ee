"""The disk under a live `authd serve`: full while storing, and a corrupted stored copy.

Disk full: the state dir is a small tmpfs (mounted by the test; skipped with the reason when
mounting is not permitted). After a first version is stored, the tmpfs is filled and the
primary publishes a bigger version: the served zone and the stored copy stay the old ones,
authd_store_failures_total counts it and the status says why. Once space is freed, the next
transfer succeeds. Both ways of storing are covered: a full copy (AXFR) and a journal append
(IXFR).

Corruption: a stored copy damaged while authd was down is ignored at start with a log line,
and the zone is transferred afresh.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.primary import (
    Behaviour,
    LiveSecondary,
    PrimaryThread,
    TestPrimary,
    make_zone,
    test_key,
)

ZONE = "disk.test"
TMPFS_SIZE = 4 << 20


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "state"
    mountpoint.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        reason = f"cannot mount a tmpfs here ({mount.stderr.strip() or mount.returncode})"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def primary() -> Iterator[TestPrimary]:
    test_primary = TestPrimary(
        [make_zone(ZONE + ".", 1, hosts=200)], key=test_key(), behaviour=Behaviour()
    )
    with PrimaryThread(test_primary) as running:
        yield running


@pytest.fixture
def secondary(tmp_path: Path, primary: TestPrimary) -> Iterator[LiveSecondary]:
    live = LiveSecondary(tmp_path / "authd", ZONE, primary.endpoint)
    try:
        yield live
    finally:
        live.stop()


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no room left; the file, to free it later."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while os.write(fd, chunk) == len(chunk):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def digests(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "filler" and path.name != "timers.json"
    }


@pytest.mark.parametrize("command", ["retransfer", "refresh"], ids=["full-copy", "journal"])
def test_disk_full_keeps_old_version_then_recovers(
    tmpfs: Path, primary: TestPrimary, secondary: LiveSecondary, command: str
) -> None:
    secondary.state_dir = tmpfs
    secondary.start()
    secondary.wait_serial(1)
    stored = digests(tmpfs)
    assert stored, "the first version was not stored"
    filler = fill(tmpfs)

    # A version 20x bigger: it cannot fit, as a full copy or as a journal entry.
    primary.versions.append(make_zone(ZONE + ".", 2, hosts=4000))
    failures = secondary.metric("authd_store_failures_total", zone=ZONE)
    secondary.control(command, zone=ZONE)

    def store_failed() -> bool:
        return secondary.metric("authd_store_failures_total", zone=ZONE) > failures

    secondary.wait_for(store_failed, "a counted store failure", timeout=15)
    secondary.wait_for(lambda: bool(secondary.status()["last_error"]), "the status reason")
    error = str(secondary.status()["last_error"])
    assert "serial 2" in error and "space" in error.lower(), error
    assert secondary.served_serial() == 1
    assert digests(tmpfs) == stored, "the stored copy changed on a failed store"

    filler.unlink()
    secondary.refresh()
    secondary.wait_serial(2, timeout=15)
    assert digests(tmpfs) != stored
    # What was stored is what a restart serves.
    secondary.stop()
    primary.behaviour = Behaviour(rcodes={"SOA": 5, "IXFR": 5, "AXFR": 5})
    secondary.start(refresh=False)
    assert secondary.served_serial() == 2


def test_corrupted_stored_copy_is_ignored_and_transferred_again(
    primary: TestPrimary, secondary: LiveSecondary
) -> None:
    secondary.start()
    secondary.wait_serial(1)
    secondary.stop()
    copies = [p for p in secondary.state.rglob("*") if p.is_file() and p.name != "timers.json"]
    assert copies, "nothing stored"
    for copy in copies:
        data = bytearray(copy.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
        copy.write_bytes(bytes(data))
    log_start = len(secondary.log_text())

    secondary.start()
    secondary.wait_serial(1, timeout=15)
    log = secondary.log_text()[log_start:]
    assert "unusable" in log or "ignored" in log, log
    assert secondary.metric("authd_xfr_transfers_total", zone=ZONE, result="updated") >= 1
