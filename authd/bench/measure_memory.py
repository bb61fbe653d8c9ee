"""Memory per record of a large zone, served: authd (1 and 2 workers) against knotd (issue 5).

For each server the zone is loaded from the same generated master file (authd/bench/zonegen.py),
the server is asked for the SOA until it answers, and the proportional set size (PSS, from
/proc/<pid>/smaps_rollup) of every process in its tree is summed: shared pages (a worker's
copy-on-write view of the zone) count once in all, not once per process.

`--breakdown` also loads the zone in this process and prints what a Snapshot's memory is made
of (owner dict, blobs, canonical order, ENT set), and a prototype of a flatter canonical order
with its measured gain.

    python -m authd.bench.measure_memory --records 1000000 --workers 1 2 [--from-store]
        [--after-axfr] [--breakdown] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

from authd.bench import cpu, peers, zonegen
from authd.bench.measure_startup import prepare_state_dir, prepare_zone, secondary_config


def pss_bytes(pid: int) -> int:
    """The PSS of one process in bytes, or 0 when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_pss(root: int) -> tuple[int, int]:
    """(summed PSS in bytes, number of processes) of root and its descendants."""
    pids = cpu.tree_pids(root)
    return sum(pss_bytes(pid) for pid in pids), len(pids)


def measure_server(
    kind: str, zone_file: Path, origin: str, workers: int, workdir: Path, timeout: float
) -> dict[str, float]:
    host = "127.0.0.1"
    settings = peers.PeerSettings(
        origin, zone_file, host, peers.free_port(host), workers, workdir / f"{kind}-{workers}"
    )
    started = time.perf_counter()
    server = peers.start(kind, settings, cpus=os.sched_getaffinity(0), ready_timeout=timeout)
    try:
        ready = time.perf_counter() - started
        time.sleep(2.0)  # let workers settle (authd forks after loading)
        total, processes = tree_pss(server.pid)
    finally:
        server.stop()
    return {"pss_bytes": total, "processes": processes, "ready_seconds": ready}


def measure_authd_from_store(
    zone_file: Path, origin: str, workers: int, workdir: Path, timeout: float
) -> dict[str, float]:
    """authd as a secondary whose zone comes from a stored full copy (its primary is silent)."""
    program = peers.find_program("authd")
    if program is None:
        raise RuntimeError("authd: program not found")
    state_dir = workdir / f"store-{workers}"
    state_dir.mkdir(parents=True, exist_ok=True)
    if not any(state_dir.iterdir()):
        prepare_state_dir(zone_file, origin, state_dir)
    host = "127.0.0.1"
    port = peers.free_port(host)
    config = workdir / f"store-{workers}.toml"
    silent = peers.free_port(host)
    config.write_text(secondary_config(origin, host, port, state_dir, silent, workers))
    log = (workdir / f"store-{workers}.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [program, "serve", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd=workdir,
        start_new_session=True,
    )
    log.close()
    try:
        while not peers.soa_ready(host, port, origin, timeout=0.05):
            if process.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError(f"authd from the store did not answer; see {log.name}")
            time.sleep(0.02)
        ready = time.perf_counter() - started
        time.sleep(2.0)
        total, processes = tree_pss(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return {"pss_bytes": total, "processes": processes, "ready_seconds": ready}


def snapshot_breakdown(zone_file: Path, origin: str) -> dict[str, int]:
    """Bytes held by each part of a loaded Snapshot (CPython object sizes, shared objects once)."""
    from authd.zone.loader import load_zone_file

    snap = load_zone_file(zone_file, origin)
    gc.collect()
    blobs = dict(snap.items())
    parts = {
        "records": snap.record_count,
        "owners": len(blobs),
        "owner_dict": sys.getsizeof(blobs),
        "owner_keys": sum(sys.getsizeof(k) for k in blobs),
        "node_blobs": sum(sys.getsizeof(v) for v in blobs.values()),
        "canonical_order": sys.getsizeof(snap.order) + sum(sys.getsizeof(k) for k in snap.order),
        "ents": sys.getsizeof(snap.ents) + sum(sys.getsizeof(k) for k in snap.ents),
        "cuts_dnames": sys.getsizeof(snap.cuts) + sys.getsizeof(snap.dnames),
        "nsec3_index": sys.getsizeof(snap.nsec3_hashes) + sys.getsizeof(snap.nsec3_owners),
    }
    parts["payload_bytes"] = sum(len(k) + len(v) for k, v in blobs.items())
    # Prototype: the canonical order as one bytes object plus an array of offsets, searched
    # by bisection over the offsets: one allocation instead of one bytes object per owner.
    flat = b"".join(snap.order)
    offsets = array("I", [0])
    for key in snap.order:
        offsets.append(offsets[-1] + len(key))
    parts["canonical_order_flat"] = sys.getsizeof(flat) + sys.getsizeof(offsets)
    return parts


def measure_authd_after_axfr(
    zone_file: Path, origin: str, workers: int, workdir: Path, timeout: float
) -> dict[str, float]:
    """authd as a secondary right after its first AXFR of the zone from a knotd primary
    (the version each worker received while serving, then the re-fork of the workers)."""
    from authd.bench.primaries import AuthdSecondary, SecondaryZone, knot_primary, wait_for

    knotd = peers.find_program("knot")
    knotc = shutil.which("knotc") or shutil.which("knotc", path="/usr/sbin:/usr/local/sbin")
    if knotd is None or knotc is None:
        raise RuntimeError("knotd/knotc: program not found (apt-get install knot)")
    zone = origin.rstrip(".")
    primary = knot_primary(knotd, knotc, workdir / f"primary-{workers}", {zone: zone_file})
    settings: dict[str, str | int] = {"max-records": 20_000_000}
    authd = AuthdSecondary(
        workdir / f"axfr-{workers}", [SecondaryZone(zone, [primary.address], settings)]
    )
    authd.workers = workers
    try:
        started = time.perf_counter()
        authd.start()
        authd.refresh(zone)
        if not wait_for(lambda: authd.serial(zone) is not None, timeout, 0.05):
            raise RuntimeError(f"authd did not load {zone} by AXFR within {timeout:.0f} s")
        ready = time.perf_counter() - started
        time.sleep(3.0)  # the workers are re-forked once every one has the version
        assert authd.process is not None
        total, processes = tree_pss(authd.process.pid)
    finally:
        authd.stop()
        primary.stop()
    return {"pss_bytes": total, "processes": processes, "ready_seconds": ready}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authd.bench memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--origin", default=zonegen.DEFAULT_ORIGIN)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    parser.add_argument("--timeout", type=float, default=180.0, help="per server start, seconds")
    parser.add_argument("--no-knot", action="store_true")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument(
        "--from-store", action="store_true", help="also authd serving a stored full copy"
    )
    parser.add_argument(
        "--after-axfr", action="store_true", help="also authd after an AXFR from knotd"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="authd-memory-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        zone_file = prepare_zone(workdir, args.records, args.origin)
        records = args.records
        for workers in args.workers:
            measured = measure_server(
                "authd", zone_file, args.origin, workers, workdir, args.timeout
            )
            result[f"authd_workers_{workers}"] = measured
            if args.from_store:
                result[f"authd_from_store_workers_{workers}"] = measure_authd_from_store(
                    zone_file, args.origin, workers, workdir, args.timeout
                )
            if args.after_axfr:
                result[f"authd_after_axfr_workers_{workers}"] = measure_authd_after_axfr(
                    zone_file, args.origin, workers, workdir, args.timeout
                )
        if not args.no_knot:
            result["knot"] = measure_server(
                "knot", zone_file, args.origin, 1, workdir, args.timeout
            )
        if args.breakdown:
            breakdown = snapshot_breakdown(zone_file, args.origin)
            records = breakdown["records"]
            result["snapshot_breakdown"] = breakdown
    result["records"] = records
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    knot = result.get("knot")
    knot_per = knot["pss_bytes"] / records if isinstance(knot, dict) else None
    print(f"zone: ~{records:,} records")
    for name, value in result.items():
        if not isinstance(value, dict) or "pss_bytes" not in value:
            continue
        per = value["pss_bytes"] / records
        ratio = f", {per / knot_per:.2f}x knotd" if knot_per else ""
        print(
            f"{name}: {value['pss_bytes'] / 2**20:,.0f} MiB PSS in {value['processes']:.0f} "
            f"processes = {per:,.0f} B/record{ratio} (ready after {value['ready_seconds']:.1f} s)"
        )
    summary = result.get("snapshot_breakdown")
    if isinstance(summary, dict):
        print("snapshot, bytes per record:")
        for key, size in summary.items():
            if key not in ("records", "owners"):
                print(f"  {key:22} {size / records:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
