"""Idle and one-byte-per-second TCP connections against a live server, and a real client.

Used by test_tcp_abuse.py (a few hundred connections) and, for the larger measurement,
as a command:

    python -m tests.robust.tcp_attack --idle 2000 --slow 500 --max-clients 1000

which starts its own server (example zone, one worker, the given tcp-max-clients) on a
free loopback port, runs the attack for --seconds, probes with a fresh client meanwhile,
and prints the figures. Attackers come from many 127.0.x.y addresses (the per-address cap
would otherwise stop them early) and reconnect when the server drops them, as a real
attacker would; everything is bounded by the connection counts and the duration.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import resource
import socket
import struct
import time
from dataclasses import dataclass, field

import dns.message
import dns.query
import dns.rcode

PER_SOURCE = 50  # attacker connections per source address (under the per-address cap)
TICK = 0.2  # seconds between attacker rounds


def _query_frame() -> bytes:
    wire = dns.message.make_query("www.example.test.", "A").to_wire()
    return struct.pack(">H", len(wire)) + wire


@dataclass
class Attacker:
    source: str
    slow: bool
    sock: socket.socket | None = None
    sent: int = 0  # bytes of the frame sent so far (slow attackers)
    last_send: float = 0.0


@dataclass
class AttackReport:
    probes: list[float] = field(default_factory=list)  # seconds per probe answer
    failed_probes: list[str] = field(default_factory=list)
    connects: int = 0
    reconnects: int = 0
    connect_errors: int = 0
    peak_server_connections: int = 0
    connections_after: int = -1
    settle_seconds: float = -1.0


class Attack:
    def __init__(self, port: int, idle: int, slow: int) -> None:
        self.port = port
        self.frame = _query_frame()
        self.attackers = [Attacker(_source(i), slow=i >= idle) for i in range(idle + slow)]
        self.report = AttackReport()

    def _connect(self, attacker: Attacker) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((attacker.source, 0))
            code = sock.connect_ex(("127.0.0.1", self.port))
        except OSError:
            code = -1
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.report.connect_errors += 1
            attacker.sock = None
            return
        attacker.sock = sock
        attacker.sent = 0
        attacker.last_send = time.monotonic()
        self.report.connects += 1

    def start(self) -> None:
        for attacker in self.attackers:
            self._connect(attacker)

    def tick(self) -> None:
        """One round: notice connections the server closed (reconnect), trickle bytes."""
        now = time.monotonic()
        for attacker in self.attackers:
            sock = attacker.sock
            if sock is None or _closed(sock):
                if sock is not None:
                    sock.close()
                self.report.reconnects += 1
                self._connect(attacker)
                continue
            if attacker.slow and now - attacker.last_send >= 1.0:
                at = attacker.sent % len(self.frame)
                byte = self.frame[at : at + 1]
                try:
                    sock.send(byte)
                    attacker.sent += 1
                    attacker.last_send = now
                except OSError:
                    sock.close()
                    attacker.sock = None

    def close(self) -> None:
        for attacker in self.attackers:
            if attacker.sock is not None:
                attacker.sock.close()
                attacker.sock = None


def _source(index: int) -> str:
    group = index // PER_SOURCE
    return f"127.0.{1 + group // 250}.{1 + group % 250}"


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(512) == b""  # EOF: the server closed it
    except BlockingIOError:
        return False
    except OSError as error:
        return error.errno != errno.ENOTCONN  # not connected yet: the handshake is pending


def probe(port: int, timeout: float = 1.0) -> float:
    """Seconds for a new client to connect, ask over TCP and get the whole answer."""
    query = dns.message.make_query("www.example.test.", "A")
    start = time.monotonic()
    answer = dns.query.tcp(query, "127.0.0.1", port=port, timeout=timeout)
    elapsed = time.monotonic() - start
    if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
        raise AssertionError(f"bad answer to the probe: {answer}")
    return elapsed


def run(
    port: int,
    idle: int,
    slow: int,
    seconds: float,
    connections: object,
    probe_every: float = 1.0,
    settle_timeout: float = 10.0,
) -> AttackReport:
    """Attack for `seconds`, probing every `probe_every`; then close and watch the server.

    `connections` is a callable returning the server's open TCP connection count.
    """
    assert callable(connections)
    attack = Attack(port, idle, slow)
    report = attack.report
    try:
        attack.start()
        end = time.monotonic() + seconds
        next_probe = time.monotonic() + min(0.5, probe_every)
        while time.monotonic() < end:
            attack.tick()
            report.peak_server_connections = max(report.peak_server_connections, connections())
            if time.monotonic() >= next_probe:
                try:
                    report.probes.append(probe(port))
                except Exception as error:  # timeout or reset: a failed probe is the finding
                    report.failed_probes.append(repr(error))
                next_probe = time.monotonic() + probe_every
            time.sleep(TICK)
    finally:
        attack.close()
    start = time.monotonic()
    while time.monotonic() - start < settle_timeout:
        report.connections_after = connections()
        if report.connections_after <= 1:
            break
        time.sleep(0.1)
    report.settle_seconds = time.monotonic() - start
    return report


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def main() -> None:
    import tempfile
    from pathlib import Path

    from tests.robust.conftest import start_server, stop_server

    parser = argparse.ArgumentParser(description="TCP abuse figures against a live authd")
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--max-clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    raise_fd_limit(args.idle + args.slow + 4 * args.max_clients + 1000)
    with tempfile.TemporaryDirectory() as directory:
        server = start_server(Path(directory), f"tcp-max-clients = {args.max_clients}")
        try:
            report = run(server.port, args.idle, args.slow, args.seconds, server.tcp_connections)
        finally:
            stop_server(server)
    probes = sorted(report.probes)
    print(
        f"idle={args.idle} slow={args.slow} tcp-max-clients={args.max_clients} "
        f"seconds={args.seconds}"
    )
    if probes:
        print(
            f"probes: {len(probes)} answered, max {probes[-1] * 1000:.0f} ms, "
            f"median {probes[len(probes) // 2] * 1000:.0f} ms; failed: {report.failed_probes}"
        )
    print(
        f"attacker connects {report.connects} (reconnects {report.reconnects}, "
        f"errors {report.connect_errors}); server connections peak "
        f"{report.peak_server_connections}; after close {report.connections_after} "
        f"within {report.settle_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
