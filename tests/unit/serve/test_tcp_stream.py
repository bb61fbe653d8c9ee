"""Multi-message answers (outbound transfers) on the TCP server: every message in order,
flow control against a client that does not read, other clients served meanwhile, the
write timeout, and no query of the same connection answered in the middle of a transfer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from authd.serve.tcp import STREAM_TURN_BYTES, TcpLimits
from authd.serve.xfrout import MessageStream
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

MESSAGES = 1000
SIZE = 16000  # 16 MB: more than loopback's socket buffers (tcp_rmem + tcp_wmem) hold


def numbered(qid: int, count: int) -> Iterator[bytes]:
    for index in range(1, count):
        yield qid.to_bytes(2, "big") + index.to_bytes(4, "big") + b"x" * (SIZE - 6)


def transfer_or_echo(data: bytes, tcp: bool, client: object) -> bytes:
    """Label "axfr" starts a stream of MESSAGES messages; anything else is echoed."""
    if b"\x04axfr" in data:
        qid = int.from_bytes(data[:2], "big")
        first = qid.to_bytes(2, "big") + (0).to_bytes(4, "big") + b"x" * (SIZE - 6)
        return MessageStream(first, numbered(qid, MESSAGES))
    return echo(data, tcp, client)


async def read_stream(reader: asyncio.StreamReader, qid: int) -> list[int]:
    indexes = []
    for _ in range(MESSAGES):
        message = await read_message(reader)
        assert int.from_bytes(message[:2], "big") == qid and len(message) == SIZE
        indexes.append(int.from_bytes(message[2:6], "big"))
    return indexes


def test_a_stream_is_written_whole_and_in_order_while_others_are_served() -> None:
    async def scenario() -> None:
        server, address = await serving(transfer_or_echo, TcpLimits(write_buffer=64 * 1024))
        slow_reader, slow_writer = await connect(address)
        slow_writer.write(frame(query(7, b"axfr")))
        # The transfer client reads nothing yet: the server's buffer fills and the pump
        # stops (pause_writing), so only part of the 6.4 MB can have left.
        conns = list(server._conns)
        assert await settle(lambda: any(c.write_paused_since is not None for c in conns))
        assert server.counters.responses < MESSAGES
        # Meanwhile another client is answered at once.
        reader, writer = await connect(address)
        writer.write(frame(query(8)))
        assert (await read_message(reader))[:2] == (8).to_bytes(2, "big")
        # Now the transfer client reads: every message arrives, in order.
        assert await read_stream(slow_reader, 7) == list(range(MESSAGES))
        # And the connection takes queries again afterwards.
        slow_writer.write(frame(query(9)))
        assert (await read_message(slow_reader))[:2] == (9).to_bytes(2, "big")
        for w in (writer, slow_writer):
            w.close()
        await server.stop()

    run(scenario)


def test_a_query_pipelined_behind_a_transfer_is_answered_after_it() -> None:
    async def scenario() -> None:
        server, address = await serving(transfer_or_echo)
        reader, writer = await connect(address)
        writer.write(frame(query(7, b"axfr")) + frame(query(8)))
        assert await read_stream(reader, 7) == list(range(MESSAGES))
        assert (await read_message(reader))[:2] == (8).to_bytes(2, "big")
        writer.close()
        await server.stop()

    run(scenario)


def test_a_transfer_client_that_never_reads_is_dropped_after_the_write_timeout() -> None:
    async def scenario() -> None:
        limits = TcpLimits(write_buffer=64 * 1024, write_timeout=0.3, sweep_interval=0.05)
        server, address = await serving(transfer_or_echo, limits)
        _reader, writer = await connect(address)
        writer.write(frame(query(7, b"axfr")))
        assert await settle(lambda: server.counters.write_timeouts == 1)
        assert await settle(lambda: server.open_connections == 0)
        writer.close()
        await server.stop()

    run(scenario)


def test_a_stream_that_fails_midway_is_cut_not_completed() -> None:
    def broken(data: bytes, tcp: bool, client: object) -> bytes:
        def rest() -> Iterator[bytes]:
            yield b"\x00\x07" + b"y" * 100
            raise RuntimeError("the version went away")

        return MessageStream(b"\x00\x07" + b"x" * 100, rest())

    async def scenario() -> None:
        server, address = await serving(broken)
        reader, writer = await connect(address)
        writer.write(frame(query(7, b"axfr")))
        assert (await read_message(reader))[2:3] == b"x"
        assert (await read_message(reader))[2:3] == b"y"
        assert await closed_by_server(reader)
        assert server.counters.responder_errors == 1
        writer.close()
        await server.stop()

    run(scenario)


def test_a_client_that_half_closes_still_gets_a_transfer_longer_than_the_grace() -> None:
    """RFC 7766 allows a client to shut down its sending side after the query; the
    transfer must not be cut after the closing grace (write_timeout) while it progresses.
    Time is the server's clock, moved by the test (never wall time)."""
    total = 3000  # 48 MB: most of it is produced after the grace has passed

    def long_transfer(data: bytes, tcp: bool, client: object) -> bytes:
        return MessageStream(
            b"\x00\x07" + (0).to_bytes(4, "big") + b"x" * (SIZE - 6), numbered(7, total)
        )

    async def scenario() -> None:
        limits = TcpLimits(write_buffer=64 * 1024, write_timeout=0.3, sweep_interval=0.01)
        server, address = await serving(long_transfer, limits)
        fake = [0.0]
        server.now = lambda: fake[0]  # type: ignore[method-assign]
        reader, writer = await connect(address)
        writer.write(frame(query(7, b"axfr")))
        writer.write_eof()
        indexes = []
        for count in range(1, total + 1):
            message = await read_message(reader)
            indexes.append(int.from_bytes(message[2:6], "big"))
            if count % 100 == 0:  # 0.04 s of server time per 1.6 MB read, 1.2 s in all
                fake[0] += 0.04
                await asyncio.sleep(0.02)  # the sweep runs meanwhile
        assert indexes == list(range(total))
        assert server.counters.write_timeouts == 0
        assert await closed_by_server(reader)  # closed once the transfer ended
        writer.close()
        await server.stop()

    run(scenario)


def test_all_transfers_share_one_budget_per_loop_turn_round_robin() -> None:
    """However many transfers run, one event-loop turn writes about STREAM_TURN_BYTES of
    them in all (the wait they add to other queries is bounded), one message per
    connection in turn."""
    size, count = 12000, 40
    turn = [0]
    pulls: list[tuple[int, int]] = []  # (turn, stream)

    def recorded(qid: int) -> Iterator[bytes]:
        for index in range(1, count):
            pulls.append((turn[0], qid))
            yield qid.to_bytes(2, "big") + index.to_bytes(4, "big") + b"z" * (size - 6)

    def three(data: bytes, tcp: bool, client: object) -> bytes:
        qid = int.from_bytes(data[:2], "big")
        return MessageStream(qid.to_bytes(2, "big") + bytes(4) + b"z" * (size - 6), recorded(qid))

    async def scenario() -> None:
        server, address = await serving(three)
        real_turn = server._pump_turn

        def counted_turn() -> None:
            turn[0] += 1
            real_turn()

        server._pump_turn = counted_turn  # type: ignore[method-assign]
        clients = [await connect(address) for _ in range(3)]
        for qid, (_, writer) in enumerate(clients, start=1):
            writer.write(frame(query(qid, b"axfr")))
        for qid, (reader, _) in enumerate(clients, start=1):
            for index in range(count):
                message = await read_message(reader)
                assert message[:6] == qid.to_bytes(2, "big") + index.to_bytes(4, "big")
        per_turn: dict[int, list[int]] = {}
        for number, qid in pulls:
            per_turn.setdefault(number, []).append(qid)
        for streams in per_turn.values():
            assert len(streams) * (size + 2) <= STREAM_TURN_BYTES + size + 2  # the budget
            assert len(set(streams)) == len(streams)  # one message per connection per turn
        assert max(len(s) for s in per_turn.values()) == 2  # 16 KiB: two 12 KB messages
        for _, writer in clients:
            writer.close()
        await server.stop()

    run(scenario)
