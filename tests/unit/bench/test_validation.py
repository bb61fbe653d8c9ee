"""The pure parts of authd/bench/measure_validation*.py: Knot's config and log, the broken-signature
copy, the cost arithmetic, and the coverage of a load window by validations."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.rdata
import pytest

from authd.bench import measure_validation as mv
from authd.bench import measure_validation_load as ml
from authd.bench.results import LoadResult
from tests.support.system import require_binary

# What knotd 3.2.6 logged loading a zone with `dnssec-validation: on` (good, then broken).
LOADED = """\
2026-11-22T15:50:34+0000 info: [bench.test.] zone will be loaded
2026-11-22T15:50:34+0000 info: starting server
2026-11-22T15:50:34+0000 info: [bench.test.] zone file parsed, serial 1
2026-11-22T15:50:34+0000 info: [bench.test.] DNSSEC, validation successful
2026-11-22T15:50:34+0000 info: [bench.test.] loaded, serial none -> 1, 1756 bytes
"""
REFUSED = """\
2026-11-22T15:50:38+0000 info: [bench.test.] zone file parsed, serial 1
2026-11-22T15:50:38+0000 error: [bench.test.] DNSSEC, validation failed (no valid signature for a record)
2026-11-22T15:50:38+0000 error: [bench.test.] DNSSEC, validation hint: h0.bench.test. A
2026-11-22T15:50:38+0000 error: [bench.test.] zone event 'load' failed (no valid signature for a record)
"""  # noqa: E501
RRSIG_LINE = (
    "h0.bench.test.\t3600\tIN\tRRSIG\tA 13 3 3600 20360101000000 20261122155034 10238 "
    "bench.test. B1A+KKLAhuers9/dZ3iSwn9qw1Y8/heTsRWjnXoWcc+/6PknQ9/XL+d+hAhSkuXLbBh5543Czi"
    "wCC0Zi4KFsXw==\n"
)


def test_knot_log_states() -> None:
    assert not mv.parse_knot_log("").done
    parsing = mv.parse_knot_log(LOADED.splitlines(keepends=True)[2])
    assert parsing.parsed and not parsing.done
    loaded = mv.parse_knot_log(LOADED)
    assert (loaded.parsed, loaded.validated, loaded.loaded, loaded.failure) == (
        True,
        True,
        True,
        "",
    )
    refused = mv.parse_knot_log(REFUSED)
    assert refused.done and not refused.loaded and not refused.validated
    assert refused.failure == "no valid signature for a record"
    assert refused.hint == "h0.bench.test. A"
    other = mv.parse_knot_log("error: [bench.test.] zone event 'load' failed (not enough memory)")
    assert other.failure == "not enough memory" and other.done


def _rrsig(line: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text("IN", "RRSIG", line.split("\t", 4)[4], origin=None)


def test_break_signature_changes_only_the_signature() -> None:
    assert mv.is_rrsig_of(RRSIG_LINE, "h0.bench.test.", "A")
    assert not mv.is_rrsig_of(RRSIG_LINE, "h1.bench.test.", "A")
    assert not mv.is_rrsig_of(RRSIG_LINE, "h0.bench.test.", "AAAA")
    broken = mv.break_signature(RRSIG_LINE)
    assert len(broken) == len(RRSIG_LINE) and broken.endswith("\n")
    assert sum(a != b for a, b in zip(broken, RRSIG_LINE, strict=True)) == 1
    before, after = _rrsig(RRSIG_LINE), _rrsig(broken)
    assert after.signature != before.signature  # type: ignore[attr-defined]
    assert len(after.signature) == len(before.signature)  # type: ignore[attr-defined]
    assert after.replace(signature=before.signature) == before  # type: ignore[attr-defined]


def test_break_copy_breaks_one_line(tmp_path: Path) -> None:
    other = RRSIG_LINE.replace("h0.", "h1.", 1)
    source = tmp_path / "signed"
    source.write_text("h0.bench.test.\t3600\tIN\tA\t10.0.0.0\n" + other + RRSIG_LINE)
    out = tmp_path / "broken"
    assert mv.break_copy(source, out, "h0.bench.test.")
    lines = out.read_text().splitlines(keepends=True)
    assert lines[:2] == source.read_text().splitlines(keepends=True)[:2]
    assert lines[2] == mv.break_signature(RRSIG_LINE) != RRSIG_LINE
    assert not mv.break_copy(source, out, "h9.bench.test.")


@pytest.mark.parametrize("validation", [True, False])
def test_knot_config_is_accepted_by_knotc(tmp_path: Path, validation: bool) -> None:
    knotc = require_binary("knotc")
    (tmp_path / "db").mkdir()
    zone = tmp_path / "zone"
    zone.write_text(mv.zone_text(2, 1))
    config = tmp_path / "knot.conf"
    text = mv.knot_config(tmp_path, zone, 53535, validation)
    assert f"dnssec-validation: {'on' if validation else 'off'}" in text
    assert "background-workers: 1" in text and "adjust-threads: 1" in text
    config.write_text(text)
    done = subprocess.run(
        [knotc, "-c", str(config), "conf-check"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_cost_and_ratio() -> None:
    log = mv.KnotLog(parsed=True, loaded=True)
    off = mv.KnotLoad(False, wall=2.0, cpu=1.5, parsed_wall=1.9, parsed_cpu=1.4, log=log)
    on = mv.KnotLoad(True, wall=12.0, cpu=11.0, parsed_wall=1.9, parsed_cpu=1.4, log=log)
    assert mv.validation_cost(on, off) == (10.0, 9.5)
    assert mv.per_second(1000, 0.5) == 2000.0
    assert mv.per_second(1000, 0.0) is None
    assert mv.knot_ratio(19.0, 9.5) == 2.0
    assert mv.knot_ratio(1.0, 0.0) is None


def test_coverage_of_a_window() -> None:
    assert ml.coverage([], 0.0, 10.0) == 0.0
    assert ml.coverage([(-5.0, None)], 0.0, 10.0) == 1.0  # still running when it closed
    assert ml.coverage([(-5.0, 4.0), (5.0, None)], 0.0, 10.0) == pytest.approx(0.9)
    assert ml.coverage([(1.0, 3.0), (2.0, 4.0)], 0.0, 10.0) == pytest.approx(0.3)  # overlap
    assert ml.coverage([(-3.0, -1.0), (11.0, 12.0)], 0.0, 10.0) == 0.0  # outside
    assert ml.coverage([(1.0, 2.0)], 5.0, 5.0) == 0.0


def _load(latencies: tuple[float, ...], sent: int = 100) -> LoadResult:
    return LoadResult("dnsperf", sent, sent, 0, 1.0, latencies_ms=latencies, target_qps=100.0)


def test_window_lines_and_baseline() -> None:
    idle = ml.Window("idle", _load((0.1,) * 99 + (2.0,)))
    idle_again = ml.Window("idle again", _load((0.1,) * 99 + (1.0,)))
    busy_runs = ml.Validations(((0.0, None),), ("ok", "rrsig-invalid"), pool_cpu=0.5)
    busy = ml.Window("validating", _load((0.1,) * 99 + (3.0,)), 1.0, 2.0, busy_runs)
    windows = [idle, busy, idle_again]
    assert ml.baseline_p99(windows) == 0.1  # nearest rank: the 99th of 100 values
    line = ml.window_line(busy, 0.05)
    assert "p99/idle 2.00x" in line and "in flight 100%" in line
    assert "finished 2" in line and "NOT ok: rrsig-invalid" in line
    assert "p99/idle" not in ml.window_line(idle, 0.05)
    slow = ml.Window("idle", LoadResult("dnsperf", 10, 10, 0, 1.0, target_qps=100.0))
    assert "did not hold the rate" in ml.window_line(slow, None)


def test_last_owner_in_canonical_order() -> None:
    assert mv.last_owner(1) == "h0.bench.test."
    assert mv.last_owner(20) == "h9.bench.test."
    assert mv.last_owner(200_000) == "h99999.bench.test."
    assert mv.last_owner(1_000_000) == "h999999.bench.test."
