"""`authd reload` adding 1,000 zones to 1,000, with 2 workers (issue 11, issue 15).

On the old main this left the workers <defunct> (the main blocked on their channels, killed
them and never re-forked them): nothing answered, while `authd zone status` said `ok`. Now
every added zone is answered by every worker, no worker is left a zombie, the zones' versions
reach the workers in a few coalesced re-fork passes, and status says `ok` only then.
"""

from __future__ import annotations

import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from authd import control
from authd.bench.zonegen import zone_text
from tests.ops.conftest import LiveServer, start_server, stop_server, worker_children

ZONES_PER_STEP = 1_000


def add_zones(server: LiveServer, first: int, count: int) -> None:
    zones = server.directory / "zones"
    config = server.config.read_text()
    for i in range(first, first + count):
        name = f"z{i}.test"
        (zones / f"{name}.zone").write_text(zone_text(name + ".", 2, serial=i + 1))
        config += f'\n[[zone]]\nname = "{name}"\nfile = "zones/{name}.zone"\n'
    server.config.write_text(config)


def serial(port: int, name: str) -> int | None:
    """The SOA serial over UDP from a fresh source port (SO_REUSEPORT: any worker)."""
    request = dns.message.make_query(name, "SOA")
    try:
        reply = dns.query.udp(request, "127.0.0.1", port=port, timeout=2)
    except (TimeoutError, dns.exception.Timeout):
        return None
    if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
        return None
    return int(reply.answer[0][0].serial)  # type: ignore[attr-defined]


def refork_passes(server: LiveServer) -> int:
    return server.stderr().count("workers re-forked")


def test_reload_adding_1000_zones_to_1000_keeps_every_worker_answering(tmp_path: Path) -> None:
    server = start_server(tmp_path / "many", workers=2)
    try:
        total = 0
        for _ in range(2):
            passes = refork_passes(server)
            add_zones(server, total, ZONES_PER_STEP)
            total += ZONES_PER_STEP
            result = server.authd("reload", "-c", str(server.config), timeout=120)
            assert result.returncode == 0, result.stderr + server.stderr()
            assert f"{ZONES_PER_STEP} added" in result.stdout
            sample = [f"z{i}.test" for i in range(0, total, 37)] + [f"z{total - 1}.test"]
            deadline = time.monotonic() + 60
            missing = sample
            while missing and time.monotonic() < deadline:
                missing = [n for n in missing if serial(server.port, n) != int(n[1:-5]) + 1]
                time.sleep(0.05)
            assert not missing, f"not answered: {missing[:5]}\n{server.stderr()[-3000:]}"
            # Every worker answers (several source ports per zone), and none is a zombie.
            for name in sample[:20]:
                assert all(serial(server.port, name) is not None for _ in range(8))
            workers = worker_children(server.process.pid)
            assert len(workers) == 2 and all(state != "Z" for _, state in workers), workers
            # The 1,000 publishes of one reload reached the workers in a few passes.
            assert 1 <= refork_passes(server) - passes <= 3
            statuses = control.call(server.directory / "authd.sock", "status", timeout=30)
            assert isinstance(statuses, list) and len(statuses) == total + 1
            assert {s["state"] for s in statuses} == {"ok"}, {s["state"] for s in statuses}
    finally:
        stop_server(server)
