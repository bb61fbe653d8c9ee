"""Outbound transfers vs the worker's other queries: does a big AXFR stall them?

    python -m authd.bench.measure_xfrout [--names 100000] [--transfers 2] [--queries 2000] [--tsig]

authd (one worker) serves a generated zone from a file with `provide-xfr`. UDP query latency
is measured alone (one query at a time, `--queries` of them), then again while `--transfers`
clients pull AXFRs back to back over TCP (raw sockets, reading as fast as they can). Prints
both latency distributions, lost queries and the AXFR throughput (records/s over all clients).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import tempfile
import threading
import time
from pathlib import Path

import dns.message
import dns.tsig

from authd.bench.peers import free_port
from authd.bench.primaries import KEY
from authd.bench.servers import HOST, _start, authd_command
from authd.bench.zonegen import write_zone
from authd.xfr.stream import sign_message
from authd.zone.loader import load_zone_file

ORIGIN = "bench.test"


def config(workdir: Path, port: int, zone: Path, tsig: bool) -> str:
    key_file = workdir / "xfr.key"
    key_file.write_text(
        f'key "{KEY.name}" {{ algorithm {KEY.algorithm}; secret "{KEY.secret}"; }};\n'
    )
    key_file.chmod(0o600)
    acl = f'[{{ from = "{HOST}/32", key = "{KEY.name}" }}]' if tsig else f'["{HOST}/32"]'
    return f"""[server]
listen = ["{HOST}@{port}"]
workers = 1
state-dir = "{workdir}/state"
control-socket = "{workdir}/authd.sock"
metrics = ""

[tsig]
key-files = ["{key_file}"]

[[zone]]
name = "{ORIGIN}"
file = "{zone}"
provide-xfr = {acl}
"""


def latencies(port: int, count: int, names: int) -> tuple[list[float], int]:
    """Seconds per UDP query (one in flight), and how many got no answer within 1 s."""
    out: list[float] = []
    lost = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        for index in range(count):
            query = dns.message.make_query(f"host{index % names:06d}.{ORIGIN}.", "A")
            query.id = index & 0xFFFF
            data = query.to_wire()
            started = time.perf_counter()
            sock.sendto(data, (HOST, port))
            try:
                while True:
                    reply = sock.recv(4096)
                    if reply[:2] == data[:2]:
                        break
            except TimeoutError:
                lost += 1
                continue
            out.append(time.perf_counter() - started)
    return out, lost


def axfr_once(port: int, expected: int, tsig: bool) -> int:
    """One AXFR over a fresh connection; the records received."""
    query = dns.message.make_query(f"{ORIGIN}.", "AXFR").to_wire()
    if tsig:
        query, _ = sign_message(
            query, dns.tsig.Key(KEY.name, KEY.secret, KEY.algorithm), time.time()
        )
    records = 0
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(struct.pack(">H", len(query)) + query)
        reader = sock.makefile("rb", buffering=1 << 20)
        while records < expected:
            size = struct.unpack(">H", reader.read(2))[0]
            message = reader.read(size)
            records += struct.unpack_from(">H", message, 6)[0]
    return records


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
        "max_ms": round(ms[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--transfers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--tsig", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authd-xfrout-") as tmp:
        workdir = Path(tmp)
        zone = write_zone(workdir / "bench.zone", ORIGIN, args.names)
        expected = load_zone_file(zone, ORIGIN).record_count + 1  # the SOA comes twice
        port = free_port(HOST)
        (workdir / "authd.toml").write_text(config(workdir, port, zone, args.tsig))
        command = [*authd_command(), "serve", "-c", str(workdir / "authd.toml")]
        server = _start("authd", command, workdir, port, [ORIGIN])
        try:
            alone, lost_alone = latencies(port, args.queries, args.names)
            stop = threading.Event()
            done = [0] * args.transfers
            received = [0] * args.transfers

            def pull(slot: int) -> None:
                while not stop.is_set():
                    received[slot] += axfr_once(port, expected, args.tsig)
                    done[slot] += 1

            threads = [threading.Thread(target=pull, args=(i,)) for i in range(args.transfers)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            time.sleep(0.5)  # the transfers are under way
            during, lost_during = latencies(port, args.queries, args.names)
            stop.set()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
        finally:
            server.stop()
    print(
        json.dumps(
            {
                "zone_records": expected - 1,
                "transfers_in_parallel": args.transfers,
                "tsig": args.tsig,
                "queries_alone": summary(alone) | {"lost": lost_alone},
                "queries_during_transfers": summary(during) | {"lost": lost_during},
                "axfrs_completed": sum(done),
                "axfr_records_per_second": round(sum(received) / elapsed),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
