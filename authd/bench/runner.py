"""One benchmark session: for each mix, each server is started (or the target used), loaded to
saturation with its CPU time measured, then loaded at half that rate for latency.

All time bounds live here: every load run lasts `seconds`, every server start has a deadline,
and every server started is stopped in a `finally`.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import dns.query
import dns.zone

from authd.bench import cpu, drivers, loadgen, mix, peers, zonegen
from authd.bench.results import LoadResult, ServerRun

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    pid: int | None = None  # the server's PID when it runs on this machine (for CPU figures)


@dataclass(frozen=True)
class Plan:
    mixes: tuple[str, ...]
    servers: tuple[str, ...]  # kinds to start; ignored with a target
    workdir: Path
    seconds: float = 5.0
    latency_seconds: float = 3.0
    latency: bool = True
    workers: int = 1
    server_cpus: frozenset[int] = frozenset()
    client_cpus: frozenset[int] = frozenset()
    driver: str = "auto"  # auto | dnsperf | builtin
    count: int = 200_000
    outstanding: int = drivers.DEFAULT_OUTSTANDING
    host: str = "127.0.0.1"  # where the load goes
    listen: str = ""  # where the servers bind ("" = host; "0.0.0.0" measures a wildcard listen)
    zone: Path | None = None
    origin: str = zonegen.DEFAULT_ORIGIN
    names: int = zonegen.DEFAULT_NAMES
    target: Target | None = None
    axfr: bool = False  # take the zone from the target by AXFR
    custom: dict[str, mix.Preset] = field(default_factory=dict)  # extra mixes by name

    def preset(self, name: str) -> mix.Preset:
        if name in self.custom:
            return self.custom[name]
        if name not in mix.PRESETS:
            raise mix.MixError(f"unknown mix {name!r}; known: {', '.join(mix.PRESETS)}")
        return mix.PRESETS[name]


def default_cpus(workers: int) -> tuple[frozenset[int], frozenset[int]]:
    """(server cpus, client cpus): the client on the first allowed core, the server's workers
    on the cores after it; when there are not enough cores they share the last ones."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) == 1:
        return frozenset(allowed), frozenset(allowed)
    client = frozenset(allowed[:1])
    rest = allowed[1:]
    server = frozenset(rest[:workers]) if len(rest) >= workers else frozenset(allowed[-workers:])
    return server, client


def zone_for(plan: Plan, kind: str, progress: Progress) -> Path:
    """The zone file served for a preset's zone kind ("plain", "nsec", "nsec3")."""
    plan.workdir.mkdir(parents=True, exist_ok=True)
    if plan.target is not None and plan.axfr:
        path = plan.workdir / "target-axfr.zone"
        if not path.exists():
            progress(f"fetching {plan.origin} by AXFR from {plan.target.host}@{plan.target.port}")
            xfr = dns.query.xfr(plan.target.host, plan.origin, port=plan.target.port, lifetime=60)
            dns.zone.from_xfr(xfr, relativize=False).to_file(str(path), relativize=False)
        return path
    if plan.zone is not None:
        base = plan.zone
    else:
        base = plan.workdir / f"{plan.origin.rstrip('.') or 'root'}.zone"
        if not base.exists():
            zonegen.write_zone(base, plan.origin, plan.names)
    if kind == "plain" or plan.target is not None or _is_signed(base):
        return base
    signed = plan.workdir / (base.name + f".{kind}.signed")
    if not signed.exists():
        progress(f"signing {base.name} ({kind.upper()}) with ldns-signzone")
        made = zonegen.sign_zone(base, plan.origin, kind == "nsec3", plan.workdir)
        made.rename(signed)
    return signed


def _is_signed(path: Path) -> bool:
    with path.open() as handle:
        return any(" RRSIG " in line or "\tRRSIG\t" in line for line in handle)


@dataclass
class Workload:
    """One mix's questions: as a dnsperf file, and as packets for the built-in generator
    (prepared once, on first use, and shared by every server and run)."""

    queries: list[mix.Query]
    query_file: Path
    packets: list[loadgen.Prepared] | None = None

    def prepared(self) -> list[loadgen.Prepared]:
        if self.packets is None:
            self.packets = loadgen.prepare(self.queries)
        return self.packets


def choose_driver(plan: Plan, queries: list[mix.Query]) -> str:
    uniform = mix.uniform_flags(queries)
    have_dnsperf = drivers.find_dnsperf() is not None
    if plan.driver == "dnsperf":
        if not have_dnsperf:
            raise drivers.DnsperfError("dnsperf not found (Debian package dnsperf)")
        if uniform is None:
            raise mix.MixError("dnsperf runs only mixes whose queries share DO and transport")
        return "dnsperf"
    if plan.driver == "builtin" or not have_dnsperf or uniform is None:
        return "builtin"
    return "dnsperf"


def load(
    driver: str,
    plan: Plan,
    work: Workload,
    host: str,
    port: int,
    seconds: float,
    rate: float | None,
) -> LoadResult:
    if driver == "dnsperf":
        do, tcp = mix.uniform_flags(work.queries) or (False, False)
        job = drivers.DnsperfJob(
            host,
            port,
            work.query_file,
            seconds,
            do=do,
            tcp=tcp,
            outstanding=plan.outstanding,
            clients=max(4, len(plan.client_cpus)),
            threads=max(1, len(plan.client_cpus)),
            rate=rate,
        )
        return drivers.run(job, set(plan.client_cpus))
    settings = loadgen.GeneratorSettings(host, port, seconds, plan.outstanding, rate)
    previous = os.sched_getaffinity(0)
    if plan.client_cpus:
        os.sched_setaffinity(0, plan.client_cpus)
    try:
        return loadgen.run_sync(work.prepared(), settings)
    finally:
        os.sched_setaffinity(0, previous)


def client_cpu_seconds(driver: str) -> float:
    """CPU seconds used so far by the load client: dnsperf runs as a child that is waited
    for (RUSAGE_CHILDREN), the built-in generator in this process."""
    who = resource.RUSAGE_CHILDREN if driver == "dnsperf" else resource.RUSAGE_SELF
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(
    server_name: str,
    mix_name: str,
    plan: Plan,
    work: Workload,
    host: str,
    port: int,
    pid: int | None,
    progress: Progress,
    cores: int = 0,
) -> ServerRun:
    """Warm-up, saturation with CPU accounting, latency; `cores`: how many the server has (0:
    unknown, then nothing is said about whether it was saturated)."""
    driver = choose_driver(plan, work.queries)
    notes: list[str] = []
    # A short warm-up so caches, page faults and JITs of every server start equal.
    progress(f"{mix_name}: {server_name}: warm-up")
    load(driver, plan, work, host, port, min(1.0, plan.seconds / 5), None)
    progress(f"{mix_name}: {server_name}: saturation, {plan.seconds:g} s ({driver})")
    before = cpu.tree_cpu_seconds(pid) if pid is not None else 0.0
    client_before = client_cpu_seconds(driver)
    saturation = load(driver, plan, work, host, port, plan.seconds, None)
    client_seconds = client_cpu_seconds(driver) - client_before
    cpu_seconds = cpu.tree_cpu_seconds(pid) - before if pid is not None else 0.0
    if pid is None:
        notes.append("no server PID: CPU figures unavailable")
    else:
        client_cores = len(plan.client_cpus) or 1
        client_share = cpu.utilization(client_seconds, saturation.seconds, client_cores)
        idle = cpu.saturation_note(cpu_seconds, saturation.seconds, cores, client_share)
        if idle is not None:
            notes.append(idle)
    latency = None
    if plan.latency and saturation.qps > 0:
        rate = max(1.0, saturation.qps * 0.5)
        progress(
            f"{mix_name}: {server_name}: latency at {rate:,.0f} qps, {plan.latency_seconds:g} s"
        )
        latency = load(driver, plan, work, host, port, plan.latency_seconds, rate)
        if not latency.held_rate:
            notes.append(
                f"client did not hold {rate:,.0f} qps: latency figures are at a lower load"
            )
    if saturation.mismatched:
        notes.append(f"{saturation.mismatched} responses matched no query")
    return ServerRun(server_name, mix_name, saturation, cpu_seconds, latency, tuple(notes))


def run(plan: Plan, progress: Progress) -> list[ServerRun]:
    """Every mix against every server (or the target); servers that are not installed are
    skipped with a note instead of failing the whole session."""
    results: list[ServerRun] = []
    for mix_name in plan.mixes:
        preset = plan.preset(mix_name)
        zone_path = zone_for(plan, preset.zone, progress)
        inventory = mix.inventory_from_file(zone_path, plan.origin)
        queries = mix.generate(inventory, preset.spec, plan.count)
        query_file = mix.write_dnsperf_file(queries, plan.workdir / f"queries-{mix_name}.txt")
        work = Workload(queries, query_file)
        if plan.target is not None:
            t = plan.target
            results.append(measure("target", mix_name, plan, work, t.host, t.port, t.pid, progress))
            continue
        for kind in plan.servers:
            if peers.find_program(kind) is None:
                progress(f"{mix_name}: {kind}: not installed, skipped")
                continue
            settings = peers.PeerSettings(
                plan.origin,
                zone_path,
                plan.host,
                peers.free_port(plan.listen or plan.host),
                plan.workers,
                plan.workdir / f"{kind}-{mix_name}",
                plan.listen,
            )
            progress(f"{mix_name}: starting {kind} on {settings.bind}@{settings.port}")
            try:
                server = peers.start(kind, settings, set(plan.server_cpus))
            except peers.PeerError as error:
                progress(f"{mix_name}: {kind}: could not start: {error}")
                continue
            try:
                outcome = measure(
                    kind,
                    mix_name,
                    plan,
                    work,
                    server.host,
                    server.port,
                    server.pid,
                    progress,
                    len(plan.server_cpus) or plan.workers,
                )
                # Knot re-pins its workers; check that every thread stayed where we put it.
                strays = peers.tree_affinity(server.pid) - plan.server_cpus
                if plan.server_cpus and strays:
                    note = f"threads ran outside the server cores: {sorted(strays)}"
                    outcome = replace(outcome, notes=(*outcome.notes, note))
                results.append(outcome)
            finally:
                server.stop()
    return results


def machine() -> dict[str, str]:
    """What the figures were measured on, for the report and RESULTS.md."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for kind, flag in (("knot", "-V"), ("nsd", "-v")):
        program = peers.find_program(kind)
        versions[kind] = _first_line([program, flag]) if program else "not installed"
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "kernel": os.uname().release,
        "dnsperf": shutil.which("dnsperf") or "not installed",
        "authd": _first_line(["git", "rev-parse", "--short", "HEAD"]) or "unknown",
        **versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _first_line(argv: list[str]) -> str:
    """The first non-empty output line of a quick version command ("" if it fails)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[0] if lines else ""
