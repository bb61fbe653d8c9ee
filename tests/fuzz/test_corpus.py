"""Replay the committed fuzz corpus (tests/fuzz/corpus/<target>/) in the normal test run.

Every input must pass its target (targets.py says what each target checks) within the
1 s hard timeout. Inputs that still crash code owned elsewhere are listed in KNOWN with
the exception they raise: they are expected to fail that way (strict), so the day the
bug is fixed the entry must go, and the input becomes a plain regression input.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fuzz import targets
from tests.fuzz.run import HARD_TIMEOUT, corpus_files, hard_timeout

# target -> {file name: (exception type, what is wrong)}
KNOWN: dict[str, dict[str, tuple[type[BaseException], str]]] = {
    "loader": {
        "crash-empty-quoted-first-token": (
            IndexError,
            'authd/zone/loader.py _read_lines tests tokens[0][0] == "$"; a line whose first '
            'token is an empty quoted string ("") raises IndexError instead of ZoneLoadError',
        ),
    },
    "stream": {
        "crash-rrsig-short-rdata": (
            IndexError,
            "authd/xfr/stream.py TransferAssembler._collect reads rdata[0] and rdata[1] of "
            "an RRSIG to find the covered type; an RRSIG with RDATA under 2 octets in an "
            "AXFR raises IndexError instead of StreamError(MALFORMED)",
        ),
        "crash-rrsig-short-rdata-ixfr": (
            IndexError,
            "authd/zone/snapshot.py covered_type() (via Snapshot.apply_diff) reads two octets "
            "of an RRSIG added by an IXFR; RDATA under 2 octets raises IndexError, which "
            "TransferAssembler._apply_step does not turn into StreamError (it catches ZoneError)",
        ),
        "crash-nsec3param-short-rdata-axfr": (
            IndexError,
            "authd/zone/snapshot.py _nsec3_params() reads rdata[0..4] of the apex NSEC3PARAM; "
            "RDATA under 5 octets (or a salt length past the end: no check) raises IndexError "
            "from SnapshotBuilder.build(), which TransferAssembler._build only guards for "
            "ZoneError",
        ),
        "crash-nsec3param-short-rdata-ixfr": (
            IndexError,
            "the same _nsec3_params() IndexError reached through Snapshot.apply_diff (IXFR)",
        ),
    },
}


def _replay(target: str, path: Path) -> float:
    data = path.read_bytes()
    start = time.perf_counter()
    with hard_timeout(HARD_TIMEOUT):
        targets.TARGETS[target](data)
    return time.perf_counter() - start


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_corpus_replays_cleanly(target: str) -> None:
    files = [p for p in corpus_files(target) if p.name not in KNOWN.get(target, {})]
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


@pytest.mark.parametrize(
    ("target", "name"), [(t, n) for t, known in sorted(KNOWN.items()) for n in sorted(known)]
)
def test_known_crashes_still_crash(target: str, name: str) -> None:
    error_type, why = KNOWN[target][name]
    path = targets.ROOT / "tests" / "fuzz" / "corpus" / target / name
    assert path.is_file(), f"{path} missing"
    with pytest.raises(error_type):
        _replay(target, path)
    print(f"known bug, still present: {why}")
