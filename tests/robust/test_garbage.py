"""Garbage over UDP: random and mutated packets mixed with valid queries, against a live server.

Bounded in count (PACKETS) and time (BUDGET seconds). Asserts the server stays up, keeps
answering valid queries correctly throughout, logs no responder exception, and that the
resident memory of its process tree stays flat after the warm-up.
"""

from __future__ import annotations

import random
import socket
import struct
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from tests.robust.conftest import Launch, Server

PACKETS = 20_000
BUDGET = 20.0  # seconds for the whole load
WARMUP = 4_000  # packets before the memory baseline
CHECK_EVERY = 1_000  # packets between rounds of valid queries
MEMORY_SLACK_KIB = 6 * 1024  # allowed growth of the tree's RSS after warm-up

NAMES = [
    "example.test.",
    "www.example.test.",
    "web.example.test.",
    "nope.example.test.",
    "x.apps.example.test.",
    "a.b.ent.example.test.",
    "host.sub.example.test.",
    "x.legacy.example.test.",
    "example.org.",
]
TYPES = ["A", "AAAA", "SOA", "NS", "MX", "TXT", "ANY", "DNSKEY", "SRV", "CNAME", "DS"]


def templates(rng: random.Random) -> list[bytes]:
    out = []
    for name in NAMES:
        for rdtype in TYPES:
            query = dns.message.make_query(
                name, rdtype, use_edns=rng.choice([False, 0]), want_dnssec=rng.random() < 0.3
            )
            out.append(query.to_wire())
    return out


def garbage(rng: random.Random, valid: list[bytes]) -> bytes:
    """One hostile datagram: random bytes, a mutated query, or a header with wild counts."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 600))
    base = bytearray(rng.choice(valid))
    if kind == 1:  # flip a few bytes anywhere
        for _ in range(rng.randrange(1, 8)):
            base[rng.randrange(len(base))] = rng.randrange(256)
    elif kind == 2:  # cut short or extend with junk
        if rng.random() < 0.5:
            del base[rng.randrange(len(base)) :]
        else:
            base += rng.randbytes(rng.randrange(1, 300))
    elif kind == 3:  # header only: wild flags and counts
        base[2:12] = struct.pack(">HHHHH", *(rng.randrange(65536) for _ in range(5)))
    elif kind == 4:  # a random owner name (random-subdomain flood), random type
        label = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(12))
        qname = bytes((len(label),)) + label + b"\x07example\x04test\x00"
        base = bytearray(base[:12] + qname + struct.pack(">HH", rng.randrange(65536), 1))
        base[4:12] = b"\x00\x01\x00\x00\x00\x00\x00\x00"
    else:  # compression pointer loops and forward pointers in the question
        pointer = rng.choice([b"\xc0\x0c", b"\xc0\x0e", b"\xff\xff", b"\x3f"])
        base = bytearray(base[:12] + pointer + b"\x00\x01\x00\x01")
    return bytes(base)


def check_answers(server: Server) -> None:
    """The answers a real client gets are still exactly right (UDP, retried if lost)."""
    www = _ask(server, "www.example.test.", "A")
    assert www.rcode() == dns.rcode.NOERROR and www.flags & dns.flags.AA
    assert [(r.name.to_text(), r.rdtype) for r in www.answer] == [
        ("www.example.test.", dns.rdatatype.CNAME),
        ("web.example.test.", dns.rdatatype.A),
    ]
    assert www.answer[1][0].to_text() == "192.0.2.80"
    nope = _ask(server, "nope.example.test.", "A")
    assert nope.rcode() == dns.rcode.NXDOMAIN
    assert nope.authority[0].rdtype == dns.rdatatype.SOA
    soa = _ask(server, "example.test.", "SOA")
    assert soa.answer[0][0].serial == 2026112201


def _ask(server: Server, name: str, rdtype: str) -> dns.message.Message:
    last: Exception | None = None
    for _ in range(4):  # a flood may overflow the socket buffer: retry as a resolver would
        try:
            return server.ask(name, rdtype, timeout=1.0)
        except Exception as error:  # dns.exception.Timeout, or a reply too mangled to parse
            last = error
    raise AssertionError(f"no answer to {name} {rdtype} under garbage load: {last!r}")


def test_garbage_flood_keeps_server_correct_and_memory_flat(launch: Launch) -> None:
    server = launch()
    rng = random.Random(20261122)
    valid = templates(rng)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setblocking(False)
    target = ("127.0.0.1", server.port)
    baseline: int | None = None
    sent = replies = 0
    deadline = time.monotonic() + BUDGET
    try:
        check_answers(server)
        while sent < PACKETS and time.monotonic() < deadline:
            for _ in range(100):
                packet = garbage(rng, valid) if rng.random() < 0.8 else rng.choice(valid)
                try:
                    sink.sendto(packet, target)
                except BlockingIOError:
                    break
                sent += 1
            time.sleep(0.005)  # pace so the server works through the packets, not the kernel
            replies += _drain(sink)
            if sent % CHECK_EVERY < 100:
                assert server.alive(), f"authd died:\n{server.output()}"
                check_answers(server)
            if baseline is None and sent >= WARMUP:
                baseline = server.rss_kib()
        time.sleep(0.2)
        replies += _drain(sink)
        check_answers(server)
        final = server.rss_kib()
    finally:
        sink.close()
    print(
        f"garbage: sent {sent} packets, {replies} replies, RSS after warm-up "
        f"{baseline} KiB, at the end {final} KiB"
    )
    assert sent >= PACKETS // 4, f"only {sent} packets sent within {BUDGET} s"
    assert baseline is not None
    assert final <= baseline + MEMORY_SLACK_KIB, f"RSS grew from {baseline} to {final} KiB"
    assert server.alive()
    log = server.output()
    assert "Traceback" not in log and "responder raised" not in log, log[-3000:]


def _drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return count
        count += 1
