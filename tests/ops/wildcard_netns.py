"""Run inside a fresh network namespace (`unshare -n`): `authd serve` on 0.0.0.0 and ::, then
ask it over UDP and TCP at each of 127.0.0.1, 127.0.0.2, ::1 and fd00::2 and print, as JSON,
the address each answer came from.

Usage: python wildcard_netns.py AUTHD_PROGRAM ZONE_FILE WORKDIR WORKERS

The namespace is the test's own (nothing outside it is touched): lo is brought up and
fd00::2/128 added to it as the second IPv6 address. Every wait is bounded; authd is stopped
by its PID.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype

PORT = 6991
DESTINATIONS = ("127.0.0.1", "127.0.0.2", "::1", "fd00::2")
# The client sends from the other address of the same family: left to itself the kernel
# would pick the destination as the client's source too (RFC 6724 rule 1), and a server's
# wrong choice of source would then go unnoticed.
CLIENT_SOURCE = {
    "127.0.0.1": "127.0.0.2",
    "127.0.0.2": "127.0.0.1",
    "::1": "fd00::2",
    "fd00::2": "::1",
}
ORIGIN = "example.test."


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, timeout=10)


def config(zone: Path, workdir: Path, workers: int) -> str:
    return f"""[server]
listen = ["0.0.0.0@{PORT}", "::@{PORT}"]
workers = {workers}
state-dir = "{workdir / "state"}"
control-socket = "{workdir / "authd.sock"}"
metrics = ""

[[zone]]
name = "example.test"
file = "{zone}"
"""


def query_bytes(qid: int) -> bytes:
    message = dns.message.make_query(ORIGIN, dns.rdatatype.SOA)
    message.id = qid
    return message.to_wire()


def answered(data: bytes, qid: int) -> bool:
    reply = dns.message.from_wire(data)
    return reply.id == qid and reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def udp_source(destination: str, qid: int, timeout: float = 2.0) -> str | None:
    """Where the UDP answer to a query sent to destination came from (None: no answer).

    The client socket is not connected, so an answer from any address is received and seen.
    """
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(timeout)
        client.bind((CLIENT_SOURCE[destination], 0))
        client.sendto(query_bytes(qid), (destination, PORT))
        try:
            data, source = client.recvfrom(65535)
        except TimeoutError:
            return None
        return str(source[0]) if answered(data, qid) else f"bad answer from {source[0]}"


def tcp_source(destination: str, qid: int, timeout: float = 2.0) -> str | None:
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.bind((CLIENT_SOURCE[destination], 0))
        try:
            client.connect((destination, PORT))
            wire = query_bytes(qid)
            client.sendall(len(wire).to_bytes(2, "big") + wire)
            size = int.from_bytes(client.recv(2), "big")
            data = b""
            while len(data) < size:
                chunk = client.recv(size - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError:
            return None
        # The server's side of the connection is the address it answered from.
        return str(client.getpeername()[0]) if answered(data, qid) else "bad answer"


def wait_ready(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"authd exited {process.returncode} at start")
        if udp_source("127.0.0.1", 1, timeout=0.2) is not None:
            return
        time.sleep(0.1)
    raise SystemExit(f"authd did not answer within {timeout:.0f} s")


def main(argv: list[str]) -> int:
    program, zone, workdir, workers = argv[0], Path(argv[1]), Path(argv[2]), int(argv[3])
    run("ip", "link", "set", "lo", "up")
    run("ip", "-6", "addr", "add", "fd00::2/128", "dev", "lo")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "authd.toml").write_text(config(zone, workdir, workers))
    with (workdir / "authd.log").open("wb") as log:
        process = subprocess.Popen(
            [program, "serve", "-c", str(workdir / "authd.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        wait_ready(process)
        results = {}
        for number, destination in enumerate(DESTINATIONS):
            results[destination] = {
                # Several queries each, so with more workers every worker's socket is hit.
                "udp": [udp_source(destination, 100 + number * 10 + i) for i in range(8)],
                "tcp": tcp_source(destination, 200 + number),
            }
        print(json.dumps(results))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
