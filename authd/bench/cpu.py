"""CPU time of a server's process tree, from /proc (Linux).

A server's cost is the utime+stime of every process in its tree (NSD forks its servers, authd
its workers; Knot is one process with many threads, which /proc/<pid>/stat already sums).
cutime+cstime are added too so a child reaped during the run is not lost; a live child's time
is never in its parent's cutime, so nothing is counted twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    utime: int  # clock ticks
    stime: int
    cutime: int
    cstime: int
    state: str = "R"  # "Z" for a zombie: exited, waiting to be reaped

    @property
    def ticks(self) -> int:
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line (proc(5)).

    The command name (field 2) is in parentheses and may itself contain spaces and
    parentheses, so the fields after it are found from the last ')'.
    """
    head, sep, tail = text.rpartition(")")
    if not sep:
        raise ValueError(f"not a /proc stat line: {text[:60]!r}")
    pid = int(head.split("(", 1)[0])
    fields = tail.split()
    # fields[0] is field 3 (state); ppid is field 4, utime..cstime are fields 14..17.
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
        state=fields[0],
    )


def alive(pid: int, proc: Path = PROC) -> bool:
    """True while pid exists and is not a zombie."""
    stat = read_stat(pid, proc)
    return stat is not None and stat.state != "Z"


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def all_stats(proc: Path = PROC) -> list[ProcStat]:
    stats: list[ProcStat] = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name), proc)
            if stat is not None:
                stats.append(stat)
    return stats


def tree(root: int, stats: list[ProcStat]) -> list[ProcStat]:
    """root and all its descendants among stats."""
    children: dict[int, list[ProcStat]] = {}
    by_pid: dict[int, ProcStat] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
        by_pid[stat.pid] = stat
    if root not in by_pid:
        return []
    out: list[ProcStat] = []
    pending = [by_pid[root]]
    while pending:
        stat = pending.pop()
        out.append(stat)
        pending.extend(children.get(stat.pid, []))
    return out


def tree_pids(root: int, proc: Path = PROC) -> list[int]:
    return [stat.pid for stat in tree(root, all_stats(proc))]


def ticks_per_second() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def tree_cpu_seconds(root: int, proc: Path = PROC) -> float:
    """CPU seconds (user + system) used so far by root's process tree."""
    total = sum(stat.ticks for stat in tree(root, all_stats(proc)))
    return total / ticks_per_second()


# Below this share of its cores a server was waiting for queries, not answering them.
SATURATED = 0.9


def utilization(cpu_seconds: float, wall_seconds: float, cores: int) -> float:
    """The share of `cores` a server kept busy over `wall_seconds` (0.0 when unknown)."""
    if wall_seconds <= 0 or cores <= 0:
        return 0.0
    return cpu_seconds / (wall_seconds * cores)


def saturation_note(
    cpu_seconds: float, wall_seconds: float, cores: int, client_share: float | None = None
) -> str | None:
    """A warning when a server was not kept busy during a saturation run, else None.

    qps per CPU-second is a server's cost per query only when its cores are busy: a server
    that sleeps between queries wakes up more often per query (epoll_wait, a recvmmsg that
    returns one datagram), so a fast server held back by a client too slow for it looks
    costlier than it is, while a slower one, saturated, shows its best: a ratio between the
    two is then too kind to the slower one. `client_share` (the load client's busy share of
    its cores, when known) tells which side held it back.
    """
    share = utilization(cpu_seconds, wall_seconds, cores)
    if share <= 0 or share >= SATURATED:
        return None
    if client_share is None:
        cause = "a client too slow for it, or cores shared with other load"
    elif client_share >= SATURATED:
        cause = f"the client was the limit, busy {client_share:.0%}"
    else:
        cause = (
            f"the client was busy {client_share:.0%} only: cores shared with other load, "
            "or too few queries in flight"
        )
    return (
        f"server busy {share:.0%} of {cores} core(s): not saturated ({cause}), "
        "so its qps/CPU-s is not its best"
    )
