"""`authd bench zones`: many small zones on one secondary, authd against knotd and NSD.

For each server under test, one after the other: a fresh knotd primary (the harness's zones,
TSIG, NOTIFY to the secondary) and the server as its secondary for N zones, then the phases

    load     first load of every zone by AXFR: wall time until every zone answers its SOA with
             the primary's serial, and the server's CPU seconds until then
    idle     CPU seconds over --idle-seconds once everything is loaded
    memory   summed PSS of the server's processes, and per zone
    qps      qps per server CPU-second on a mixed load spread over all zones (the `run`
             bench's generator and CPU accounting)
    storm    every zone's serial bumped on the primary at once (zone files rewritten, one
             `knotc zone-reload`): time until every zone serves it, zones missed
    add      --add zones added to the secondary's config and reloaded: time until served,
             queries to the other zones failed meanwhile; then removed again the same way
    restart  restart from the stored copies with the primary up (SOA queries the primary sees
             while every zone's timers are fresh, from knotd's mod-stats), and with the
             primary down (time until every zone answers)

Every phase is bounded by --timeout: a server that never gets there is reported as
"timed out: X of N served after T s", and phases that need a full load are skipped with
the reason. Processes are stopped by PID (SIGTERM, grace, SIGKILL); the temporary
directory is removed unless --workdir is given.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authd.bench import cpu, mix, peers, runner
from authd.bench import zones_config as zc
from authd.bench.measure_memory import tree_pss
from authd.bench.zones_probe import (
    LoopResult,
    WaitResult,
    not_served,
    query_loop,
    serves_any,
    serves_serial,
    wait_until,
)
from authd.bench.zones_procs import Primary, Secondary, SetupError, run_command
from authd.bench.zones_report import ChangeResult, ServerResult

PHASES = ("load", "idle", "memory", "qps", "storm", "add", "restart")
SKIPPABLE = PHASES[1:]
MIX = mix.MixSpec({"hits": 70.0, "nxdomain": 20.0, "nodata": 10.0})
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    count: int
    servers: tuple[str, ...]
    workdir: Path
    workers: int = 1
    idle_seconds: float = 60.0
    timeout: float = 300.0  # per phase
    add: int = 100
    skip: frozenset[str] = frozenset()
    qps_seconds: float = 5.0
    queries: int = 100_000
    probe_rate: float = 4000.0  # SOA sampling, queries per second at most
    loop_rate: float = 500.0  # the other-zones query loop during add/remove
    restart_window: float = 15.0
    grace: float = 10.0  # SIGTERM -> SIGKILL
    host: str = "127.0.0.1"
    server_cpus: frozenset[int] = frozenset()
    client_cpus: frozenset[int] = frozenset()
    settle: float = 2.0  # after the load, before the idle measure starts
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("--count must be at least 1")
        unknown = set(self.servers) - set(zc.SERVER_KINDS)
        if unknown:
            raise ValueError(
                f"unknown servers {sorted(unknown)}; known: {', '.join(zc.SERVER_KINDS)}"
            )
        bad = set(self.skip) - set(SKIPPABLE)
        if bad:
            raise ValueError(
                f"unknown phases {sorted(bad)} in --skip; known: {', '.join(SKIPPABLE)}"
            )
        for name in ("idle_seconds", "timeout", "qps_seconds", "restart_window", "grace"):
            value = getattr(self, name)
            if not 0 < value <= 3600:
                raise ValueError(f"{name.replace('_', '-')} must be in (0, 3600] s, got {value}")
        if self.add < 0:
            raise ValueError("--add must not be negative")


def zone_mix(zones: Sequence[str], count: int, seed: int = 1) -> list[mix.Query]:
    """About `count` queries (at least one per zone) spread evenly over every zone, in the
    proportions of the `mixed` preset, shuffled; deterministic for a seed."""
    per_zone = max(1, count // max(1, len(zones)))
    queries: list[mix.Query] = []
    for index, zone in enumerate(zones):
        queries += mix.generate(zc.inventory(zone), MIX, per_zone, seed + index)
    random.Random(seed).shuffle(queries)
    return queries


def _wait(
    plan: Plan,
    port: int,
    zones: Sequence[str],
    check: Callable[..., bool],
    started: float,
    alive: Callable[[], bool] | None = None,
    host: str | None = None,
) -> WaitResult:
    return asyncio.run(
        wait_until(
            host or plan.host,
            port,
            zones,
            check,
            plan.timeout,
            started=started,
            rate=plan.probe_rate,
            alive=alive,
        )
    )


async def _change(
    plan: Plan,
    secondary: Secondary,
    zones_after: Sequence[str],
    changed: Sequence[str],
    check: Callable[..., bool],
    others: Sequence[str],
) -> ChangeResult:
    """Rewrite the config, reload, wait for the changed zones, with a query loop on others."""
    stop = asyncio.Event()
    loop_task = asyncio.create_task(
        query_loop(plan.host, secondary.port, others, plan.loop_rate, stop)
    )
    try:
        await asyncio.sleep(0.5)
        secondary.write_config(zones_after)
        began = time.monotonic()
        ok, output = await run_command(secondary.reload_argv(), plan.timeout)
        reload_seconds = time.monotonic() - began
        wait = await wait_until(
            plan.host,
            secondary.port,
            changed,
            check,
            plan.timeout,
            started=began,
            rate=plan.probe_rate,
            alive=secondary.alive,
        )
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        loop_result: LoopResult = await loop_task
    return ChangeResult(len(changed), wait, reload_seconds, ok, output, loop_result)


def run_server(kind: str, plan: Plan, progress: Progress) -> ServerResult:
    """Every phase for one server; processes are always stopped before returning."""
    result = ServerResult(kind, plan.count)
    base = plan.workdir / kind
    zones = zc.zone_names(plan.count)
    extra = zc.zone_names(plan.add, start=plan.count) if "add" not in plan.skip else []
    zone_dir = base / "primary" / "zones"
    progress(f"{kind}: writing {len(zones) + len(extra):,} zone files")
    zc.write_zones(zone_dir, [*zones, *extra], 1)
    serial = 1
    port = peers.free_port(plan.host)
    settings = zc.SecondarySettings(
        base / "secondary", zc.Address(plan.host, port), zc.Address(plan.host, 0), plan.workers
    )
    client = set(plan.client_cpus)
    primary = Primary(
        base / "primary", zone_dir, [*zones, *extra], settings.listen, plan.host, client
    )
    settings = zc.SecondarySettings(
        settings.workdir, settings.listen, primary.address, plan.workers
    )
    secondary = Secondary(kind, settings, set(plan.server_cpus))
    secondary.write_config(zones)

    def stopped_secondary() -> None:
        outcome = secondary.stop(plan.grace)
        if outcome is not None:
            result.stops.append(outcome)

    try:
        progress(f"{kind}: starting the knotd primary with {len(zones) + len(extra):,} zones")
        began = time.monotonic()
        primary.start()
        ready = _wait(
            plan,
            primary.address.port,
            [*zones, *extra],
            serves_serial(1),
            began,
            lambda: primary.server is not None and primary.server.process.poll() is None,
        )
        if not ready.complete:
            raise SetupError(
                f"the knotd primary served {ready.passed} of {ready.total} zones "
                f"after {ready.seconds:.0f} s"
            )
        result.primary_ready_seconds = ready.seconds

        # --- load ---
        progress(f"{kind}: first load of {plan.count:,} zones (timeout {plan.timeout:g} s)")
        counted = primary.query_types()
        began = time.monotonic()
        server = secondary.start()
        result.load = _wait(plan, port, zones, serves_serial(serial), began, secondary.alive)
        result.load_cpu_seconds = cpu.tree_cpu_seconds(server.pid)
        result.primary_queries["load"] = _delta(counted, primary.query_types())
        secondary.pin()
        if result.load.stopped:
            result.notes.append("exited during the load:\n" + secondary.log_tail())
            return result
        loaded = result.load.complete
        if not loaded:
            why = f"first load incomplete ({result.load.passed} of {result.load.total})"
            for phase in ("qps", "storm", "add"):
                result.skipped[phase] = why

        # --- idle ---
        if "idle" not in plan.skip:
            time.sleep(plan.settle)
            secondary.pin()
            progress(f"{kind}: idle CPU over {plan.idle_seconds:g} s")
            before = cpu.tree_cpu_seconds(server.pid)
            time.sleep(plan.idle_seconds)
            result.idle_cpu_seconds = cpu.tree_cpu_seconds(server.pid) - before
            result.idle_seconds = plan.idle_seconds
            if not loaded:
                result.notes.append("idle CPU measured while the first load was unfinished")

        # --- memory ---
        if "memory" not in plan.skip:
            result.pss_bytes, result.processes = tree_pss(server.pid)

        # --- qps ---
        if "qps" not in plan.skip and loaded:
            progress(f"{kind}: query mix over all zones, {plan.qps_seconds:g} s")
            _measure_qps(kind, plan, result, zones, port, server.pid, progress)

        # --- storm ---
        if "storm" not in plan.skip and loaded:
            progress(f"{kind}: NOTIFY storm: bumping {len(zones) + len(extra):,} serials")
            zc.write_zones(zone_dir, [*zones, *extra], serial + 1)
            counted = primary.query_types()
            began = time.monotonic()
            primary.control("zone-reload")
            result.storm_reload_seconds = time.monotonic() - began
            serial += 1
            result.storm = _wait(plan, port, zones, serves_serial(serial), began, secondary.alive)
            result.primary_queries["storm"] = _delta(counted, primary.query_types())

        # --- add / remove ---
        if "add" not in plan.skip and loaded and extra:
            progress(f"{kind}: adding {len(extra):,} zones at runtime")
            result.add = asyncio.run(
                _change(plan, secondary, [*zones, *extra], extra, serves_serial(serial), zones)
            )
            progress(f"{kind}: removing {len(extra):,} zones at runtime")
            result.remove = asyncio.run(_change(plan, secondary, zones, extra, not_served, zones))

        # --- restart ---
        if "restart" not in plan.skip:
            _restart(kind, plan, result, primary, secondary, zones, serial, progress)
    except SetupError as error:
        result.notes.append(f"stopped: {error}")
    finally:
        if secondary.server is not None:
            stopped_secondary()
        primary.stop(plan.grace)
    return result


def _measure_qps(
    kind: str,
    plan: Plan,
    result: ServerResult,
    zones: Sequence[str],
    port: int,
    pid: int,
    progress: Progress,
) -> None:
    queries = zone_mix(zones, plan.queries)
    query_file = mix.write_dnsperf_file(queries, plan.workdir / kind / "queries.txt")
    load_plan = runner.Plan(
        mixes=("zones",),
        servers=(kind,),
        workdir=plan.workdir / kind,
        seconds=plan.qps_seconds,
        latency=False,
        workers=plan.workers,
        server_cpus=plan.server_cpus,
        client_cpus=plan.client_cpus,
        host=plan.host,
    )
    work = runner.Workload(queries, query_file)
    measured = runner.measure(kind, "zones", load_plan, work, plan.host, port, pid, progress)
    result.qps = measured.saturation.qps
    result.qps_cpu_seconds = measured.cpu_seconds
    result.qps_per_cpu_second = measured.qps_per_cpu_second
    result.qps_lost = measured.saturation.lost
    result.qps_driver = measured.saturation.driver


def _restart(
    kind: str,
    plan: Plan,
    result: ServerResult,
    primary: Primary,
    secondary: Secondary,
    zones: Sequence[str],
    serial: int,
    progress: Progress,
) -> None:
    """Restart twice from the stored copies: primary up (count its SOA queries), then down."""
    progress(f"{kind}: restart with the primary up (timers fresh), counting its SOA queries")
    _prepare_stop(secondary)
    outcome = secondary.stop(plan.grace)
    if outcome is not None:
        result.stops.append(outcome)
    before = primary.query_types()
    began = time.monotonic()
    secondary.start()
    result.restart_up = _wait(plan, secondary.port, zones, serves_any, began, secondary.alive)
    window_end = max(began + plan.restart_window, time.monotonic() + 2.0)
    time.sleep(max(0.0, window_end - time.monotonic()))
    counted = _delta(before, primary.query_types())
    result.restart_window_seconds = time.monotonic() - began
    result.primary_queries["restart"] = counted
    result.restart_soa_queries = counted.get("SOA", 0)
    result.restart_transfers = counted.get("AXFR", 0) + counted.get("IXFR", 0)

    progress(f"{kind}: restart with the primary down")
    _prepare_stop(secondary)
    outcome = secondary.stop(plan.grace)
    if outcome is not None:
        result.stops.append(outcome)
    primary.stop(plan.grace)
    began = time.monotonic()
    secondary.start()
    result.restart_down = _wait(plan, secondary.port, zones, serves_any, began, secondary.alive)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Queries the primary received between two `knotc stats` readings, by type."""
    return {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}


def _prepare_stop(secondary: Secondary) -> None:
    """NSD keeps transferred zones in memory and writes them to their zone files only every
    `zonefiles-write` seconds (an hour by default): ask it to write them now, as an operator
    would before a restart, so it has stored copies to start from."""
    if secondary.kind == "nsd" and secondary.alive():
        asyncio.run(
            run_command([secondary.control_program, "-c", str(secondary.conf), "write"], 120)
        )


def run(plan: Plan, progress: Progress) -> list[ServerResult]:
    """Every server of the plan in turn (the harness pinned to the client cores meanwhile)."""
    results: list[ServerResult] = []
    previous = os.sched_getaffinity(0)
    if plan.client_cpus:
        os.sched_setaffinity(0, plan.client_cpus)
    try:
        for kind in plan.servers:
            try:
                results.append(run_server(kind, plan, progress))
            except SetupError as error:
                progress(f"{kind}: skipped: {error}")
                skipped = ServerResult(kind, plan.count)
                skipped.notes.append(f"not run: {error}")
                results.append(skipped)
    finally:
        os.sched_setaffinity(0, previous)
    return results
