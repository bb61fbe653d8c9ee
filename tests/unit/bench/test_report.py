"""Percentiles, the side-by-side table, ratios and JSON."""

from __future__ import annotations

import json

import pytest

from authd.bench import report
from authd.bench.results import LoadResult, ServerRun, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([2.0], 99) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 1) == 1.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def _run(server: str, mix: str, completed: int, cpu: float, held: bool = True) -> ServerRun:
    saturation = LoadResult("dnsperf", completed + 10, completed, 10, 2.0, {"NOERROR": completed})
    sent = 1000 if held else 500
    latency = LoadResult(
        "dnsperf",
        sent,
        sent,
        0,
        1.0,
        latencies_ms=tuple(0.1 * i for i in range(1, 101)),
        target_qps=1000.0,
    )
    return ServerRun(server, mix, saturation, cpu, latency)


def test_derived_figures() -> None:
    run = _run("knot", "hits", 200_000, 1.25)
    assert run.saturation.qps == 100_000
    assert run.qps_per_cpu_second == 160_000
    assert run.latency is not None and run.latency.held_rate
    assert run.latency.p50_ms == pytest.approx(5.0)
    assert run.latency.p99_ms == pytest.approx(9.9)
    assert ServerRun("x", "hits", run.saturation, 0.0).qps_per_cpu_second is None
    assert not _run("knot", "hits", 1, 1.0, held=False).latency.held_rate  # type: ignore[union-attr]


def test_ratios_per_mix_against_each_baseline() -> None:
    runs = [
        _run("authd", "hits", 120_000, 1.0),
        _run("knot", "hits", 150_000, 1.0),
        _run("nsd", "hits", 200_000, 1.0),
        _run("authd", "mixed", 100_000, 1.0),
        _run("knot", "mixed", 200_000, 1.0),
    ]
    found = {(r["mix"], r["ratio"]): r for r in report.ratios(runs)}
    assert set(found) == {("hits", "authd/knot"), ("hits", "authd/nsd"), ("mixed", "authd/knot")}
    assert found[("hits", "authd/knot")]["qps_per_cpu_second"] == pytest.approx(0.8)
    assert found[("hits", "authd/nsd")]["qps_per_cpu_second"] == pytest.approx(0.6)
    assert found[("mixed", "authd/knot")]["qps"] == pytest.approx(0.5)
    assert report.ratios([_run("knot", "hits", 1, 1.0)]) == []


def test_table_lines_up_and_flags_unheld_rates() -> None:
    runs = [_run("authd", "hits", 120_000, 1.0, held=False), _run("knot", "hits", 150_000, 1.0)]
    text = report.table(runs)
    lines = text.splitlines()
    assert lines[0].split() == [
        "mix",
        "server",
        "driver",
        "qps",
        "lost",
        "CPU",
        "s",
        "qps/CPU-s",
        "p50",
        "ms",
        "p99",
        "ms",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert "120,000" in lines[2] and "60,000" in lines[2] and "5.000*" in lines[2]
    assert "150,000" in lines[3] and "*" not in lines[3]
    assert "authd/knot" in text and "0.80x" in text
    assert "could not hold" in text
    assert len({len(line) for line in lines[:2]}) == 1


def test_json_document() -> None:
    runs = [_run("authd", "hits", 120_000, 1.0), _run("knot", "hits", 150_000, 1.0)]
    document = json.loads(report.as_json(runs, {"cpu": "test"}, "python -m authd.bench run"))
    assert document["command"] == "python -m authd.bench run"
    assert document["machine"] == {"cpu": "test"}
    first = document["runs"][0]
    assert first["server"] == "authd" and first["qps_per_cpu_second"] == 120_000
    assert first["saturation"]["qps"] == 60_000
    assert first["latency"]["p99_ms"] == pytest.approx(9.9)
    assert document["ratios"][0]["ratio"] == "authd/knot"
