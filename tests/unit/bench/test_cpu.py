"""CPU accounting of a process tree from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from authd.bench import cpu


def test_parse_stat_survives_odd_command_names() -> None:
    # Field 2 may hold spaces and parentheses; utime..cstime are fields 14..17.
    line = "4242 (we ird) (name)) S 17 4242 4242 0 -1 4194560 100 0 0 0 123 45 6 7 20 0 3 0 99"
    stat = cpu.parse_stat(line)
    assert (stat.pid, stat.ppid) == (4242, 17)
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime) == (123, 45, 6, 7)
    assert stat.ticks == 181
    assert stat.state == "S"
    with pytest.raises(ValueError):
        cpu.parse_stat("garbage without parentheses")


def test_tree_follows_parents_only() -> None:
    def stat(pid: int, ppid: int, ticks: int) -> cpu.ProcStat:
        return cpu.ProcStat(pid, ppid, ticks, 0, 0, 0)

    stats = [stat(1, 0, 1), stat(10, 1, 2), stat(11, 10, 4), stat(12, 11, 8), stat(20, 1, 16)]
    assert sorted(s.pid for s in cpu.tree(10, stats)) == [10, 11, 12]
    assert sum(s.ticks for s in cpu.tree(10, stats)) == 14
    assert cpu.tree(99, stats) == []


def test_own_stat_matches_os_times() -> None:
    stat = cpu.read_stat(os.getpid())
    assert stat is not None and stat.pid == os.getpid()
    times = os.times()
    hz = cpu.ticks_per_second()
    assert abs(stat.utime / hz - times.user) < 0.05
    assert abs(stat.stime / hz - times.system) < 0.05


def test_tree_cpu_counts_a_busy_child() -> None:
    # A shell whose child burns ~0.4 s of CPU: the time shows up under the shell's tree.
    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    shell = subprocess.Popen(
        ["/bin/sh", "-c", f'"{sys.executable}" -c "$0"; sleep 5', burn],
    )
    try:
        deadline = time.monotonic() + 10
        used = 0.0
        while time.monotonic() < deadline:
            used = cpu.tree_cpu_seconds(shell.pid)
            if used >= 0.35:
                break
            time.sleep(0.05)
        assert 0.35 <= used < 2.0
        assert len(cpu.tree_pids(shell.pid)) >= 1
    finally:
        shell.kill()
        shell.wait()


def test_tree_cpu_counts_busy_threads_of_a_process() -> None:
    # Knot is one process with many threads: a busy non-main thread must be counted.
    burn = (
        "import threading, time\n"
        "def spin():\n"
        "    end = time.thread_time() + 0.4\n"
        "    while time.thread_time() < end: pass\n"
        "t = threading.Thread(target=spin); t.start(); t.join(); time.sleep(5)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", burn])
    try:
        deadline = time.monotonic() + 10
        used = 0.0
        while time.monotonic() < deadline:
            used = cpu.tree_cpu_seconds(process.pid)
            if used >= 0.35:
                break
            time.sleep(0.05)
        assert 0.35 <= used < 2.0
    finally:
        process.kill()
        process.wait()


def test_utilization_and_saturation_note() -> None:
    assert cpu.utilization(9.5, 10.0, 1) == pytest.approx(0.95)
    assert cpu.utilization(9.0, 10.0, 2) == pytest.approx(0.45)
    assert cpu.utilization(1.0, 0.0, 1) == 0.0 and cpu.utilization(1.0, 10.0, 0) == 0.0
    # Busy enough: no note; held back by the client: a note that says how busy it was.
    assert cpu.saturation_note(9.5, 10.0, 1) is None
    note = cpu.saturation_note(8.9, 10.0, 1)
    assert note is not None and "89%" in note and "not saturated" in note
    assert cpu.saturation_note(18.5, 10.0, 2) is None
    assert cpu.saturation_note(9.0, 10.0, 2) is not None
    # The client's share says which side held the server back.
    limited = cpu.saturation_note(5.0, 10.0, 1, client_share=0.97)
    assert limited is not None and "the client was the limit, busy 97%" in limited
    shared = cpu.saturation_note(3.0, 10.0, 1, client_share=0.3)
    assert shared is not None and "client was busy 30% only" in shared
    assert cpu.saturation_note(9.6, 10.0, 1, client_share=0.3) is None
    # Unknown cores or no time: nothing can be said.
    assert cpu.saturation_note(5.0, 10.0, 0) is None
    assert cpu.saturation_note(0.0, 10.0, 1) is None
