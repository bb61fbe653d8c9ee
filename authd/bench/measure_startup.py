"""Start-up time: from `authd serve` to the first authoritative answer for a large zone
served from its stored copy, against knotd's warm start on the same zone (issue 5).

authd's state-dir is prepared the way a secondary leaves it after an AXFR: the zone is read
once (zone/loader.py) and saved as a full copy with Store.save_full; the zone is configured
with a primary that does not answer, so the stored copy is all authd has. knotd is started
twice on the zone file and the second start is timed (a warm start: page cache filled).

    python -m authd.bench.measure_startup --records 1000000 [--json]

Every run is bounded (--timeout per start); only processes started here are stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from authd.bench import peers, zonegen


def names_for_records(records: int) -> int:
    """zonegen writes 1.8 records per name (A, 1/2 AAAA, 1/5 TXT, 1/10 MX) plus 8 at the apex."""
    return max(1, math.ceil((records - 8) / 1.8))


def prepare_zone(workdir: Path, records: int, origin: str) -> Path:
    path = workdir / f"bench-{records}.zone"
    if not path.exists():
        zonegen.write_zone(path, origin, names_for_records(records))
    return path


def prepare_state_dir(zone_file: Path, origin: str, state_dir: Path) -> int:
    """A state-dir holding the zone as a stored full copy; returns the record count."""
    from authd.zone.journal import VersionMeta
    from authd.zone.loader import load_zone_file
    from authd.zone.store import Store

    snapshot = load_zone_file(zone_file, origin)
    store = Store(state_dir)
    try:
        store.save_full(snapshot, VersionMeta("AXFR", time.time(), "bench"))
    finally:
        store.close()
    return snapshot.record_count


def secondary_config(
    origin: str, host: str, port: int, state_dir: Path, silent_port: int, workers: int = 1
) -> str:
    return f"""[server]
listen = ["{host}@{port}"]
workers = {workers}
state-dir = "{state_dir}"
control-socket = "{state_dir}/authd.sock"
metrics = ""

[[remote]]
id = "silent"
addresses = ["{host}@{silent_port}"]

[[zone]]
name = "{origin}"
primaries = ["silent"]
"""


def time_to_first_answer(
    argv: list[str], cwd: Path, host: str, port: int, origin: str, timeout: float
) -> float:
    """Seconds from spawning argv until the server answers the zone's SOA with AA=1."""
    log = (cwd / "startup.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd, start_new_session=True
    )
    log.close()
    try:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                tail = (cwd / "startup.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{argv[0]} exited with {process.returncode}:\n{tail}")
            if peers.soa_ready(host, port, origin, timeout=0.05):
                return time.perf_counter() - started
            time.sleep(0.01)
        raise RuntimeError(f"{argv[0]}: no answer within {timeout:.0f} s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_authd(zone_file: Path, origin: str, workdir: Path, timeout: float) -> dict[str, float]:
    program = peers.find_program("authd")
    if program is None:
        raise RuntimeError("authd: program not found (install the package in this venv)")
    state_dir = workdir / "authd-state"
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    prepared = time.perf_counter()
    records = prepare_state_dir(zone_file, origin, state_dir)
    prepare_seconds = time.perf_counter() - prepared
    host = "127.0.0.1"
    port = peers.free_port(host)
    config = workdir / "authd-startup.toml"
    config.write_text(secondary_config(origin, host, port, state_dir, peers.free_port(host)))
    argv = [program, "serve", "-c", str(config)]
    seconds = time_to_first_answer(argv, workdir, host, port, origin, timeout)
    return {"records": records, "seconds": seconds, "prepare_seconds": prepare_seconds}


def measure_knot(zone_file: Path, origin: str, workdir: Path, timeout: float) -> dict[str, float]:
    program = peers.find_program("knot")
    if program is None:
        raise RuntimeError("knotd: program not found (Debian package knot)")
    knot_dir = workdir / "knot"
    shutil.rmtree(knot_dir, ignore_errors=True)
    host = "127.0.0.1"
    port = peers.free_port(host)
    settings = peers.PeerSettings(origin, zone_file, host, port, 1, knot_dir)
    config = peers.write_config("knot", settings)
    argv = peers.command("knot", program, config)
    cold = time_to_first_answer(argv, knot_dir, host, port, origin, timeout)
    warm = time_to_first_answer(argv, knot_dir, host, port, origin, timeout)
    return {"seconds": warm, "cold_seconds": cold}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m authd.bench startup", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--origin", default=zonegen.DEFAULT_ORIGIN)
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    parser.add_argument("--timeout", type=float, default=180.0, help="per start, seconds")
    parser.add_argument("--no-knot", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="authd-startup-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        zone_file = prepare_zone(workdir, args.records, args.origin)
        result: dict[str, object] = {
            "authd": measure_authd(zone_file, args.origin, workdir, args.timeout)
        }
        if not args.no_knot:
            result["knot"] = measure_knot(zone_file, args.origin, workdir, args.timeout)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    authd = result["authd"]
    assert isinstance(authd, dict)
    prepared = authd["prepare_seconds"]
    print(f"zone: {authd['records']:,} records; state-dir prepared in {prepared:.1f} s")
    print(f"authd, from the stored copy: first answer after {authd['seconds']:.2f} s")
    knot = result.get("knot")
    if isinstance(knot, dict):
        print(
            f"knotd warm start: {knot['seconds']:.2f} s (cold {knot['cold_seconds']:.2f} s); "
            f"authd / knotd = {authd['seconds'] / knot['seconds']:.2f}x (target <= 2x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
