"""Long fuzzing sessions: `python tests/fuzz/run.py TARGET --seconds N` (TARGET: responder,
loader, stream or all).

With atheris installed (pip install atheris) the target runs under libFuzzer with coverage
from the instrumented authd modules (and dnspython's zone-file parser for the loader), in
a child process: libFuzzer exits the process when done and enforces the 1 s hard timeout
(-timeout=1) itself. Without atheris, hypothesis generates random and mutated inputs
from the corpus (no coverage feedback) and the timeout is an interval timer.

Prints executions, the slowest input's time (and saves that input), and any crash or
timeout input. `--save` merges the session's new coverage into tests/fuzz/corpus/TARGET/
(libFuzzer's -merge keeps only inputs that add coverage). `--write-seeds` (re)writes the
seed inputs from tests/fuzz/seeds.py.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "tests" / "fuzz" / "corpus"
TARGET_NAMES = ("responder", "loader", "stream")
MAX_LEN = {"responder": 4096, "loader": 8192, "stream": 32768}
HARD_TIMEOUT = 1.0  # seconds per input
# Modules worth coverage feedback, per target (authd always).
INSTRUMENT = {
    "responder": ["authd"],
    "loader": ["authd", "dns.zonefile", "dns.tokenizer", "dns.rdtypes", "dns.rdata", "dns.ttl"],
    "stream": ["authd"],
}


class HardTimeout(Exception):
    pass


def _signature(error: BaseException) -> tuple[str, str]:
    """(exception type, innermost function) of an exception."""
    frames = traceback.extract_tb(error.__traceback__)
    return type(error).__name__, frames[-1].name if frames else ""


def corpus_files(target: str) -> list[Path]:
    folder = CORPUS / target
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def write_seeds() -> None:
    from tests.fuzz.seeds import SEEDS

    for target, make in SEEDS.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        count = 0
        for data in make():
            name = "seed-" + hashlib.sha1(data).hexdigest()
            (folder / name).write_bytes(data)
            count += 1
        print(f"{target}: {count} seeds in {folder.relative_to(ROOT)}")


class Timed:
    """Wraps a target: counts executions, keeps the slowest input (written to `folder`)."""

    def __init__(
        self,
        target: Callable[[bytes], None],
        folder: Path,
        known: set[tuple[str, str]] | None = None,
    ) -> None:
        self.target = target
        self.folder = folder
        self.known = known or set()
        self.known_hits = 0
        self.executions = 0
        self.slowest = 0.0

    def __call__(self, data: bytes) -> None:
        start = time.perf_counter()
        try:
            self.target(data)
        except Exception as error:
            if _signature(error) not in self.known:
                raise
            self.known_hits += 1
            (self.folder / "known_hits.txt").write_text(f"{self.known_hits}\n")
            return
        elapsed = time.perf_counter() - start
        self.executions += 1
        if elapsed > self.slowest:
            # Re-time a candidate twice and keep the best: on a shared machine one slow
            # run is as often a GC pause or a busy neighbour as a slow input.
            for _ in range(2):
                start = time.perf_counter()
                self.target(data)
                elapsed = min(elapsed, time.perf_counter() - start)
            if elapsed <= self.slowest:
                return
            self.slowest = elapsed
            (self.folder / "slowest.bin").write_bytes(data)
            (self.folder / "slowest.txt").write_text(f"{elapsed:.6f}\n")


# -- atheris (libFuzzer) -------------------------------------------------------------------


def atheris_child(target: str, workdir: Path, libfuzzer_args: list[str]) -> None:
    """Runs in the child process; never returns (libFuzzer exits)."""
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=INSTRUMENT[target]):
        from tests.fuzz import targets
    timed = Timed(targets.TARGETS[target], workdir, targets.KNOWN_BUGS.get(target))
    # libFuzzer re-runs argv[0] through the shell for -merge (and -fork): make it a
    # command line that lands back here.
    again = f"{sys.executable} {Path(__file__).resolve()} --child {target} {workdir} --"
    atheris.Setup([again, *libfuzzer_args], timed)
    atheris.Fuzz()


def run_atheris(target: str, seconds: int, save: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"authd-fuzz-{target}-"))
    work_corpus = workdir / "corpus"
    work_corpus.mkdir()
    args = [
        str(work_corpus),
        str(CORPUS / target),
        f"-max_len={MAX_LEN[target]}",
        f"-timeout={int(HARD_TIMEOUT)}",
        f"-max_total_time={seconds}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={workdir}/",
    ]
    child = [sys.executable, __file__, "--child", target, str(workdir), "--", *args]
    proc = subprocess.run(child, capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    executions = _stat(output, "number_of_executed_units")
    artifacts = sorted(p for p in workdir.iterdir() if p.name.startswith(("crash-", "timeout-")))
    artifacts += sorted(p for p in workdir.iterdir() if p.name.startswith(("oom-", "leak-")))
    _report(target, "atheris", seconds, executions, workdir, artifacts)
    if artifacts or proc.returncode not in (0,):
        tail = "\n".join(output.splitlines()[-40:])
        print(f"--- libFuzzer output (last lines) ---\n{tail}")
    if save:
        merge = [
            sys.executable,
            __file__,
            "--child",
            target,
            str(workdir),
            "--",
            "-merge=1",
            f"-max_len={MAX_LEN[target]}",
            str(CORPUS / target),
            str(work_corpus),
        ]
        before = len(corpus_files(target))
        subprocess.run(merge, capture_output=True, check=False)
        print(f"corpus {target}: {before} -> {len(corpus_files(target))} files")
    return 1 if artifacts else 0


def _stat(output: str, name: str) -> int | None:
    match = re.search(rf"stat::{name}:\s+(\d+)", output)
    if match:
        return int(match.group(1))
    match = re.search(r"Done (\d+) runs", output)
    return int(match.group(1)) if match else None


# -- hypothesis (no coverage feedback) -----------------------------------------------------


def run_hypothesis(target: str, seconds: int) -> int:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from tests.fuzz import targets

    workdir = Path(tempfile.mkdtemp(prefix=f"authd-fuzz-{target}-"))
    timed = Timed(targets.TARGETS[target], workdir, targets.KNOWN_BUGS.get(target))
    corpus = [p.read_bytes() for p in corpus_files(target)] or [b""]
    max_len = MAX_LEN[target]

    def mutate(seed: bytes) -> st.SearchStrategy[bytes]:
        edit = st.tuples(st.integers(0, len(seed)), st.integers(0, 8), st.binary(max_size=8))
        return st.lists(edit, max_size=6).map(lambda edits: _apply(seed, edits)[:max_len])

    inputs = st.one_of(st.binary(max_size=max_len), st.sampled_from(corpus).flatmap(mutate))
    artifacts: list[Path] = []
    seen: set[str] = set()  # one input per distinct failure (type and innermost frame)

    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def one(data: bytes) -> None:
        try:
            with hard_timeout(HARD_TIMEOUT):
                timed(data)
        except Exception as error:
            kind = "timeout" if isinstance(error, HardTimeout) else "crash"
            where = traceback.extract_tb(error.__traceback__)[-1]
            signature = f"{type(error).__name__} at {where.filename}:{where.lineno}"
            if signature in seen:
                return
            seen.add(signature)
            path = workdir / f"{kind}-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            artifacts.append(path)
            print(f"{kind}: {error!r}, {signature} (input saved in {path})")

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        one()
    _report(target, "hypothesis", seconds, timed.executions, workdir, artifacts)
    return 1 if artifacts else 0


def _apply(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for pos, cut, insert in edits:
        pos = min(pos, len(data))
        data[pos : pos + cut] = insert
    return bytes(data)


@contextlib.contextmanager
def hard_timeout(seconds: float) -> Iterator[None]:
    """Raise HardTimeout in the main thread after `seconds` (SIGALRM interval timer)."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise HardTimeout(f"input took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- report ---------------------------------------------------------------------------------


def _report(
    target: str,
    engine: str,
    seconds: int,
    executions: int | None,
    workdir: Path,
    artifacts: list[Path],
) -> None:
    slowest_txt = workdir / "slowest.txt"
    slowest = float(slowest_txt.read_text()) if slowest_txt.exists() else float("nan")
    known_txt = workdir / "known_hits.txt"
    known = int(known_txt.read_text()) if known_txt.exists() else 0
    print(
        f"{target}: engine={engine} seconds={seconds} executions={executions} "
        f"slowest={slowest * 1000:.1f} ms (input: {workdir / 'slowest.bin'}) "
        f"crashes/timeouts={len(artifacts)} known-bug hits={known}"
    )
    for path in artifacts:
        print(f"  {path.name}: {path}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        target, workdir = argv[1], Path(argv[2])
        atheris_child(target, workdir, argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("target", nargs="?", choices=[*TARGET_NAMES, "all"], default="all")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--save", action="store_true", help="merge new coverage into corpus/")
    parser.add_argument("--write-seeds", action="store_true", help="write seed inputs and exit")
    args = parser.parse_args(argv)
    if args.write_seeds:
        write_seeds()
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _has_atheris() else "hypothesis"
    status = 0
    for target in TARGET_NAMES if args.target == "all" else (args.target,):
        if engine == "atheris":
            status |= run_atheris(target, args.seconds, args.save)
        else:
            status |= run_hypothesis(target, args.seconds)
    return status


def _has_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
