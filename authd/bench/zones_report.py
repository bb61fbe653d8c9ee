"""The many-zones benchmark's results: values, the side-by-side table with ratios to knotd,
and the JSON form (pure: no I/O here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from authd.bench.zones_probe import LoopResult, WaitResult

BASELINE = "knot"


@dataclass(frozen=True)
class ChangeResult:
    """Zones added to (or removed from) a running secondary's config, then a reload."""

    zones: int
    wait: WaitResult  # the changed zones reaching their state (served / gone)
    reload_seconds: float  # how long the reload command took
    reload_ok: bool
    reload_output: str  # its last line: what it said
    others: LoopResult  # queries to the other zones meanwhile


@dataclass(frozen=True)
class StopResult:
    seconds: float  # from SIGTERM until every process of the tree was gone
    killed: bool  # SIGKILL was needed after the grace period


@dataclass
class ServerResult:
    """Every phase's figures for one secondary; None where the phase did not run."""

    server: str
    zones: int
    primary_ready_seconds: float | None = None
    load: WaitResult | None = None
    load_cpu_seconds: float | None = None
    idle_seconds: float | None = None
    idle_cpu_seconds: float | None = None
    pss_bytes: int | None = None
    processes: int | None = None
    qps: float | None = None
    qps_cpu_seconds: float | None = None
    qps_per_cpu_second: float | None = None
    qps_lost: int | None = None
    qps_driver: str | None = None
    storm: WaitResult | None = None
    storm_reload_seconds: float | None = None
    add: ChangeResult | None = None
    remove: ChangeResult | None = None
    restart_up: WaitResult | None = None  # restarted with the primary up (timers fresh)
    restart_window_seconds: float | None = None
    restart_soa_queries: int | None = None  # SOA queries the primary saw in that window
    restart_transfers: int | None = None  # AXFR + IXFR queries in that window
    restart_down: WaitResult | None = None  # restarted with the primary down
    # Queries the primary received per phase ("load", "storm", "restart"), by type (SOA,
    # AXFR, IXFR), from knotd's mod-stats: what the secondary asked of it.
    primary_queries: dict[str, dict[str, int]] = field(default_factory=dict)
    stops: list[StopResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # phase -> why
    notes: list[str] = field(default_factory=list)

    @property
    def pss_per_zone(self) -> float | None:
        if self.pss_bytes is None or not self.zones:
            return None
        return self.pss_bytes / self.zones


# --- cells --------------------------------------------------------------------------------


def wait_cell(wait: WaitResult | None, what: str = "served") -> str:
    """'1.23 s', or 'timed out: 332 of 10,000 served after 600 s'."""
    if wait is None:
        return "-"
    if wait.complete:
        return f"{wait.seconds:.2f} s"
    reason = wait.stopped or "timed out"
    return f"{reason}: {wait.passed:,} of {wait.total:,} {what} after {wait.seconds:.0f} s"


def _complete_seconds(wait: WaitResult | None) -> float | None:
    return wait.seconds if wait is not None and wait.complete else None


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f} MiB"


def _load_cell(r: ServerResult) -> str:
    cell = wait_cell(r.load)
    if r.load_cpu_seconds is not None:
        cell += f", {r.load_cpu_seconds:.2f} CPU-s"
    return cell


def _idle_cell(r: ServerResult) -> str:
    if r.idle_cpu_seconds is None:
        return "-"
    return f"{r.idle_cpu_seconds:.2f} CPU-s"


def _memory_cell(r: ServerResult) -> str:
    if r.pss_bytes is None:
        return "-"
    per = r.pss_per_zone
    per_text = f", {per / 1024:,.1f} KiB/zone" if per is not None else ""
    return f"{_mib(r.pss_bytes)}{per_text}"


def _qps_cell(r: ServerResult) -> str:
    if r.qps_per_cpu_second is None:
        return "-"
    lost = f", {r.qps_lost} lost" if r.qps_lost else ""
    return f"{r.qps_per_cpu_second / 1000:,.1f}k ({r.qps or 0:,.0f} qps{lost})"


def _storm_cell(r: ServerResult) -> str:
    if r.storm is None:
        return "-"
    missed = r.storm.total - r.storm.passed
    return f"{wait_cell(r.storm, 'updated')}, {missed:,} missed"


def change_cell(change: ChangeResult | None, what: str) -> str:
    if change is None:
        return "-"
    cell = wait_cell(change.wait, what)
    if not change.reload_ok:
        cell += f" (reload failed: {change.reload_output})"
    others = change.others
    cell += f", {others.failed} of {others.sent:,} other-zone queries failed"
    return cell


def primary_queries_cell(r: ServerResult) -> str:
    """'load 12 SOA / 1,000 XFR; ...': what the secondary asked the primary, per phase."""
    parts = []
    for phase, counts in r.primary_queries.items():
        soa = counts.get("SOA", 0)
        transfers = counts.get("AXFR", 0) + counts.get("IXFR", 0)
        parts.append(f"{phase} {soa:,} SOA / {transfers:,} XFR")
    return "; ".join(parts) or "-"


def _restart_cell(r: ServerResult) -> str:
    return wait_cell(r.restart_down, "answering")


def _soa_cell(r: ServerResult) -> str:
    if r.restart_soa_queries is None:
        return "-"
    transfers = f", {r.restart_transfers} transfers" if r.restart_transfers else ""
    answering = f" (all answering: {wait_cell(r.restart_up, 'answering')})"
    window = r.restart_window_seconds or 0
    return f"{r.restart_soa_queries:,} SOA{transfers} in {window:.0f} s{answering}"


@dataclass(frozen=True)
class Row:
    label: str
    cell: Callable[[ServerResult], str]
    value: Callable[[ServerResult], float | None]  # what the ratio divides (None: no ratio)


def rows(idle_seconds: float | None, added: int | None) -> list[Row]:
    idle = f"{idle_seconds:g} s" if idle_seconds else "N s"
    add = f"{added:,} " if added else ""
    return [
        Row(
            "first load of all zones (AXFR)",
            _load_cell,
            lambda r: _complete_seconds(r.load),
        ),
        Row(
            "  CPU seconds of that load",
            lambda r: "-" if r.load_cpu_seconds is None else f"{r.load_cpu_seconds:.2f}",
            lambda r: r.load_cpu_seconds if r.load is not None and r.load.complete else None,
        ),
        Row(f"idle CPU, {idle}", _idle_cell, lambda r: r.idle_cpu_seconds),
        Row("memory (summed PSS)", _memory_cell, lambda r: r.pss_per_zone),
        Row(
            "qps per server CPU-second, mix over all zones",
            _qps_cell,
            lambda r: r.qps_per_cpu_second,
        ),
        Row(
            "NOTIFY storm (all serials bumped) until all served",
            _storm_cell,
            lambda r: _complete_seconds(r.storm),
        ),
        Row(
            f"{add}zones added at runtime until served",
            lambda r: change_cell(r.add, "served"),
            lambda r: _complete_seconds(r.add.wait if r.add else None),
        ),
        Row(
            f"{add}zones removed at runtime until refused",
            lambda r: change_cell(r.remove, "gone"),
            lambda r: _complete_seconds(r.remove.wait if r.remove else None),
        ),
        Row(
            "restart from stored copies, primary down",
            _restart_cell,
            lambda r: _complete_seconds(r.restart_down),
        ),
        Row(
            "SOA queries to the primary after a restart (timers fresh)",
            _soa_cell,
            lambda r: None,
        ),
        Row("queries the primary received", primary_queries_cell, lambda r: None),
    ]


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(results: Sequence[ServerResult], idle_seconds: float | None, added: int | None) -> str:
    """A Markdown table: one column per server, then one ratio column per server over knotd
    (a ratio is shown only where both figures are complete)."""
    if not results:
        return "(no results)"
    base = next((r for r in results if r.server == BASELINE), None)
    others = [r for r in results if r.server != BASELINE] if base else []
    header = ["", *(r.server for r in results), *(f"{r.server}/{BASELINE}" for r in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows(idle_seconds, added):
        cells = [row.label, *(row.cell(r) for r in results)]
        if base is not None:
            cells += [_ratio_text(ratio(row.value(r), row.value(base))) for r in others]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"{r.server}: {phase} skipped: {why}" for r in results for phase, why in r.skipped.items()
    ]
    notes += [f"{r.server}: {note}" for r in results for note in r.notes]
    for r in results:
        killed = [s for s in r.stops if s.killed]
        if killed:
            notes.append(
                f"{r.server}: {len(killed)} of {len(r.stops)} stops needed SIGKILL "
                "after the grace period"
            )
    if notes:
        lines.append("")
        lines += [f"note: {note}" for note in notes]
    return "\n".join(lines)


def as_dict(result: ServerResult) -> dict[str, Any]:
    document = asdict(result)
    document["pss_per_zone"] = result.pss_per_zone
    return document


def as_json(
    results: Sequence[ServerResult],
    settings: dict[str, Any],
    machine: dict[str, str],
    command: str,
) -> str:
    base = next((r for r in results if r.server == BASELINE), None)
    ratios: dict[str, dict[str, float | None]] = {}
    if base is not None:
        for r in results:
            if r is base:
                continue
            ratios[f"{r.server}/{BASELINE}"] = {
                row.label.strip(): ratio(row.value(r), row.value(base))
                for row in rows(settings.get("idle_seconds"), settings.get("add"))
            }
    document = {
        "command": command,
        "machine": machine,
        "settings": settings,
        "servers": [as_dict(r) for r in results],
        "ratios": ratios,
    }
    return json.dumps(document, indent=2, default=str)
