"""Query latency while a large signed zone is validated, against idle (issue 4).

Used by `python -m authd.bench.measure_validation --with-load`, or alone on a signed zone file:

    .venv/bin/python -m authd.bench.measure_validation_load --zone signed.zone --origin bench.test.

authd (`authd serve`, one worker) serves a small generated zone; a fixed-rate load (the bench
drivers: dnsperf when installed, the "mixed" query mix) measures p50/p99 for --load-seconds:
1. idle;
2. while the large zone is validated the way the secondary does it: the zone written as a
   candidate file in the store's full-copy format (store.encode_full) and handed to
   ValidationPool.verify_file (one spawned process at nice 10). Validations run back to back
   until the window ends, so one is in flight the whole time (the report says how much of the
   window was covered and how much CPU the pool got); then the pool process is terminated.
   Placement "server": the pool on authd's core (what an authd pinned with taskset gives its
   pool: only nice separates validation from serving); "all": unpinned, as an unpinned authd;
   "server-schedidle" (opt-in): on authd's core and under SCHED_IDLE as well, to see whether
   that scheduling class would protect latency better than nice;
3. idle again, to see the noise of the machine.
The client runs on the first core, authd on the next (bench.runner.default_cpus).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authd.bench import cpu, mix, peers, runner, zonegen
from authd.bench.results import LoadResult
from authd.zone import names
from authd.zone.journal import VersionMeta
from authd.zone.loader import load_zone_file
from authd.zone.snapshot import Snapshot
from authd.zone.store import encode_full
from authd.zone.verify import Policy, ValidationPool

SERVED_ORIGIN = "load.test."
PLACEMENTS = ("server", "all")
# Opt-in: on authd's core and also SCHED_IDLE (not what ValidationPool does; an experiment).
EXTRA_PLACEMENTS = ("server-schedidle",)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LoadPlan:
    rate: float = 20_000.0
    seconds: float = 10.0
    names: int = 1000
    nice: int = 10
    placements: tuple[str, ...] = PLACEMENTS
    lead: float = 1.0  # seconds the validation runs before the window opens
    max_validations: int = 50  # back-to-back validations per window, at most


@dataclass(frozen=True)
class Validations:
    """The validations run during one window, as (start, end) monotonic times."""

    intervals: tuple[tuple[float, float | None], ...]  # end None: still running at the end
    verdicts: tuple[str, ...]  # "ok" or the rejection / error, per finished validation
    pool_cpu: float  # CPU seconds the pool process used inside the window


@dataclass(frozen=True)
class Window:
    label: str
    load: LoadResult
    start: float = 0.0
    end: float = 0.0
    validations: Validations | None = None


@dataclass
class _Loop:
    """Shared between the validating thread and the caller."""

    stop: threading.Event = field(default_factory=threading.Event)
    intervals: list[tuple[float, float | None]] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)


# -- pure -----------------------------------------------------------------------------------


def coverage(intervals: Sequence[tuple[float, float | None]], start: float, end: float) -> float:
    """The fraction of [start, end] during which some validation was in flight."""
    if end <= start:
        return 0.0
    clipped = sorted(
        (max(a, start), min(end if b is None else b, end))
        for a, b in intervals
        if (b is None or b > start) and a < end
    )
    covered, reach = 0.0, start
    for a, b in clipped:
        if b > reach:
            covered += b - max(a, reach)
            reach = b
    return covered / (end - start)


def baseline_p99(windows: Sequence[Window]) -> float | None:
    """The lowest idle p99: the ratio against it is the least flattering one."""
    idle = [w.load.p99_ms for w in windows if w.validations is None and w.load.p99_ms]
    return min(idle) if idle else None


def window_line(window: Window, baseline: float | None) -> str:
    load = window.load
    p50, p99 = load.p50_ms, load.p99_ms
    line = (
        f"{window.label:<44} {load.qps:>8,.0f} qps  lost {load.lost:>5}  "
        f"p50 {p50 if p50 is not None else float('nan'):.3f} ms  "
        f"p99 {p99 if p99 is not None else float('nan'):.3f} ms"
    )
    if window.validations is not None and baseline and p99 is not None:
        v = window.validations
        share = coverage(v.intervals, window.start, window.end)
        line += (
            f"  p99/idle {p99 / baseline:.2f}x  validation in flight {share:.0%} of the window,"
            f" pool CPU {v.pool_cpu:.2f} s, finished {len(v.verdicts)}"
        )
        failed = [verdict for verdict in v.verdicts if verdict != "ok"]
        if failed:
            line += f" (NOT ok: {failed[0]})"
    if not load.held_rate:
        line += "  * client did not hold the rate"
    return line


# -- processes ------------------------------------------------------------------------------


def write_candidate(snapshot: Snapshot, path: Path) -> Path:
    """The snapshot in the store's full-copy format, as the secondary hands it to the pool."""
    header, payload = encode_full(snapshot, VersionMeta("candidate", time.time()), 0)
    with path.open("wb") as handle:
        handle.write(header)
        handle.write(payload)
    return path


def _validate_repeatedly(
    pool: ValidationPool, path: Path, origin: bytes, loop: _Loop, limit: int
) -> None:
    """Full validations of the candidate, back to back, until told to stop (in a thread)."""

    async def once() -> str:
        verdict = await pool.verify_file(path, origin, Policy(), time.time(), True, False)
        return "ok" if verdict.ok else verdict.reason

    for _ in range(limit):
        if loop.stop.is_set():
            return
        started = time.monotonic()
        loop.intervals.append((started, None))
        try:
            outcome = asyncio.run(once())
        except Exception as error:  # the pool terminated under it at the end of the window
            outcome = f"{type(error).__name__}: {error}"
            if loop.stop.is_set():
                return  # still in flight when the window closed: the interval stays open
        loop.intervals[-1] = (started, time.monotonic())
        loop.verdicts.append(outcome)


def _pool_cpu() -> float:
    """CPU seconds of this process's multiprocessing children (the validation pool)."""
    hz = cpu.ticks_per_second()
    stats = (cpu.read_stat(child.pid) for child in multiprocessing.active_children() if child.pid)
    return sum(stat.utime + stat.stime for stat in stats if stat is not None) / hz


def _stop_pool(pool: ValidationPool) -> None:
    """Terminate the pool's process by PID (a running validation cannot be cancelled)."""
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(timeout=10)
    pool.close()


def _spawn_pool(
    plan: LoadPlan, cpus: set[int] | None, warmup: Path, origin: bytes, sched_idle: bool
) -> ValidationPool:
    """A pool whose process is already running (spawned by a small validation), on cpus."""
    previous = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)  # the spawned process inherits the mask
    try:
        pool = ValidationPool(processes=1, nice=plan.nice)
        asyncio.run(pool.verify_file(warmup, origin, Policy(), time.time(), False, False))
    finally:
        os.sched_setaffinity(0, previous)
    if sched_idle:
        for child in multiprocessing.active_children():
            if child.pid:
                os.sched_setscheduler(child.pid, os.SCHED_IDLE, os.sched_param(0))
    return pool


class _Session:
    """authd serving the small zone, and the load run against it."""

    def __init__(self, workdir: Path, plan: LoadPlan) -> None:
        self.plan = plan
        zone = zonegen.write_zone(workdir / "served.zone", SERVED_ORIGIN, plan.names)
        server_cpus, client_cpus = runner.default_cpus(1)
        self.server_cpus = set(server_cpus)
        self.bench = runner.Plan(
            mixes=("mixed",),
            servers=("authd",),
            workdir=workdir,
            server_cpus=server_cpus,
            client_cpus=client_cpus,
        )
        queries = mix.generate(
            mix.inventory_from_file(zone, SERVED_ORIGIN), mix.PRESETS["mixed"].spec, 100_000
        )
        self.work = runner.Workload(queries, mix.write_dnsperf_file(queries, workdir / "q.txt"))
        self.driver = runner.choose_driver(self.bench, queries)
        self.zone = zone
        settings = peers.PeerSettings(
            SERVED_ORIGIN, zone, "127.0.0.1", peers.free_port("127.0.0.1"), 1, workdir / "authd"
        )
        self.server = peers.start("authd", settings, self.server_cpus)

    def load(self, seconds: float) -> tuple[LoadResult, float, float]:
        start = time.monotonic()
        result = runner.load(
            self.driver,
            self.bench,
            self.work,
            self.server.host,
            self.server.port,
            seconds,
            self.plan.rate,
        )
        return result, start, time.monotonic()


def _busy_window(
    session: _Session, placement: str, candidate: tuple[Path, bytes], warmup: tuple[Path, bytes]
) -> Window:
    plan = session.plan
    cpus = session.server_cpus if placement.startswith("server") else None
    sched_idle = placement.endswith("schedidle")
    pool = _spawn_pool(plan, cpus, *warmup, sched_idle)
    loop = _Loop()
    worker = threading.Thread(
        target=_validate_repeatedly,
        args=(pool, *candidate, loop, plan.max_validations),
        daemon=True,
    )
    try:
        worker.start()
        time.sleep(plan.lead)
        before = _pool_cpu()
        result, start, end = session.load(plan.seconds)
        used = _pool_cpu() - before
        loop.stop.set()
    finally:
        loop.stop.set()
        _stop_pool(pool)
        worker.join(timeout=30)
    validations = Validations(tuple(loop.intervals), tuple(loop.verdicts), used)
    label = f"validating, pool on {'authd core' if cpus else 'any core'}"
    label += ", SCHED_IDLE" if sched_idle else ""
    return Window(label, result, start, end, validations)


def measure(snapshot: Snapshot, workdir: Path, plan: LoadPlan, progress: Progress) -> list[Window]:
    """Idle, busy (per placement) and idle again, against one authd."""
    workdir.mkdir(parents=True, exist_ok=True)
    progress(f"writing the candidate ({snapshot.record_count} records) in the store's format")
    candidate = write_candidate(snapshot, workdir / ".candidate-bench")
    session = _Session(workdir, plan)
    try:
        small = load_zone_file(session.zone, SERVED_ORIGIN)
        warmup = write_candidate(small, workdir / ".candidate-warmup")
        progress(f"authd on {sorted(session.server_cpus)}, driver {session.driver}")
        session.load(min(2.0, plan.seconds))  # warm-up
        windows = [Window("idle", *session.load(plan.seconds))]
        for placement in plan.placements:
            progress(f"load at {plan.rate:,.0f} qps during validation ({placement})")
            busy = _busy_window(
                session, placement, (candidate, snapshot.origin), (warmup, small.origin)
            )
            windows.append(busy)
        windows.append(Window("idle again", *session.load(plan.seconds)))
    finally:
        session.server.stop()
        candidate.unlink(missing_ok=True)
    return windows


def report(windows: Sequence[Window], printer: Progress = print) -> None:
    baseline = baseline_p99(windows)
    for window in windows:
        printer(window_line(window, baseline))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = LoadPlan()
    parser.add_argument("--load-rate", type=float, default=defaults.rate, help="qps")
    parser.add_argument("--load-seconds", type=float, default=defaults.seconds)
    parser.add_argument(
        "--pool-cpus",
        default=",".join(defaults.placements),
        help="where the validation pool runs: server (authd's core), all (unpinned), "
        "server-schedidle (authd's core, SCHED_IDLE too)",
    )


def plan_from(args: argparse.Namespace) -> LoadPlan:
    placements = tuple(p for p in args.pool_cpus.split(",") if p)
    unknown = set(placements) - set(PLACEMENTS) - set(EXTRA_PLACEMENTS)
    if unknown:
        raise SystemExit(f"--pool-cpus: unknown placement {sorted(unknown)}")
    return LoadPlan(
        rate=args.load_rate, seconds=min(args.load_seconds, 60.0), placements=placements
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zone", type=Path, required=True, help="a signed zone file")
    parser.add_argument("--origin", required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/authd-validation-load"))
    add_arguments(parser)
    args = parser.parse_args()
    snapshot = load_zone_file(args.zone, args.origin)
    print(f"{names.to_text(snapshot.origin)}: {snapshot.record_count} records")
    report(measure(snapshot, args.workdir, plan_from(args), print))


if __name__ == "__main__":
    main()
