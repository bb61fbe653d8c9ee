"""Sending corpus queries to two servers over UDP and TCP (the I/O half of the comparison)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tests.interop.compare import Difference, compare
from tests.interop.corpus import Query

Address = tuple[str, int]
FIRST_TIMEOUT = 0.6  # short, so that expected silences (malformed queries) are cheap
CONFIRM_TIMEOUT = 3.0  # a silence is confirmed with this before it counts as "no reply"
WORKERS = 12


def udp_exchange(address: Address, wire: bytes, timeout: float) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.send(wire)
        try:
            return sock.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def tcp_exchange(address: Address, wire: bytes, timeout: float) -> bytes | None:
    """One framed query on a fresh connection; None when the server closes or stays silent."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            prefix = _recv_exactly(sock, 2)
            if prefix is None:
                return None
            return _recv_exactly(sock, struct.unpack("!H", prefix)[0])
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            return None


def exchange(address: Address, wire: bytes, transport: str, timeout: float) -> bytes | None:
    if transport == "udp":
        return udp_exchange(address, wire, timeout)
    return tcp_exchange(address, wire, timeout)


@dataclass
class Outcome:
    query: Query
    transport: str
    ref_wire: bytes | None
    sut_wire: bytes | None
    diffs: list[Difference] = field(default_factory=list)


def _run_one(query: Query, transport: str, ref: Address, sut: Address) -> Outcome:
    ref_wire = exchange(ref, query.wire, transport, FIRST_TIMEOUT)
    sut_wire = exchange(sut, query.wire, transport, FIRST_TIMEOUT)
    # A silence on one side only may be load, not behaviour: ask that side again, patiently.
    if ref_wire is None and sut_wire is not None:
        ref_wire = exchange(ref, query.wire, transport, CONFIRM_TIMEOUT)
    if sut_wire is None and ref_wire is not None:
        sut_wire = exchange(sut, query.wire, transport, CONFIRM_TIMEOUT)
    retry = None
    if transport == "udp" and _truncated(ref_wire) != _truncated(sut_wire):
        # Exactly one side truncated: fetch both complete (TCP) answers to judge why.
        retry = (
            exchange(ref, query.wire, "tcp", CONFIRM_TIMEOUT),
            exchange(sut, query.wire, "tcp", CONFIRM_TIMEOUT),
        )
    diffs = compare(query, transport, ref_wire, sut_wire, retry)
    return Outcome(query, transport, ref_wire, sut_wire, diffs)


def _truncated(wire: bytes | None) -> bool:
    return wire is not None and len(wire) >= 4 and bool(wire[2] & 0x02)


def run_corpus(queries: Sequence[Query], ref: Address, sut: Address) -> list[Outcome]:
    """Every query over UDP and over TCP to both servers, compared; order follows `queries`."""
    jobs = [(q, t) for q in queries for t in ("udp", "tcp")]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(lambda job: _run_one(job[0], job[1], ref, sut), jobs))
