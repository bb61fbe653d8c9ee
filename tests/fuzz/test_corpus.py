"""Replay the committed fuzz corpus (tests/fuzz/corpus/<target>/) in the normal test run.

Every input must pass its target (targets.py says what each target checks) within the
1 s hard timeout. Inputs that once crashed (files named crash-*) stay as regression inputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fuzz import targets
from tests.fuzz.run import HARD_TIMEOUT, corpus_files, hard_timeout


def _replay(target: str, path: Path) -> float:
    data = path.read_bytes()
    start = time.perf_counter()
    with hard_timeout(HARD_TIMEOUT):
        targets.TARGETS[target](data)
    return time.perf_counter() - start


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_corpus_replays_cleanly(target: str) -> None:
    files = list(corpus_files(target))
    assert files, f"no corpus for {target}: run tests/fuzz/run.py --write-seeds"
    failures: list[str] = []
    slowest = (0.0, "")
    for path in files:
        try:
            elapsed = _replay(target, path)
        except Exception as error:  # a failure to report, with the input's name
            failures.append(f"{path.name}: {error!r}")
            continue
        slowest = max(slowest, (elapsed, path.name))
    print(f"{target}: {len(files)} inputs, slowest {slowest[0] * 1000:.1f} ms ({slowest[1]})")
    assert not failures, "\n".join(failures)
