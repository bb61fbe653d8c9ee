"""What version history costs per published version (issue 14), on a synthetic zone:

- the digest (SHA-384 of the canonical zone, as ZONEMD) computed in a thread of the main
  process, as the recorder does after every publish, and how late the event loop runs
  meanwhile (a 1 ms ticker: p50/p99/max lag);
- rebuilding an older version from a retired full copy + journal (Store.load_version);
- an export (digest + master-file text + atomic write), as `authd zone export` and
  `[export]` do.

    python -m authd.bench.measure_history --records 1000000 [--json]

Everything runs in a temporary directory; the run is bounded by the zone size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import tempfile
import time
from pathlib import Path

from authd.export import export_zone
from authd.zone import names
from authd.zone.history import digest_hex
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import SOA, Record, Snapshot, SnapshotBuilder
from authd.zone.store import Store

A = 1
ORIGIN = "bench.test."


def synthetic(records: int) -> Snapshot:
    origin = names.key_from_text(ORIGIN)
    builder = SnapshotBuilder(origin)
    builder.add(origin, SOA, 3600, b"\x00\x00" + struct.pack(">IIIII", 1, 3600, 600, 86400, 60))
    for i in range(records - 1):
        label = f"h{i}".encode()
        builder.add(bytes([len(label)]) + label + origin, A, 300, struct.pack(">I", i))
    return builder.build()


async def digest_with_lag(snapshot: Snapshot) -> dict[str, float]:
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - began - 0.001)

    task = asyncio.create_task(ticker())
    began = time.perf_counter()
    await asyncio.to_thread(digest_hex, snapshot)
    elapsed = time.perf_counter() - began
    stop.set()
    await task
    lags.sort()
    return {
        "digest_s": elapsed,
        "loop_lag_p50_ms": lags[len(lags) // 2] * 1000,
        "loop_lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000,
        "loop_lag_max_ms": lags[-1] * 1000,
    }


def rebuild(snapshot: Snapshot, workdir: Path) -> dict[str, float]:
    """Serial 1 as a full copy + one IXFR step, then an AXFR replaces it: rebuild serial 2."""
    origin = snapshot.origin
    soa_old = (origin, SOA, 3600, snapshot.soa_rdata)
    soa_new = (
        origin,
        SOA,
        3600,
        snapshot.soa_rdata[:2] + struct.pack(">I", 2) + snapshot.soa_rdata[6:],
    )
    change: Record = (b"\x03new" + origin, A, 300, b"\x01\x02\x03\x04")
    second = snapshot.apply_diff([soa_old], [soa_new, change])
    with Store(workdir / "state") as store:
        store.save_full(snapshot, VersionMeta("AXFR", 1.0, "bench"))
        store.append_diff(
            origin, 1, 2, [soa_old], [soa_new, change], VersionMeta("IXFR", 2.0, "bench")
        )
        store.save_full(snapshot, VersionMeta("AXFR", 3.0, "bench"))  # retires full + journal
        began = time.perf_counter()
        found = store.load_version(origin, 2)
        elapsed = time.perf_counter() - began
    assert found is not None and found[0].record_count == second.record_count
    return {"rebuild_s": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    snapshot = synthetic(args.records)
    result: dict[str, float] = {"records": float(snapshot.record_count)}
    result.update(asyncio.run(digest_with_lag(snapshot)))
    with tempfile.TemporaryDirectory() as tmp:
        result.update(rebuild(snapshot, Path(tmp)))
        began = time.perf_counter()
        export_zone("bench.test", snapshot, Path(tmp) / "export", 0.0)
        result["export_s"] = time.perf_counter() - began
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{int(result['records'])} records: digest {result['digest_s']:.2f} s in a thread "
        f"(event loop lag p50 {result['loop_lag_p50_ms']:.1f} ms, p99 "
        f"{result['loop_lag_p99_ms']:.1f} ms, max {result['loop_lag_max_ms']:.1f} ms); "
        f"rebuild of a retired version {result['rebuild_s']:.2f} s; "
        f"export {result['export_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
