"""UDP transport on real loopback sockets: batched (recvmmsg/sendmmsg) and plain paths."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from authd.serve import udp
from authd.serve.sockets import client_address, is_wildcard, udp_socket
from authd.serve.udp import UdpListener

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS: dict[str, Runner] = {"uvloop": uvloop.run, "asyncio": asyncio.run}


def echo(query: bytes, tcp: bool, client: object) -> bytes | None:
    """A minimal responder: the query with QR set (the transports must not care what it is)."""
    if len(query) < 12:
        return None
    return query[:2] + bytes([query[2] | 0x80]) + query[3:]


def answered(q: bytes) -> bytes:
    reply = echo(q, False, None)
    assert reply is not None
    return reply


def query(qid: int, pad: int = 0) -> bytes:
    header = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + b"\x07example\x04test\x00\x00\x01\x00\x01" + b"\x00" * pad


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


MODES = [pytest.param(True, id="batched"), pytest.param(False, id="plain")]
HOSTS = [
    pytest.param("127.0.0.1", id="v4"),
    pytest.param(
        "::1", id="v6", marks=pytest.mark.skipif(not ipv6_loopback(), reason="no ::1 here")
    ),
]


async def serve(
    host: str, batched: bool, respond: udp.RespondFn = echo
) -> tuple[UdpListener, tuple[str, int]]:
    sock = udp_socket(host, 0)
    address = sock.getsockname()[:2]
    listener = UdpListener(respond, batched=batched)
    await listener.start(sock)
    assert listener.batched == batched
    return listener, address


async def exchange(
    client: socket.socket, payloads: list[bytes], timeout: float = 2.0
) -> list[bytes]:
    """Send every payload at once, then collect replies until `len(payloads)` or timeout."""
    loop = asyncio.get_running_loop()
    for payload in payloads:
        client.send(payload)
    replies: list[bytes] = []
    deadline = loop.time() + timeout
    while len(replies) < len(payloads) and loop.time() < deadline:
        try:
            replies.append(client.recv(65535))
        except BlockingIOError:
            await asyncio.sleep(0.001)
    return replies


def connected_client(address: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client.setblocking(False)
    client.connect(address)
    return client


@pytest.mark.skipif(not udp.batched_io_available(), reason="recvmmsg unavailable")
def test_batched_io_is_chosen_by_default_on_linux() -> None:
    async def scenario() -> None:
        listener = UdpListener(echo)
        await listener.start(udp_socket("127.0.0.1", 0))
        assert listener.batched
        listener.close()

    uvloop.run(scenario())


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("batched", MODES)
def test_single_query_is_answered_and_client_is_identified(host: str, batched: bool) -> None:
    if batched and not udp.batched_io_available():
        pytest.skip("recvmmsg unavailable")
    seen: list[object] = []

    def respond(q: bytes, tcp: bool, client: object) -> bytes | None:
        assert tcp is False
        seen.append(client)
        return echo(q, tcp, client)

    async def scenario() -> None:
        listener, address = await serve(host, batched, respond)
        with connected_client(address) as client:
            replies = await exchange(client, [query(0x1234)])
            assert replies == [echo(query(0x1234), False, None)]
            assert client_address(seen[0]) == client.getsockname()[:2]
        assert listener.counters.received == 1
        assert listener.counters.sent == 1
        listener.close()

    uvloop.run(scenario())


@pytest.mark.parametrize("runner", ["uvloop", "asyncio"])
@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("batched", MODES)
def test_many_datagrams_in_flight_all_answered(host: str, batched: bool, runner: str) -> None:
    if batched and not udp.batched_io_available():
        pytest.skip("recvmmsg unavailable")
    count = 600

    async def scenario() -> None:
        listener, address = await serve(host, batched)
        with connected_client(address) as client:
            # Mixed sizes, including one larger than any ordinary query.
            payloads = [query(i, pad=(i % 7) * 100) for i in range(count - 1)]
            payloads.append(query(count - 1, pad=30000))
            replies = await exchange(client, payloads)
        assert sorted(replies) == sorted(answered(p) for p in payloads)
        assert listener.counters.received == count
        assert listener.counters.sent == count
        if batched:
            # All were queued before the loop ran: recvmmsg took many per call.
            assert listener.counters.batches <= count // 32
        listener.close()

    RUNNERS[runner](scenario())


@pytest.mark.parametrize("batched", MODES)
def test_silence_and_responder_errors_do_not_stop_service(batched: bool) -> None:
    if batched and not udp.batched_io_available():
        pytest.skip("recvmmsg unavailable")

    def picky(q: bytes, tcp: bool, client: object) -> bytes | None:
        if q[12:13] == b"\x01":
            raise RuntimeError("bug in the responder")
        return echo(q, tcp, client)

    async def scenario() -> None:
        listener, address = await serve("127.0.0.1", batched, picky)
        with connected_client(address) as client:
            broken = query(1)[:12] + b"\x01a\x00\x00\x01\x00\x01"
            replies = await exchange(client, [b"\x00\x01\x02", broken, query(7)], timeout=0.5)
        assert replies == [echo(query(7), False, None)]
        assert listener.counters.no_reply == 1
        assert listener.counters.responder_errors == 1
        listener.close()

    uvloop.run(scenario())


class _FlakySend:
    """The real syscalls, except that the first sendmmsg calls fail with the given errnos.

    Loopback never fills a UDP send buffer (the skb is handed over at once), so this is how
    the EAGAIN and error paths meet a real kernel at all.
    """

    def __init__(self, real: Any, failures: list[int]) -> None:
        self.recvmmsg = real.recvmmsg
        self._real_send = real.sendmmsg
        self._failures = failures
        self.calls = 0

    def sendmmsg(self, fd: int, hdrs: int, count: int, flags: int) -> int:
        self.calls += 1
        if self._failures:
            ctypes.set_errno(self._failures.pop(0))
            return -1
        return int(self._real_send(fd, hdrs, count, flags))


@pytest.mark.skipif(not udp.batched_io_available(), reason="recvmmsg unavailable")
def test_send_eagain_waits_for_writability_and_errors_skip_one_reply() -> None:
    async def scenario() -> None:
        listener, address = await serve("127.0.0.1", True)
        batched = listener._batched
        assert batched is not None
        flaky = _FlakySend(batched._calls, [errno.EAGAIN, errno.EPERM])
        batched._calls = flaky  # type: ignore[assignment]
        with connected_client(address) as client:
            payloads = [query(i) for i in range(10)]
            replies = await exchange(client, payloads, timeout=1.0)
            # EAGAIN: nothing lost, sent once writable. EPERM: the first staged reply dropped.
            assert sorted(replies) == sorted(answered(p) for p in payloads[1:])
            assert listener.counters.send_blocked == 1
            assert listener.counters.send_errors == 1
            # Reading resumed after the blocked send drained.
            assert await exchange(client, [query(99)]) == [echo(query(99), False, None)]
        listener.close()

    uvloop.run(scenario())


def test_client_address_decodes_tuples_and_raw_sockaddrs() -> None:
    assert client_address(("192.0.2.1", 53)) == ("192.0.2.1", 53)
    raw4 = (
        socket.AF_INET.to_bytes(2, sys.byteorder)
        + (5300).to_bytes(2, "big")
        + socket.inet_pton(socket.AF_INET, "192.0.2.7")
        + bytes(8)
    )
    assert client_address(raw4) == ("192.0.2.7", 5300)
    raw6 = (
        socket.AF_INET6.to_bytes(2, sys.byteorder)
        + (53).to_bytes(2, "big")
        + bytes(4)
        + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        + bytes(4)
    )
    assert client_address(raw6) == ("2001:db8::1", 53)
    with pytest.raises(ValueError):
        client_address(b"\x00")


# -- replies leave from the address the query was sent to (wildcard binds) -------------------


def second_loopback_v4() -> bool:
    """127.0.0.2 answers on Linux's lo (127.0.0.0/8 is local), not on every other system."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


async def exchange_from(
    client: socket.socket, sends: list[tuple[bytes, tuple[str, int]]], timeout: float = 2.0
) -> dict[bytes, tuple[str, int]]:
    """Send each payload to its address (one unconnected socket), then map each reply to the
    address it came from."""
    loop = asyncio.get_running_loop()
    for payload, address in sends:
        client.sendto(payload, address)
    sources: dict[bytes, tuple[str, int]] = {}
    deadline = loop.time() + timeout
    while len(sources) < len(sends) and loop.time() < deadline:
        try:
            data, source = client.recvfrom(65535)
        except BlockingIOError:
            await asyncio.sleep(0.001)
            continue
        sources[data] = source[:2]
    return sources


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_PKTINFO is Linux's")
@pytest.mark.skipif(not second_loopback_v4(), reason="127.0.0.2 is not a local address here")
@pytest.mark.parametrize("batched", MODES)
def test_wildcard_v4_replies_leave_from_the_queried_address(batched: bool) -> None:
    if batched and not udp.batched_io_available():
        pytest.skip("recvmmsg unavailable")

    async def scenario() -> None:
        listener, (_, port) = await serve("0.0.0.0", batched)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            # Both destinations interleaved, so one recvmmsg batch carries both and each
            # reply must take its own datagram's control message, not a neighbour's.
            sends = [(query(i), ("127.0.0.2" if i % 2 else "127.0.0.1", port)) for i in range(200)]
            sources = await exchange_from(client, sends)
        assert len(sources) == len(sends)
        for payload, destination in sends:
            assert sources[answered(payload)] == destination
        assert listener.counters.sent == len(sends)
        listener.close()

    uvloop.run(scenario())


@pytest.mark.parametrize("host", HOSTS)
def test_specific_bind_keeps_the_plain_path(host: str) -> None:
    """A socket bound to one address has no packet info on and no control slots."""
    if not udp.batched_io_available():
        pytest.skip("recvmmsg unavailable")

    async def scenario() -> None:
        listener, _ = await serve(host, True)
        batched = listener._batched
        assert batched is not None
        assert batched.pktinfo is False
        assert batched._arena.control_addr == 0
        listener.close()

    uvloop.run(scenario())


def test_wildcard_detection() -> None:
    assert is_wildcard("0.0.0.0") and is_wildcard("::")
    assert not is_wildcard("127.0.0.1") and not is_wildcard("::1")
    assert not is_wildcard("not-an-address")
