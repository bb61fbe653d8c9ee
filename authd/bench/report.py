"""The session's figures as one side-by-side table with ratios, or as JSON (pure formatting)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from authd.bench.results import LoadResult, ServerRun

COLUMNS = (
    "mix",
    "server",
    "driver",
    "qps",
    "lost",
    "CPU s",
    "qps/CPU-s",
    "p50 ms",
    "p99 ms",
)
BASELINES = ("knot", "nsd")


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _row(run: ServerRun) -> list[str]:
    latency = run.latency
    p50 = latency.p50_ms if latency else None
    p99 = latency.p99_ms if latency else None
    mark = "" if latency is None or latency.held_rate else "*"
    return [
        run.mix,
        run.server,
        run.saturation.driver,
        _number(run.saturation.qps),
        _lost(run.saturation),
        _number(run.cpu_seconds, 2) if run.cpu_seconds > 0 else "-",
        _number(run.qps_per_cpu_second),
        _number(p50, 3) + (mark if p50 is not None else ""),
        _number(p99, 3) + (mark if p99 is not None else ""),
    ]


def _lost(result: LoadResult) -> str:
    if result.sent == 0:
        return "-"
    return f"{result.lost} ({100.0 * result.lost / result.sent:.2f}%)"


def ratios(runs: Sequence[ServerRun], subject: str = "authd") -> list[dict[str, Any]]:
    """authd's qps per CPU-second (and raw qps) over each baseline's, per mix."""
    by_key = {(run.mix, run.server): run for run in runs}
    out: list[dict[str, Any]] = []
    for mix in dict.fromkeys(run.mix for run in runs):
        ours = by_key.get((mix, subject))
        if ours is None:
            continue
        for baseline in BASELINES:
            theirs = by_key.get((mix, baseline))
            if theirs is None:
                continue
            out.append(
                {
                    "mix": mix,
                    "ratio": f"{subject}/{baseline}",
                    "qps_per_cpu_second": _divide(
                        ours.qps_per_cpu_second, theirs.qps_per_cpu_second
                    ),
                    "qps": _divide(ours.saturation.qps, theirs.saturation.qps),
                }
            )
    return out


def _divide(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def table(runs: Sequence[ServerRun]) -> str:
    """A plain-text table, one line per (mix, server), then the ratios and any notes."""
    rows = [list(COLUMNS)] + [_row(run) for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if col < 3 else cell.rjust(width)
            for col, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    found = ratios(runs)
    if found:
        lines.append("")
        for item in found:
            per_cpu = item["qps_per_cpu_second"]
            raw = item["qps"]
            lines.append(
                f"{item['mix']:<8} {item['ratio']:<11} qps/CPU-s {_ratio(per_cpu)}"
                f"   qps {_ratio(raw)}"
            )
    notes = [f"{run.mix}/{run.server}: {note}" for run in runs for note in run.notes]
    if any(run.latency is not None and not run.latency.held_rate for run in runs):
        notes.append("* the client could not hold half the saturation rate for this latency run")
    if notes:
        lines.append("")
        lines.extend(f"note: {note}" for note in notes)
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _load_dict(result: LoadResult) -> dict[str, Any]:
    return {
        "driver": result.driver,
        "sent": result.sent,
        "completed": result.completed,
        "lost": result.lost,
        "seconds": round(result.seconds, 3),
        "qps": round(result.qps, 1),
        "rcodes": result.rcodes,
        "truncated": result.truncated,
        "mismatched": result.mismatched,
        "target_qps": result.target_qps,
        "held_rate": result.held_rate,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
    }


def as_json(runs: Sequence[ServerRun], machine: dict[str, str], command: str) -> str:
    document = {
        "command": command,
        "machine": machine,
        "runs": [
            {
                "mix": run.mix,
                "server": run.server,
                "cpu_seconds": round(run.cpu_seconds, 3),
                "qps_per_cpu_second": run.qps_per_cpu_second,
                "saturation": _load_dict(run.saturation),
                "latency": _load_dict(run.latency) if run.latency else None,
                "notes": list(run.notes),
            }
            for run in runs
        ],
        "ratios": ratios(runs),
    }
    return json.dumps(document, indent=2)
