"""The amplification authd allows one spoofed source, with and without RRL.

    python -m tests.robust.amplification [--zone SIGNED.zone] [--queries 3000] [--seconds 3]

Starts authd twice on free loopback ports (RRL off; then `[rrl] rate = 20`), each time
sends a bounded burst of DNSSEC-heavy queries (DNSKEY, ANY and NS with DO=1, EDNS 4096)
from one "victim" address (127.0.0.77, as a spoofer would put it in the source field),
collects what comes back to that address, and prints bytes out / bytes in. Responses
count their UDP payload only (the same 28 octets of IP+UDP header ride on each side).
The zone is served as example.test; pass a signed copy (ldns-signzone) for DNSKEY weight.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dns.message

from tests.robust.conftest import EXAMPLE_ZONE, start_server, stop_server

VICTIM = "127.0.0.77"
QUESTIONS = [("example.test.", "DNSKEY"), ("example.test.", "ANY"), ("example.test.", "NS")]


@dataclass
class Burst:
    queries: int = 0
    query_bytes: int = 0
    responses: int = 0
    response_bytes: int = 0
    truncated: int = 0
    seconds: float = 0.0

    @property
    def factor(self) -> float:
        return self.response_bytes / self.query_bytes if self.query_bytes else 0.0


def burst(port: int, count: int, seconds: float) -> Burst:
    """Send up to `count` queries within `seconds` from VICTIM; count what comes back."""
    wires = []
    for name, rdtype in QUESTIONS:
        query = dns.message.make_query(name, rdtype, want_dnssec=True, payload=4096)
        wires.append(query.to_wire())
    result = Burst()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((VICTIM, 0))
    sock.setblocking(False)
    start = time.monotonic()
    interval = seconds / count
    try:
        for index in range(count):
            wire = wires[index % len(wires)]
            try:
                sock.sendto(wire, ("127.0.0.1", port))
            except BlockingIOError:
                continue
            result.queries += 1
            result.query_bytes += len(wire)
            _drain(sock, result)
            pause = start + (index + 1) * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            _drain(sock, result)
            time.sleep(0.01)
    finally:
        sock.close()
    result.seconds = time.monotonic() - start
    return result


def _drain(sock: socket.socket, result: Burst) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return
        result.responses += 1
        result.response_bytes += len(data)
        if len(data) > 2 and data[2] & 0x02:
            result.truncated += 1


def measure(zone: Path, rrl_lines: str, count: int, seconds: float) -> Burst:
    with tempfile.TemporaryDirectory() as directory:
        server = start_server(
            Path(directory), extra=rrl_lines, zone_file=zone, module="tests.robust.rrl_server"
        )
        try:
            return burst(server.port, count, seconds)
        finally:
            stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--zone", type=Path, default=EXAMPLE_ZONE)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=20)
    args = parser.parse_args()
    for label, lines in (("RRL off", ""), (f"rate {args.rate}", f"[rrl]\nrate = {args.rate}\n")):
        result = measure(args.zone, lines, args.queries, args.seconds)
        print(
            f"{label:10s}: {result.queries} queries ({result.query_bytes} B) in "
            f"{result.seconds:.1f} s -> {result.responses} responses "
            f"({result.response_bytes} B, {result.truncated} truncated): "
            f"amplification {result.factor:.2f}x"
        )


if __name__ == "__main__":
    main()
