"""The suite does not rot with time: tests that sign and validate take both times from one
clock, so they pass however long after collection they run (issue 11).

Each case runs pytest in a subprocess with the tests.support.timeshift plugin, which makes
collection happen 10 minutes before the run. On the code before this change (NOW =
time.time() at import, zones signed during the run) the signing files failed with 34
rrsig-not-yet-valid verdicts in this setting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Every unit test file that signs or validates (DNSSEC, ZONEMD, TSIG) or reads the wall clock.
SIGNING_FILES = [
    "tests/unit/zone/test_dnssec.py",
    "tests/unit/zone/test_dnssec_incremental.py",
    "tests/unit/zone/test_dnssec_incremental_nsec3.py",
    "tests/unit/zone/test_verify.py",
    "tests/unit/xfr/test_notify.py",
    "tests/unit/xfr/test_transfer.py",
    "tests/unit/xfr/test_secondary.py",
    "tests/unit/zone/test_answer.py",
    "tests/unit/test_cli.py",
    "tests/unit/zone/test_delegation.py",
    "tests/unit/test_horizon.py",
    "tests/unit/assure/test_drill.py",
]

PROBE = """
import time

IMPORTED_AT = time.time()


def test_collection_was_long_before_the_run():
    assert time.time() - IMPORTED_AT >= 600
"""


def _pytest(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_plugin_moves_collection_ten_minutes_back(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE)
    plain = _pytest("--rootdir", str(tmp_path), "test_probe.py", cwd=tmp_path)
    assert plain.returncode == 1, plain.stdout  # without it, import and run are moments apart
    shifted = _pytest(
        "-p", "tests.support.timeshift", "--rootdir", str(tmp_path), "test_probe.py", cwd=tmp_path
    )
    assert shifted.returncode == 0, shifted.stdout + shifted.stderr


@pytest.mark.slow
def test_signing_tests_pass_when_run_ten_minutes_after_collection() -> None:
    done = _pytest("-x", "-p", "tests.support.timeshift", *SIGNING_FILES)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "rrsig-not-yet-valid" not in done.stdout
