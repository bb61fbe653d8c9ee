"""Versions swapped under load across 2 workers: no response mixes two versions, none is lost,
and once a refresh has returned no worker answers from an older version (issue 5).

Each version N of the zone has `mx MX N host` and `host A 10.0.0.N`: the MX answer and the
A record in its additional section must always carry the same N.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.rdatatype

from authd.control import call
from tests.support.system import free_port

VERSIONS = 12  # swaps under load
QUERY_TIMEOUT = 2.0


def zone_text(version: int) -> str:
    return (
        f"$ORIGIN swap.test.\n$TTL 300\n"
        f"@ IN SOA ns hostmaster {version} 3600 900 1209600 300\n"
        "@ IN NS ns\nns IN A 192.0.2.1\n"
        f"mx IN MX {version} host\nhost IN A 10.0.0.{version}\n"
    )


def versions_in(wire: bytes) -> tuple[int, int]:
    """(MX preference, last octet of the additional A) of one response."""
    message = dns.message.from_wire(wire)
    preference = next(r.preference for rrset in message.answer for r in rrset)
    address = next(
        r.address for rrset in message.additional if rrset.rdtype == dns.rdatatype.A for r in rrset
    )
    return preference, int(address.rsplit(".", 1)[1])


def test_versions_swap_under_load_without_mixing_or_loss(tmp_path: Path) -> None:
    port = free_port()
    zone = tmp_path / "swap.zone"
    zone.write_text(zone_text(1))
    config = tmp_path / "authd.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1@{port}"]\nworkers = 2\nstate-dir = "state"\n'
        'control-socket = "authd.sock"\nmetrics = ""\n'
        f'[[zone]]\nname = "swap.test"\nfile = "{zone}"\n'
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "authd.cli", "serve", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    results: list[tuple[int, int]] = []
    lost: list[int] = []
    stop = threading.Event()
    floor = [1]  # the version every answer must have reached (a refresh has returned)
    stale: list[tuple[int, int]] = []

    def load() -> None:
        query = dns.message.make_query("mx.swap.test", "MX")
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        for sock in sockets:
            sock.settimeout(QUERY_TIMEOUT)
        index = 0
        while not stop.is_set() and index < 200_000:  # bounded in count and time
            sock = sockets[index % len(sockets)]  # several source ports: both workers answer
            query.id = index & 0xFFFF
            required = floor[0]
            sock.sendto(query.to_wire(), ("127.0.0.1", port))
            try:
                pair = versions_in(sock.recv(4096))
            except TimeoutError:
                lost.append(index)
            else:
                results.append(pair)
                if pair[0] < required:
                    stale.append((required, pair[0]))
            index += 1
        for sock in sockets:
            sock.close()

    try:
        control = tmp_path / "authd.sock"
        deadline = time.monotonic() + 15
        while not control.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        call(control, "status")  # the daemon is up
        worker = threading.Thread(target=load)
        worker.start()
        try:
            for version in range(2, VERSIONS + 1):
                time.sleep(0.15)
                zone.write_text(zone_text(version))
                os.utime(zone, (time.time() + version, time.time() + version))
                call(control, "refresh", zone="swap.test")  # returns once every worker serves it
                floor[0] = version
            time.sleep(0.2)
        finally:
            stop.set()
            worker.join(timeout=QUERY_TIMEOUT + 5)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    print(f"{len(results)} answers across {VERSIONS} versions, {len(lost)} lost")
    assert len(results) > 200, f"only {len(results)} answers under load"
    mixed = [pair for pair in results if pair[0] != pair[1]]
    assert not mixed, f"responses mixing two versions: {mixed[:5]}"
    seen = {pair[0] for pair in results}
    assert 1 in seen and VERSIONS in seen, f"versions seen: {sorted(seen)}"
    assert not stale, f"old versions after their refresh returned: {stale[:5]}"
    assert not lost, f"{len(lost)} of {len(results) + len(lost)} queries got no answer"
