"""After a large version replaces a zone, the workers are re-forked from the main process.

Each worker loads such a version into a private copy; fresh forks share the main process's
compact copy instead (memory figures: README, Performance). The re-fork must keep serving.
"""

from __future__ import annotations

import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from authd.app import RECYCLE_FROM_RECORDS
from authd.bench.zonegen import zone_text
from tests.ops.conftest import start_server, stop_server

ORIGIN = "example.test"


def worker_pids(main_pid: int) -> set[int]:
    children = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text().split()
    pids = set()
    for pid in map(int, children):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"serve" in command and b"multiprocessing" not in command:
            pids.add(pid)
    return pids


def serial_over(port: int, tcp: bool) -> int:
    request = dns.message.make_query(ORIGIN, "SOA")
    send = dns.query.tcp if tcp else dns.query.udp
    reply = send(request, "127.0.0.1", port=port, timeout=3)
    assert reply.rcode() == dns.rcode.NOERROR
    return int(reply.answer[0][0].serial)


def test_a_large_new_version_re_forks_every_worker(tmp_path: Path) -> None:
    names = RECYCLE_FROM_RECORDS  # each name holds one to four records
    server = start_server(tmp_path / "big", workers=2, zone_text=zone_text(ORIGIN, names, 1))
    try:
        before = worker_pids(server.process.pid)
        assert len(before) == 2
        server.zone_file.write_text(zone_text(ORIGIN, names, 2))
        assert server.authd("zone", "refresh", ORIGIN).returncode == 0
        deadline = time.monotonic() + 30
        after = before
        while time.monotonic() < deadline:
            after = worker_pids(server.process.pid)
            if len(after) == 2 and not after & before:
                break
            time.sleep(0.1)
        assert len(after) == 2 and not after & before, server.stderr()
        assert "workers re-forked" in server.stderr()
        # Every new worker serves the new version over both transports.
        for _ in range(20):
            assert serial_over(server.port, tcp=False) == 2
            assert serial_over(server.port, tcp=True) == 2
    finally:
        stop_server(server)
