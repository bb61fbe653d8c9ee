"""The dnsperf driver: its command line, the parsing of its report and of its -v lines.

dnsperf (Debian package dnsperf) is the reference client: written in C, one core of it
saturates around 135-150k qps. DO and TCP are command-line flags there, so it runs only mixes
where every query has the same DO bit and transport. dnsperf 2.10 prints no percentiles; in
fixed-rate runs (-Q) its -v per-query lines ("> NOERROR name TYPE 0.000147") carry latencies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from authd.bench.results import LoadResult

# Outstanding queries: past ~250 the default UDP receive buffer overflows and each drop
# stalls a dnsperf slot for its whole timeout, so the figure measures the drops.
DEFAULT_OUTSTANDING = 100


@dataclass(frozen=True)
class DnsperfJob:
    host: str
    port: int
    query_file: Path
    seconds: float
    do: bool = False
    tcp: bool = False
    outstanding: int = DEFAULT_OUTSTANDING
    clients: int = 4
    # One sending thread per client core: dnsperf's default (a thread per core it sees) makes
    # threads fight over the pinned core and halves its rate.
    threads: int = 1
    timeout: float = 2.0
    rate: float | None = None  # fixed rate (-Q) with per-query lines (-v)


def find_dnsperf() -> str | None:
    return shutil.which("dnsperf")


def argv(program: str, job: DnsperfJob) -> list[str]:
    args = [
        program,
        "-s",
        job.host,
        "-p",
        str(job.port),
        "-d",
        str(job.query_file),
        "-l",
        f"{job.seconds:g}",
        "-q",
        str(job.outstanding),
        "-c",
        str(job.clients),
        "-T",
        str(job.threads),
        "-t",
        f"{job.timeout:g}",
        "-e",  # EDNS0 on every query, as current resolvers send (and as the built-in driver)
    ]
    if job.do:
        args.append("-D")
    if job.tcp:
        args += ["-m", "tcp"]
    if job.rate is not None:
        args += ["-Q", str(int(job.rate)), "-v"]
    return args


_COUNT = re.compile(r"^\s*Queries (sent|completed|lost):\s+(\d+)", re.MULTILINE)
_RUNTIME = re.compile(r"^\s*Run time \(s\):\s+([0-9.]+)", re.MULTILINE)
_RCODES = re.compile(r"^\s*Response codes:\s+(.*)$", re.MULTILINE)
_RCODE_ITEM = re.compile(r"([A-Z]+)\s+(\d+)\s+\(")
_VERBOSE = re.compile(r"^> (\S+) \S+ \S+ ([0-9.]+)$", re.MULTILINE)


class DnsperfError(RuntimeError):
    """dnsperf failed or printed no statistics."""


def parse_output(text: str, rate: float | None = None) -> LoadResult:
    """A LoadResult from dnsperf's stdout (statistics block plus, with -v, per-query lines)."""
    counts = {kind: int(value) for kind, value in _COUNT.findall(text)}
    runtime = _RUNTIME.search(text)
    if not {"sent", "completed", "lost"} <= counts.keys() or runtime is None:
        raise DnsperfError("dnsperf printed no statistics:\n" + text[-800:])
    rcodes: dict[str, int] = {}
    rcode_line = _RCODES.search(text)
    if rcode_line:
        rcodes = {name: int(value) for name, value in _RCODE_ITEM.findall(rcode_line.group(1))}
    # A lost query's -v line has "T" (timeout) as its status and no meaningful latency.
    latencies = tuple(
        float(seconds) * 1000.0 for status, seconds in _VERBOSE.findall(text) if status != "T"
    )
    return LoadResult(
        driver="dnsperf",
        sent=counts["sent"],
        completed=counts["completed"],
        lost=counts["lost"],
        seconds=float(runtime.group(1)),
        rcodes=rcodes,
        latencies_ms=latencies,
        target_qps=rate,
    )


def run(job: DnsperfJob, cpus: set[int] | None = None, program: str | None = None) -> LoadResult:
    """Run dnsperf to completion (bounded by -l plus its timeout), pinned to cpus."""
    program = program or find_dnsperf()
    if program is None:
        raise DnsperfError("dnsperf not found (Debian package dnsperf)")

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    done = subprocess.run(
        argv(program, job),
        capture_output=True,
        text=True,
        timeout=job.seconds + job.timeout + 30,
        preexec_fn=pin,
        check=False,
    )
    if done.returncode != 0:
        raise DnsperfError(f"dnsperf exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return parse_output(done.stdout, job.rate)
