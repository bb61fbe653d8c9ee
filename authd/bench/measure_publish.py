"""What one published version costs the workers: CPU per worker, peak memory, and the time
from publish in the main process to every worker serving it (issue 11, one publish per process).

    python -m authd.bench.measure_publish [--records 1000000] [--workers 2]

authd is a secondary (N workers) of a knotd primary serving a zone of --records A records.
Phase 1: the first AXFR, until every worker serves serial 1 and the pool has settled.
Phase 2: a one-record change on the primary (NOTIFY, IXFR), until every worker serves 2.
For each phase: CPU seconds used by the worker processes (those alive then, including the
ones forked and the ones that exited during the phase) per slot, CPU of the main process,
and the peak of the summed PSS of the process tree (sampled every 50 ms). For phase 2 also
the time from the publish in the main process (the control socket reports the new serial)
to every worker serving it (16 UDP sockets with different source ports all see serial 2:
SO_REUSEPORT spreads them over the workers).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.rdatatype

from authd.bench import peers
from authd.bench.primaries import (
    AuthdSecondary,
    SecondaryZone,
    knot_primary,
    wait_for,
    write_zone,
)
from authd.bench.servers import HOST

ZONE = "publish.bench"
TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _pss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def _is_worker(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"serve" in command and b"multiprocessing" not in command


@dataclass
class Sampler:
    """Samples the authd process tree until stopped: CPU per process, peak summed PSS."""

    main: int
    first: dict[int, float] = field(default_factory=dict)  # CPU when first seen
    last: dict[int, float] = field(default_factory=dict)
    workers: set[int] = field(default_factory=set)
    peak_pss: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(0.05)

    def sample(self) -> None:
        pids = [self.main, *_children(self.main)]
        total = 0
        for pid in pids:
            used = _cpu(pid)
            if used is None:
                continue
            if pid not in self.first:
                # Forked during the phase: everything it used counts.
                self.first[pid] = used if pid == self.main or not self.last else 0.0
                if pid != self.main and _is_worker(pid):
                    self.workers.add(pid)
            self.last[pid] = used
            total += _pss(pid)
        self.peak_pss = max(self.peak_pss, total)

    def cpu_of(self, pids: set[int]) -> float:
        return sum(self.last[p] - self.first[p] for p in pids if p in self.last)


def phase(main: int, until: object, timeout: float, step: float = 0.02) -> tuple[Sampler, bool]:
    sampler = Sampler(main)
    sampler.sample()
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    ok = wait_for(until, timeout, step)
    time.sleep(3.0)  # a re-fork after the version, if any, is part of its cost
    sampler.stop.set()
    thread.join()
    sampler.sample()
    return sampler, ok


def every_worker_serves(port: int, serial: int, sockets: list[socket.socket]) -> bool:
    """All 16 sockets get `serial` (replies to earlier rounds are skipped by their ID)."""
    ident = random.randrange(1 << 16)
    query = dns.message.make_query(ZONE + ".", dns.rdatatype.SOA)
    query.id = ident
    wire = query.to_wire()
    for sock in sockets:
        sock.sendto(wire, (HOST, port))
    for sock in sockets:
        deadline = time.monotonic() + 1.0
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                reply = dns.message.from_wire(sock.recv(4096))
            except (OSError, dns.exception.DNSException):
                return False
            if reply.id == ident:
                break
        if not reply.answer or int(reply.answer[0][0].serial) != serial:
            return False
    return True


def _stamp(line: str) -> float:
    clock = line.split()[0].rstrip("Z").split("T")[1]
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def reforked_after(log: str, serial: int) -> float | None:
    """From the log: the publish of `serial` to the end of the re-fork pass that follows
    (None when the server does not re-fork to publish, as before issue 11)."""
    published = None
    for line in log.splitlines():
        if published is None and f"serving serial {serial} " in line:
            published = _stamp(line)
        elif published is not None and "workers re-forked" in line:
            return round(_stamp(line) - published, 3)
    return None


def summary(sampler: Sampler, slots: int) -> dict[str, float]:
    workers = sampler.workers
    return {
        "worker_cpu_s_per_slot": round(sampler.cpu_of(workers) / slots, 3),
        "main_cpu_s": round(sampler.cpu_of({sampler.main}), 3),
        "worker_processes_seen": len(workers),
        "peak_summed_pss_mib": round(sampler.peak_pss / 2**20, 1),
        "end_summed_pss_mib": round(
            sum(_pss(p) for p in [sampler.main, *_children(sampler.main)]) / 2**20, 1
        ),
    }


def run(records: int, workers: int, workdir: Path, timeout: float) -> dict[str, object]:
    knotd = peers.find_program("knot")
    knotc = shutil.which("knotc") or shutil.which("knotc", path="/usr/sbin:/usr/local/sbin")
    if knotd is None or knotc is None:
        sys.exit("knotd/knotc not found: apt-get install knot")
    zone_file = write_zone(workdir / "primary" / f"{ZONE}.zone", ZONE, 1, names=records)
    port = peers.free_port(HOST)
    primary = knot_primary(knotd, knotc, workdir / "primary", {ZONE: zone_file}, [(HOST, port)])
    settings: dict[str, str | int] = {"max-records": 10 * records + 100}
    authd = AuthdSecondary(workdir / "authd", [SecondaryZone(ZONE, [primary.address], settings)])
    authd.port = port
    authd.workers = workers
    sockets = []
    for _ in range(16):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        sock.bind((HOST, 0))
        sockets.append(sock)
    result: dict[str, object] = {"records": records, "workers": workers}
    try:
        authd.start()
        assert authd.process is not None
        main = authd.process.pid
        time.sleep(1.0)
        authd.refresh(ZONE)
        sampler, ok = phase(main, lambda: every_worker_serves(port, 1, sockets), timeout)
        if not ok:
            raise RuntimeError(f"authd did not serve serial 1 within {timeout} s")
        result["axfr"] = summary(sampler, workers)

        marks: dict[str, float] = {}

        def published_and_served() -> bool:
            if "published" not in marks and authd.status(ZONE).get("serial") == 2:
                marks["published"] = time.monotonic()
            if "published" in marks and every_worker_serves(port, 2, sockets):
                marks["served"] = time.monotonic()
                return True
            return False

        primary.control("zone-begin", ZONE)
        primary.control("zone-set", ZONE, f"changed.{ZONE}.", "300", "A", "192.0.2.77")
        primary.control("zone-commit", ZONE)
        sampler, ok = phase(main, published_and_served, timeout, step=0.001)
        if not ok:
            raise RuntimeError(f"authd did not serve serial 2 within {timeout} s")
        result["ixfr"] = summary(sampler, workers)
        result["ixfr"]["publish_to_all_workers_s"] = round(  # type: ignore[index]
            marks["served"] - marks["published"], 3
        )
        result["ixfr"]["publish_to_reforked_in_log_s"] = reforked_after(  # type: ignore[index]
            authd.log(), 2
        )
    finally:
        for sock in sockets:
            sock.close()
        authd.stop()
        primary.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000, 100])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    args = parser.parse_args(argv)
    print("command: python -m authd.bench.measure_publish " + " ".join(sys.argv[1:]), flush=True)
    for records in args.records:
        if args.workdir is not None:
            figures = run(records, args.workers, args.workdir / str(records), args.timeout)
        else:
            with tempfile.TemporaryDirectory(prefix="authd-publish-bench-") as tmp:
                figures = run(records, args.workers, Path(tmp), args.timeout)
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
