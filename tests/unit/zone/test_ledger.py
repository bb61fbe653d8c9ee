"""Tests of zone/ledger.py: the chain verifies, and every kind of damage is found and named."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from authd.zone import ledger
from authd.zone.ledger import Ledger, LedgerError

NOW = 1_765_152_000.0


def fill(path: Path, count: int, **options: int) -> Ledger:
    book = Ledger(path, NOW, **options)
    for i in range(count):
        event = ("received", "published", "held", "approved")[i % 4]
        book.append(event, 1000 + i, f"{i:096x}", "AXFR from 192.0.2.53@53", "", NOW + i)
    return book


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_fifty_entries_chain_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "example.com.ledger"
    fill(path, 50)
    result = ledger.verify(path)
    assert result.ok and result.entries == 50 and result.anchor == 1, result.problem
    entries = [entry for _, _, entry in ledger.read(path)]
    assert [e.seq for e in entries] == list(range(1, 51))
    assert entries[0].prev == ledger.GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(entries))


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "z.ledger"
    fill(path, 3)
    book = Ledger(path, NOW)
    entry = book.append("pinned", 1001, "ab", "rollback", "operator", NOW + 10)
    assert entry.seq == 4
    assert ledger.verify(path).ok


def test_a_changed_entry_is_named(tmp_path: Path) -> None:
    path = tmp_path / "z.ledger"
    fill(path, 10)
    content = lines(path)
    fields = json.loads(content[6])
    fields["serial"] += 1  # still valid JSON: only the hash can tell
    content[6] = (json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n").encode()
    path.write_bytes(b"".join(content))
    result = ledger.verify(path)
    assert not result.ok and result.entries == 6
    assert result.problem == f"{path}:7: entry 7 was changed (hash mismatch)"


def test_one_flipped_byte_anywhere_is_found(tmp_path: Path) -> None:
    path = tmp_path / "z.ledger"
    fill(path, 8)
    original = path.read_bytes()
    for offset in range(0, len(original) - 1, 37):  # every 37th byte, newlines excluded
        if original[offset] == ord("\n"):
            continue
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        result = ledger.verify(path)
        line = original[:offset].count(b"\n") + 1
        assert not result.ok, offset
        assert result.problem.startswith(f"{path}:{line}:"), (offset, result.problem)
    path.write_bytes(original)
    assert ledger.verify(path).ok


def test_a_removed_entry_is_named(tmp_path: Path) -> None:
    path = tmp_path / "z.ledger"
    fill(path, 10)
    content = lines(path)
    del content[4]
    path.write_bytes(b"".join(content))
    assert ledger.verify(path).problem == (
        f"{path}:5: entry 6 follows entry 4 (entries 5..5 missing)"
    )


def test_entries_cut_from_the_end_need_the_recorded_head(tmp_path: Path) -> None:
    path = tmp_path / "z.ledger"
    book = fill(path, 10)
    head = (book.last_seq, book.last_hash)
    path.write_bytes(b"".join(lines(path)[:8]))
    assert ledger.verify(path).ok  # the chain alone cannot tell
    result = ledger.verify(path, head)
    assert not result.ok and result.problem == f"{path}: ends at entry 8, but entry 10 was written"


def test_a_torn_last_line_is_reported_then_repaired_on_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "z.ledger"
    fill(path, 5)
    with path.open("ab") as handle:
        handle.write(b'{"digest":"ab","event":"publi')
    result = ledger.verify(path)
    assert not result.ok and result.problem == f"{path}:6: truncated entry (a torn last line)"
    book = Ledger(path, NOW + 100)
    assert book.last_seq == 6
    result = ledger.verify(path)
    assert result.ok and result.entries == 6
    repaired = list(ledger.read(path))[-1][2]
    assert repaired.event == "repaired" and "29 bytes" in repaired.reason
    assert repaired.time == NOW + 100


def test_rotation_bounds_the_size_and_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "z.ledger"
    fill(path, 60, max_bytes=4000, keep=3)
    kept = ledger.files(path)
    assert len(kept) == 3 and kept[-1] == path
    assert all(p.stat().st_size <= 4000 for p in kept)
    result = ledger.verify(path)
    assert result.ok, result.problem
    assert result.anchor > 1 and result.anchor + result.entries - 1 == 60
    book = Ledger(path, NOW, max_bytes=4000, keep=3)  # reopened right after a rotation or not
    assert book.append("unpinned", None, "", "operator", "", NOW).seq == 61
    assert ledger.verify(path).ok


def test_unknown_events_are_refused(tmp_path: Path) -> None:
    book = Ledger(tmp_path / "z.ledger", NOW)
    with pytest.raises(LedgerError, match="unknown ledger event 'deleted'"):
        book.append("deleted", 1, "", "", "", NOW)


WRITER = """
import sys
from pathlib import Path
from authd.zone.ledger import Ledger
book = Ledger(Path(sys.argv[1]), 1.0, max_bytes=20000, keep=3)
print("open", flush=True)
for i in range(1_000_000):
    book.append("received", i, "ab" * 48, "AXFR from 192.0.2.53@53", "", 1.0 + i)
"""


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_a_verifiable_ledger(tmp_path: Path) -> None:
    path = tmp_path / "z.ledger"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    for round_ in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline() == b"open\n"
            time.sleep(0.05 + 0.037 * round_)  # somewhere in the middle of an append, or not
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=10)
        Ledger(path, NOW, max_bytes=20000, keep=3)  # what a restart does: repair the tail
        result = ledger.verify(path)
        assert result.ok, (round_, result.problem)
    assert result.anchor + result.entries - 1 > 6  # entries were really written meanwhile
