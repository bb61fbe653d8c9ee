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
