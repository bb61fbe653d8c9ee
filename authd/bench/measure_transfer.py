"""Transfer speed: authd vs knotd as secondaries of the same knotd primary, on loopback.

    python -m authd.bench.measure_transfer [--records 1000000] [--budget 180]

Measures (1) the first AXFR: from the secondary's start to serving the primary's serial, and
(2) one-record IXFR: from `knotc zone-commit` on the primary (which sends NOTIFY to both) to
each secondary serving the new serial. When the authd AXFR does not finish within --budget
seconds the run is repeated with 200k records, and the output says so.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from authd.bench import peers
from authd.bench.primaries import (
    KEY,
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_preamble,
    knot_primary,
    served_serial,
    wait_for,
    write_zone,
)
from authd.bench.servers import HOST, RunningServer

ZONE = "xfr.bench"
FALLBACK_RECORDS = 200_000


def knot_secondary_config(workdir: Path, port: int, primary: tuple[str, int]) -> str:
    return (
        knot_preamble(workdir, port)
        + f"""remote:
  - id: primary
    address: {primary[0]}@{primary[1]}
    key: {KEY.name}
acl:
  - id: notify
    address: {primary[0]}
    key: {KEY.name}
    action: notify
template:
  - id: default
    storage: "{workdir}/db"
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: "{ZONE}."
    master: primary
    acl: notify
"""
    )


def start_knot_secondary(
    knotd: str, workdir: Path, port: int, primary: tuple[str, int]
) -> RunningServer:
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    (workdir / "db").mkdir(exist_ok=True)
    conf = workdir / "knot.conf"
    conf.write_text(knot_secondary_config(workdir, port, primary))
    log_path = workdir / "knotd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [knotd, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir
        )
    return RunningServer("knotd-secondary", process, HOST, port, workdir, log_path)


def knot_incoming_seconds(log: str) -> float | None:
    """The duration knotd logged for its incoming AXFR (the transfer alone, no start-up)."""
    found = re.search(r"AXFR, incoming.*finished, ([0-9.]+) seconds", log)
    return float(found.group(1)) if found else None


def timed(predicate: object, timeout: float) -> float | None:
    began = time.monotonic()
    assert callable(predicate)
    if not wait_for(predicate, timeout, 0.005):
        return None
    return time.monotonic() - began


def run(records: int, budget: float, workdir: Path) -> dict[str, float | None] | None:
    """The four figures for a zone of `records` A records; None when authd ran over budget."""
    knotd, knotc = (
        shutil.which("knotd", path="/usr/sbin:/usr/bin"),
        shutil.which("knotc", path="/usr/sbin:/usr/bin"),
    )
    if knotd is None or knotc is None:
        sys.exit("knotd/knotc not found: apt-get install knot")
    zone_file = write_zone(workdir / "primary" / f"{ZONE}.zone", ZONE, 1, names=records)
    authd_port, knot_port = peers.free_port(HOST), peers.free_port(HOST)
    primary: KnotPrimary | None = None
    authd: AuthdSecondary | None = None
    secondary: RunningServer | None = None
    figures: dict[str, float | None] = {}
    try:
        primary = knot_primary(
            knotd,
            knotc,
            workdir / "primary",
            {ZONE: zone_file},
            notify=[(HOST, authd_port), (HOST, knot_port)],
        )
        settings: dict[str, str | int] = {"max-records": 10 * records + 100}
        authd = AuthdSecondary(
            workdir / "authd", [SecondaryZone(ZONE, [primary.address], settings)], authd_port
        )
        authd.start()
        began = time.monotonic()
        authd.refresh(ZONE)  # skip the start-up spread of the first refresh
        took = timed(lambda: authd is not None and authd.serial(ZONE) == 1, budget)
        figures["authd_axfr_s"] = None if took is None else time.monotonic() - began
        if took is None:
            print(f"authd did not serve {records} records within {budget:.0f} s")
            return None

        began = time.monotonic()
        secondary = start_knot_secondary(knotd, workdir / "knot", knot_port, primary.address)
        ok = wait_for(lambda: served_serial(HOST, knot_port, ZONE) == 1, budget, 0.005)
        figures["knotd_axfr_s"] = time.monotonic() - began if ok else None

        figures["authd_axfr_wire_s"] = authd.metric(
            "authd_xfr_transfer_duration_seconds_total", zone=ZONE
        )
        figures["knotd_axfr_wire_s"] = knot_incoming_seconds(secondary.log())
        primary.control("zone-begin", ZONE)
        primary.control("zone-set", ZONE, f"changed.{ZONE}.", "300", "A", "192.0.2.77")
        committed = time.monotonic()  # NOTIFY leaves during zone-commit
        primary.control("zone-commit", ZONE)
        done: dict[str, float] = {}
        deadline = committed + 30
        while len(done) < 2 and time.monotonic() < deadline:
            now = time.monotonic()
            if "authd" not in done and served_serial(HOST, authd_port, ZONE) == 2:
                done["authd"] = now - committed
            if "knotd" not in done and served_serial(HOST, knot_port, ZONE) == 2:
                done["knotd"] = now - committed
            time.sleep(0.002)
        figures["authd_ixfr_s"] = done.get("authd")
        figures["knotd_ixfr_s"] = done.get("knotd")
        print(f"authd status after IXFR: transfer={authd.status(ZONE).get('transfer')}")
        return figures
    finally:
        for server in (authd, secondary, primary):
            if server is not None:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=180.0)
    args = parser.parse_args()
    print("command: python -m authd.bench.measure_transfer " + " ".join(sys.argv[1:]))
    records = args.records
    with tempfile.TemporaryDirectory(prefix="authd-xfr-bench-") as tmp:
        figures = run(records, args.budget, Path(tmp) / "big")
        if figures is None and records > FALLBACK_RECORDS:
            records = FALLBACK_RECORDS
            print(f"falling back to {records} records")
            figures = run(records, args.budget, Path(tmp) / "fallback")
    if figures is None:
        sys.exit("no figures: authd did not finish the AXFR within the budget")
    print(f"zone: {records} A records (+SOA, NS, glue), knotd primary, TSIG hmac-sha256")
    for label, key in (
        ("AXFR refresh->serving authd", "authd_axfr_s"),
        ("AXFR start->serving   knotd", "knotd_axfr_s"),
        ("AXFR transfer alone   authd", "authd_axfr_wire_s"),
        ("AXFR transfer alone   knotd", "knotd_axfr_wire_s"),
        ("IXFR commit->served   authd", "authd_ixfr_s"),
        ("IXFR commit->served   knotd", "knotd_ixfr_s"),
    ):
        value = figures.get(key)
        print(f"{label}: " + ("timeout" if value is None else f"{value:.3f} s"))
    authd_axfr, knot_axfr = figures.get("authd_axfr_s"), figures.get("knotd_axfr_s")
    if authd_axfr and knot_axfr:
        rate = records / authd_axfr
        print(f"AXFR authd/knotd: {authd_axfr / knot_axfr:.1f}x; authd {rate:,.0f} records/s")


if __name__ == "__main__":
    main()
