"""DNS over TCP (RFC 7766) on real loopback sockets: framing, pipelining, timeouts, caps."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from authd.serve.sockets import tcp_socket
from authd.serve.tcp import TcpLimits, TcpServer
from tests.support.tcp import (
    closed_by_server,
    connect,
    echo,
    frame,
    query,
    read_message,
    run,
    serving,
    settle,
)


def test_framing_whole_split_and_coalesced_messages() -> None:
    async def scenario() -> None:
        server, address = await serving()
        reader, writer = await connect(address)
        writer.write(frame(query(1)))
        assert await read_message(reader) == echo(query(1), True, None)
        # Two messages in one segment, then one message dribbled a few bytes at a time.
        writer.write(frame(query(2)) + frame(query(3)))
        assert await read_message(reader) == echo(query(2), True, None)
        assert await read_message(reader) == echo(query(3), True, None)
        data = frame(query(4))
        for i in range(0, len(data), 5):
            writer.write(data[i : i + 5])
            await writer.drain()
            await asyncio.sleep(0.01)
        assert await read_message(reader) == echo(query(4), True, None)
        writer.close()
        assert await settle(lambda: server.open_connections == 0)
        assert server.counters.queries == 4
        assert server.counters.responses == 4
        assert server.counters.accepted == server.counters.closed == 1
        await server.stop()

    run(scenario)


def test_ipv6() -> None:
    try:
        probe = tcp_socket("::1", 0)
        probe.close()
    except OSError:
        pytest.skip("no ::1 on this machine")

    async def scenario() -> None:
        server, address = await serving(host="::1")
        reader, writer = await connect(address)
        writer.write(frame(query(6)))
        assert await read_message(reader) == echo(query(6), True, None)
        writer.close()
        await server.stop()

    run(scenario)


def test_pipelined_queries_answered_as_they_complete() -> None:
    async def slow_by_label(q: bytes, tcp: bool, client: object) -> bytes | None:
        # The label length encodes a delay: the first query is the slowest to answer.
        await asyncio.sleep(q[12] * 0.03)
        return echo(q, tcp, client)

    async def scenario() -> None:
        server, address = await serving(slow_by_label)
        reader, writer = await connect(address)
        queries = [query(i, b"x" * (6 - i)) for i in range(5)]
        writer.write(b"".join(frame(q) for q in queries))
        replies = [await read_message(reader) for _ in queries]
        assert sorted(replies) == sorted(echo(q, True, None) for q in queries)
        # Completed out of order: the quickest (last sent) came back first.
        assert replies[0] == echo(queries[-1], True, None)
        assert replies[-1] == echo(queries[0], True, None)
        writer.close()
        await server.stop()

    run(scenario)


def test_in_flight_cap_stops_reading_until_answers_go_out() -> None:
    release = asyncio.Event()
    started = 0

    async def gated(q: bytes, tcp: bool, client: object) -> bytes | None:
        nonlocal started
        started += 1
        await release.wait()
        return echo(q, tcp, client)

    async def scenario() -> None:
        server, address = await serving(gated, TcpLimits(max_in_flight=3))
        reader, writer = await connect(address)
        writer.write(b"".join(frame(query(i)) for i in range(10)))
        await asyncio.sleep(0.2)
        assert started == 3
        release.set()
        replies = [await read_message(reader) for _ in range(10)]
        assert sorted(replies) == sorted(echo(query(i), True, None) for i in range(10))
        writer.close()
        await server.stop()

    run(scenario)


def test_idle_timeout_closes_quiet_connection() -> None:
    async def scenario() -> None:
        server, address = await serving(limits=TcpLimits(idle_timeout=0.3, sweep_interval=0.05))
        reader, writer = await connect(address)
        writer.write(frame(query(1)))
        assert await read_message(reader) == echo(query(1), True, None)
        started = time.monotonic()
        assert await closed_by_server(reader)  # closed by the server
        waited = time.monotonic() - started
        assert 0.25 < waited < 1.0
        assert await settle(lambda: server.open_connections == 0)
        assert server.counters.idle_timeouts == 1
        writer.close()
        await server.stop()

    run(scenario)


def test_read_timeout_ends_a_message_that_never_completes() -> None:
    async def scenario() -> None:
        limits = TcpLimits(read_timeout=0.3, idle_timeout=10, sweep_interval=0.05)
        server, address = await serving(limits=limits)
        reader, writer = await connect(address)
        # One byte every 0.1 s keeps the connection "active" but the message never lands.
        data = frame(query(1))
        started = time.monotonic()
        for byte in data:
            if writer.is_closing() or reader.at_eof():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        assert await closed_by_server(reader)
        assert time.monotonic() - started < 1.5
        assert server.counters.read_timeouts == 1
        assert server.counters.queries == 0
        writer.close()
        await server.stop()

    run(scenario)


def test_oversized_and_empty_frames_close_the_connection() -> None:
    async def scenario() -> None:
        server, address = await serving(limits=TcpLimits(max_message=512))
        for bad in ((513).to_bytes(2, "big"), b"\x00\x00"):
            reader, writer = await connect(address)
            writer.write(bad + b"\x00" * 20)
            assert await closed_by_server(reader)
            writer.close()
        assert server.counters.bad_frames == 2
        assert server.counters.queries == 0
        await server.stop()

    run(scenario)


def test_backpressure_bounds_work_for_a_client_that_never_reads() -> None:
    big = b"\x00" * 60000

    def huge(q: bytes, tcp: bool, client: object) -> bytes | None:
        return q[:12] + big

    async def scenario() -> None:
        limits = TcpLimits(write_buffer=128 * 1024, write_timeout=0.4, sweep_interval=0.05)
        server, address = await serving(huge, limits)
        sock = socket.create_connection(address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        payload = b"".join(frame(query(i)) for i in range(2000))
        sent = 0
        for _ in range(200):
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(payload[sent:])
            if sent >= len(payload):
                break
            await asyncio.sleep(0.005)
        # The client never reads: the server stops reading, then drops it at write_timeout.
        assert await settle(lambda: server.counters.write_timeouts == 1)
        assert server.open_connections == 0
        # 2000 x 60 kB would be 120 MB: it stopped after about write_buffer's worth.
        assert 0 < server.counters.queries < 100
        sock.close()
        await server.stop()

    run(scenario)


def test_per_address_cap_refuses_only_that_address() -> None:
    async def scenario() -> None:
        server, address = await serving(limits=TcpLimits(max_per_address=5))
        held = [await connect(address) for _ in range(5)]
        reader, writer = await connect(address)
        assert await closed_by_server(reader)  # refused: closed without a word
        other_reader, other_writer = await connect(address, source="127.0.0.2")
        other_writer.write(frame(query(9)))
        assert await read_message(other_reader) == echo(query(9), True, None)
        assert server.counters.refused == 1
        for _, w in [*held, (reader, writer), (other_reader, other_writer)]:
            w.close()
        assert await settle(lambda: server.open_connections == 0)
        await server.stop()

    run(scenario)


def test_new_client_served_within_a_second_despite_idle_and_slow_floods() -> None:
    cap = 200

    async def scenario() -> None:
        limits = TcpLimits(max_connections=cap, max_per_address=10_000, sweep_interval=0.05)
        server, address = await serving(limits=limits)
        loop = asyncio.get_running_loop()
        flood: list[socket.socket] = []

        async def open_raw() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            flood.append(sock)
            return sock

        # 300 idle connections and 100 slow ones that have started a message: twice the cap.
        for _ in range(300):
            await open_raw()
        slow = [await open_raw() for _ in range(100)]
        for sock in slow:
            sock.send(b"\x00")
        await asyncio.sleep(0.1)
        assert server.open_connections <= cap

        started = time.monotonic()
        reader, writer = await connect(address)
        writer.write(frame(query(42)))
        reply = await asyncio.wait_for(read_message(reader), 1.0)
        assert reply == echo(query(42), True, None)
        assert time.monotonic() - started < 1.0
        assert server.counters.evicted >= 200
        # Under full load the idle timeout has shrunk.
        assert server.idle_timeout() < limits.idle_timeout

        writer.close()
        for sock in flood:
            sock.close()
        assert await settle(lambda: server.open_connections == 0)
        c = server.counters
        assert c.accepted == c.closed
        await server.stop()

    run(scenario)


def test_graceful_stop_finishes_in_flight_queries() -> None:
    async def slow(q: bytes, tcp: bool, client: object) -> bytes | None:
        await asyncio.sleep(0.3)
        return echo(q, tcp, client)

    async def scenario() -> None:
        server, address = await serving(slow)
        reader, writer = await connect(address)
        idle_reader, idle_writer = await connect(address)
        writer.write(frame(query(5)))
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(server.stop(timeout=3.0))
        await asyncio.sleep(0.05)
        assert await closed_by_server(idle_reader)  # idle ones go at once
        assert await read_message(reader) == echo(query(5), True, None)
        assert await closed_by_server(reader)  # then this one closes too
        await stopping
        assert server.open_connections == 0
        with pytest.raises(OSError):
            await connect(address)  # no longer accepting
        writer.close()
        idle_writer.close()

    run(scenario)


def test_a_message_that_gets_no_answer_closes_the_connection_at_once() -> None:
    """As Knot: after an unreadable message the stream is not trusted; no 10 s idle wait.

    The idle timeout (30 s) is beyond the scenario's 20 s limit, so only an immediate close
    passes; the answer due before the bad message is still written.
    """

    def silent_for_garbage(q: bytes, tcp: bool, client: object) -> bytes | None:
        return None if len(q) < 12 else echo(q, tcp, client)

    async def scenario() -> None:
        server, address = await serving(silent_for_garbage, TcpLimits(idle_timeout=30))
        reader, writer = await connect(address)
        writer.write(frame(query(1)) + frame(b"\x12\x34\x00") + frame(query(2)))
        assert await read_message(reader) == echo(query(1), True, None)
        assert await closed_by_server(reader)  # query 2 came after the bad message: unread
        assert await settle(lambda: server.open_connections == 0)
        assert server.counters.bad_messages == 1
        assert server.counters.queries == 2
        writer.close()
        await server.stop()

    run(scenario)


def test_a_connection_accepted_as_the_server_stops_is_answered_not_refused() -> None:
    """Worker re-fork: the listener accepts a connection in the loop turn where stop()
    closes it, and uvloop delivers its connection_made a turn later. Its query (already
    sent) must be answered, not refused with a reset (a NOTIFY lost in a storm)."""

    async def scenario() -> None:
        sock = tcp_socket("127.0.0.1", 0)
        keeper = sock.dup()  # the main process keeps the slot's socket open, as in the pool
        server = TcpServer(echo, None)
        await server.start(sock)
        client = socket.create_connection(sock.getsockname()[:2])  # queued in the kernel
        try:
            client.sendall(frame(query(7)))
            # stop() starts on the next turn: the one whose poll accepts the connection.
            await asyncio.ensure_future(server.stop(2.0))
            client.settimeout(3)
            size = int.from_bytes(client.recv(2), "big")
            assert size == len(echo(query(7), True, None))
            assert server.counters.refused == 0 and server.counters.accepted == 1
        finally:
            client.close()
            keeper.close()

    run(scenario)
