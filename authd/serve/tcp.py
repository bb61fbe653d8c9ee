"""DNS over TCP (RFC 7766) with the limits a server on the internet needs (RFC 7766 6.2.3).

Framing: a 2-byte length before every message. A client may send several queries without
waiting (pipelining); each is answered as soon as it is ready, so answers from an async
responder may come back out of order. Limits, all in `TcpLimits`:

- connections in total and per client address; at the total cap a new connection closes the
  connection that has been idle longest (no query being answered), so floods of idle or
  trickling connections cannot lock out a new client;
- idle timeout between queries, shrinking linearly once more than `pressure_share` of the
  connection cap is in use (down to `read_timeout` at the cap);
- read timeout: a message must arrive whole within `read_timeout` of its first byte, which
  ends one-byte-per-second senders;
- write timeout and a bounded write buffer: a client that does not read its answers stops
  being read (backpressure) and is dropped after `write_timeout`;
- message length cap and a cap on queries in flight per connection.

Multi-message answers (outbound AXFR/IXFR, a `xfrout.MessageStream`) are written by one
pump for all connections: messages are pulled one at a time, round-robin over the
connections whose transport write buffer is under its high-water mark, at most
STREAM_TURN_BYTES per event-loop turn for all transfers together (other connections and
UDP are served in between, however many transfers run); a paused buffer takes its
connection out of the round until it drains, and the write timeout ends a client that
stops reading. While a stream runs, the connection reads no
further queries (their answers would land between the transfer's messages).

Deadlines are checked by one sweep every `sweep_interval` seconds over all connections, so
no timer object is created per query.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import cast

from authd.serve.sockets import TCP_BACKLOG
from authd.serve.xfrout import MessageStream

log = logging.getLogger(__name__)

# A responder answers synchronously (bytes or None) or returns an awaitable of the same.
# The third argument identifies the client: the (host, port, ...) tuple of the peer.
TcpRespondFn = Callable[[bytes, bool, object], "bytes | Awaitable[bytes | None] | None"]

MAX_FRAME = 0xFFFF
# What TcpServer.answer returns for a message that gets no answer at all (unparsable, or the
# responder chose silence): distinct from None, which means "answered later".
NO_REPLY = b""
STOP_GRACE = 0.25  # seconds a quiet connection may still send a query when we stop
STREAM_TURN_BYTES = 16 * 1024  # transfer octets written per event-loop turn, all transfers
# together: the wait they add to any query is bounded whatever their number
STOP_ACCEPTED_WAIT = 0.02  # after closing the listener: connections it had just accepted


@dataclass(frozen=True, slots=True)
class TcpLimits:
    max_connections: int = 1000
    max_per_address: int = 100
    idle_timeout: float = 10.0
    read_timeout: float = 2.0
    write_timeout: float = 5.0
    max_message: int = 16384  # queries are small; larger frames close the connection
    max_in_flight: int = 32
    write_buffer: int = 256 * 1024  # reading pauses while more than this waits to be sent
    pressure_share: float = 0.5
    sweep_interval: float = 0.2


@dataclass(slots=True)
class TcpCounters:
    """Plain ints on the hot path; the metrics layer reads and exports them."""

    accepted: int = 0
    closed: int = 0
    refused: int = 0  # per-address cap, or total cap with nobody to evict, or stopping
    evicted: int = 0  # closed at the total cap to make room for a new client
    idle_timeouts: int = 0
    read_timeouts: int = 0
    write_timeouts: int = 0
    bad_frames: int = 0  # zero length or over max_message
    bad_messages: int = 0  # a whole message that got no answer: the connection is closed
    queries: int = 0
    responses: int = 0
    no_reply: int = 0
    responder_errors: int = 0


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_buf",
        "_paused_reading",
        "_server",
        "address",
        "closing",
        "closing_since",
        "eof_during_stream",
        "in_flight",
        "last_activity",
        "partial_since",
        "peer",
        "pump_queued",
        "stream",
        "transport",
        "write_paused_since",
    )

    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._buf = bytearray()
        self._paused_reading = False
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.peer: object = None
        self.in_flight = 0
        self.closing = False
        self.closing_since = 0.0
        self.last_activity = 0.0
        self.partial_since: float | None = None
        self.write_paused_since: float | None = None
        self.stream: Iterator[bytes] | None = None
        self.pump_queued = False
        self.eof_during_stream = False

    # -- asyncio callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer
        self.address = str(peer[0]) if peer else ""
        self.last_activity = self._server.now()
        if not self._server.admit(self):
            self.abort()
            return
        limits = self._server.limits
        self.transport.set_write_buffer_limits(high=limits.write_buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._buf += data
        self._process()

    def eof_received(self) -> bool:
        # The client is done sending; keep the transport half-open until answers are out.
        self._buf.clear()
        self.partial_since = None
        if self.in_flight == 0:
            self.close()
        elif self.stream is not None:
            # A transfer may outlast the closing grace (write_timeout): it closes when it
            # ends, and the write timeout still ends it if the client stops reading.
            self.eof_during_stream = True
        else:
            self.mark_closing()
        return True

    def pause_writing(self) -> None:
        self.write_paused_since = self._server.now()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused_since = None
        if self.stream is not None:
            self._server.want_pump(self)
            return
        self._maybe_resume_reading()
        if not self.closing:
            self._process()

    # -- framing ----------------------------------------------------------------------
    def _process(self) -> None:
        """Answer every whole message in the buffer, as far as the limits allow."""
        server = self._server
        limits = server.limits
        buf = self._buf
        out: list[bytes] = []
        out_bytes = 0
        pos = 0
        while len(buf) - pos >= 2:
            if (
                self.write_paused_since is not None
                or self.in_flight >= limits.max_in_flight
                or self.stream is not None
            ):
                self._pause_reading()
                break
            size = (buf[pos] << 8) | buf[pos + 1]
            if size == 0 or size > limits.max_message:
                server.counters.bad_frames += 1
                self.abort()
                return
            end = pos + 2 + size
            if len(buf) < end:
                break
            query = bytes(buf[pos + 2 : end])
            pos = end
            reply = server.answer(self, query)
            if reply == NO_REPLY:
                # Unreadable (or unanswerable): the stream can no longer be trusted, and the
                # client would wait for an answer that never comes. Close now, as Knot does,
                # after the answers already due; nothing more is read.
                server.counters.bad_messages += 1
                if out:
                    self._write(out)
                self._buf.clear()
                self.partial_since = None
                if self.in_flight:
                    self.mark_closing()
                else:
                    self.close()
                return
            if isinstance(reply, MessageStream):
                out.append(server.frame(reply) or b"")
                self._write(out)
                out = []
                self.start_stream(reply.rest)
                continue  # the loop pauses reading at its top
            if reply is not None:
                out.append(reply)
                out_bytes += len(reply)
                if out_bytes >= limits.write_buffer:
                    self._write(out)  # may pause writing, which stops this loop
                    out = []
                    out_bytes = 0
        if pos:
            del buf[:pos]
            self.last_activity = server.now()
            server.touch(self)
        if out:
            self._write(out)
        if not buf or self._paused_reading:
            self.partial_since = None  # nothing partial, or whole messages wait on us
        elif pos or self.partial_since is None:
            self.partial_since = server.now()  # a new message has begun

    def _write(self, frames: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.writelines(frames)

    def deliver(self, reply: bytes | None) -> None:
        """An async answer is ready (None: nothing to write, e.g. a transfer's end)."""
        self.in_flight -= 1
        server = self._server
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            framed = server.frame(reply)
            if framed is not None:
                self.transport.write(framed)
        self.last_activity = server.now()
        server.touch(self)
        if self.closing and self.in_flight == 0:
            self.close()
            return
        self._maybe_resume_reading()
        if self._buf and not self.closing:
            self._process()

    # -- multi-message answers ------------------------------------------------------------
    def start_stream(self, rest: Iterator[bytes]) -> None:
        """Write the later messages of a transfer (the first is already out)."""
        self.in_flight += 1
        self.stream = rest
        self._server.want_pump(self)

    def pump_one(self) -> int:
        """Write the transfer's next message; the octets written (0: it ended or failed).
        Asks for another turn while the write buffer has room (else resume_writing will)."""
        stream = self.stream
        transport = self.transport
        if stream is None:
            return 0
        if transport is None or transport.is_closing():
            self._end_stream()
            return 0
        server = self._server
        try:
            message = next(stream)
        except StopIteration:
            self._end_stream()
            return 0
        except Exception:
            server._responder_failed()
            self.abort()  # a transfer cut short must not look complete
            self._end_stream()
            return 0
        framed = server.frame(message)
        if framed is None:
            self.abort()
            self._end_stream()
            return 0
        transport.write(framed)  # may call pause_writing
        self.last_activity = server.now()
        if self.write_paused_since is None:
            server.want_pump(self)
        return len(framed)

    def _end_stream(self) -> None:
        self.stream = None
        if self.eof_during_stream:
            self.mark_closing()  # deliver() closes: nothing else is in flight
        self.deliver(None)

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._paused_reading
            and self.write_paused_since is None
            and self.in_flight < self._server.limits.max_in_flight
            and self.transport is not None
            and not self.closing
        ):
            self._paused_reading = False
            self.transport.resume_reading()

    # -- closing ----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A query is being answered or its answer is still being written."""
        return self.in_flight > 0 or self.write_paused_since is not None

    def mark_closing(self) -> None:
        """Take no more queries; close once the answers in flight are written."""
        if not self.closing:
            self.closing = True
            self.closing_since = self._server.now()

    def close(self) -> None:
        """Close after the buffered answers are written."""
        self.mark_closing()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.mark_closing()
        if self.transport is not None:
            self.transport.abort()


class TcpServer:
    """Serve DNS over TCP on one or more listening sockets with shared limits."""

    def __init__(self, respond: TcpRespondFn, limits: TcpLimits | None = None) -> None:
        self._respond = respond
        self.limits = limits or TcpLimits()
        self.counters = TcpCounters()
        self._conns: OrderedDict[_Connection, None] = OrderedDict()  # least recently active first
        self._per_address: dict[str, int] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[bytes | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopping = False
        self._stopped = False
        self._pump_queue: deque[_Connection] = deque()
        self._pump_scheduled = False
        self._logged_error = False

    # -- transfers: one pump for all connections ---------------------------------------
    def want_pump(self, conn: _Connection) -> None:
        """Queue a streaming connection for its next message (round-robin, once)."""
        if not conn.pump_queued:
            conn.pump_queued = True
            self._pump_queue.append(conn)
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump_turn)

    def _pump_turn(self) -> None:
        """Up to STREAM_TURN_BYTES of transfer messages, one message per connection in
        turn; the rest waits for the next turn, after the loop has served other I/O."""
        self._pump_scheduled = False
        queue = self._pump_queue
        budget = STREAM_TURN_BYTES
        for _ in range(len(queue)):
            if budget <= 0:
                break
            conn = queue.popleft()
            conn.pump_queued = False
            budget -= conn.pump_one()
        if queue and not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump_turn)

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def start(self, sock: socket.socket) -> None:
        """Serve on a bound, listening socket (see sockets.tcp_socket)."""
        self._loop = asyncio.get_running_loop()
        # asyncio calls listen() again with its own default backlog (100): pass ours.
        server = await self._loop.create_server(
            lambda: _Connection(self), sock=sock, backlog=TCP_BACKLOG
        )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.limits.sweep_interval, self._sweep)

    async def stop(self, timeout: float = 3.0) -> None:
        """Stop accepting, let queries in flight finish, then close everything."""
        self._stopping = True
        for server in self._servers:
            server.close()
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        # A connection the listener accepted just before close() gets its connection_made
        # on a later turn of the loop (uvloop schedules it): wait for it, so that it is
        # served below instead of being refused (reset, its query unanswered) after stop.
        await asyncio.sleep(STOP_ACCEPTED_WAIT)
        # A connection idle for less than STOP_GRACE may be one just accepted whose query
        # is on its way or in the kernel buffer: closing it now would reset it unanswered.
        # Keep reading it until it has been idle that long; answer, then close it.
        while self._conns and self._loop.time() < deadline:
            now = self._loop.time()
            for conn in list(self._conns):
                if conn.busy or conn.closing:
                    conn.mark_closing()  # closes itself when its last answer is written
                elif now - conn.last_activity >= STOP_GRACE:
                    conn.close()
            await asyncio.sleep(0.02)
        self._stopped = True
        for conn in list(self._conns):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        # Let connection_lost callbacks run so the counts settle at zero.
        for _ in range(10):
            if not self._conns:
                break
            await asyncio.sleep(0.01)

    # -- admission -------------------------------------------------------------------
    def admit(self, conn: _Connection) -> bool:
        limits = self.limits
        if self._stopped:  # accepted before the listener closed, admitted after stop()
            self.counters.refused += 1
            return False
        if self._per_address.get(conn.address, 0) >= limits.max_per_address:
            self.counters.refused += 1
            return False
        if len(self._conns) >= limits.max_connections and not self._evict_one():
            self.counters.refused += 1
            return False
        self._conns[conn] = None
        self._per_address[conn.address] = self._per_address.get(conn.address, 0) + 1
        self.counters.accepted += 1
        return True

    def _evict_one(self) -> bool:
        """Close the least recently active connection that is not answering anything."""
        for conn in self._conns:
            if not conn.busy and not conn.closing:
                self.counters.evicted += 1
                conn.abort()
                self._drop(conn)  # free its slot now; connection_lost comes later
                return True
        return False

    def forget(self, conn: _Connection) -> None:
        # Refused and evicted connections are not (or no longer) in the table.
        if conn in self._conns:
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        del self._conns[conn]
        left = self._per_address[conn.address] - 1
        if left:
            self._per_address[conn.address] = left
        else:
            del self._per_address[conn.address]
        self.counters.closed += 1

    def touch(self, conn: _Connection) -> None:
        if conn in self._conns:
            self._conns.move_to_end(conn)

    # -- answering -------------------------------------------------------------------
    def frame(self, reply: bytes) -> bytes | None:
        size = len(reply)
        if size > MAX_FRAME:
            self.counters.responder_errors += 1
            return None
        self.counters.responses += 1
        return size.to_bytes(2, "big") + reply

    def answer(self, conn: _Connection, query: bytes) -> bytes | None:
        """Answer one query: the framed reply now, NO_REPLY (no answer will ever come: the
        caller closes the connection), or None (answered later, through deliver)."""
        self.counters.queries += 1
        try:
            result = self._respond(query, True, conn.peer)
        except Exception:
            self._responder_failed()
            return NO_REPLY
        if result is None:
            self.counters.no_reply += 1
            return NO_REPLY
        if isinstance(result, MessageStream):
            return result  # the connection frames it and pumps the rest
        if isinstance(result, bytes):
            return self.frame(result)
        conn.in_flight += 1
        task = asyncio.ensure_future(result)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(conn, done))
        return None

    def _finished(self, conn: _Connection, task: asyncio.Task[bytes | None]) -> None:
        self._tasks.discard(task)
        reply: bytes | None = None
        if task.cancelled():
            pass
        elif task.exception() is not None:
            self._responder_failed()
        else:
            reply = task.result()
            if reply is None:
                self.counters.no_reply += 1
        conn.deliver(reply)

    def _responder_failed(self) -> None:
        self.counters.responder_errors += 1
        if not self._logged_error:
            self._logged_error = True  # once: a broken responder must not flood the log
            log.exception("responder raised; the query gets no answer")

    # -- deadlines -------------------------------------------------------------------
    def idle_timeout(self) -> float:
        """The idle timeout for the current load (RFC 7766 6.2.3: shorter under pressure)."""
        limits = self.limits
        load = len(self._conns) / limits.max_connections
        if load <= limits.pressure_share:
            return limits.idle_timeout
        squeeze = (load - limits.pressure_share) / (1.0 - limits.pressure_share)
        shrunk = limits.idle_timeout - squeeze * (limits.idle_timeout - limits.read_timeout)
        return max(min(limits.read_timeout, limits.idle_timeout), shrunk)

    def _sweep(self) -> None:
        now = self.now()
        limits = self.limits
        idle_deadline = now - self.idle_timeout()
        for conn in list(self._conns):
            if conn.closing:
                # Closing connections get write_timeout to deliver their last answers.
                if now - conn.closing_since > limits.write_timeout:
                    self.counters.write_timeouts += 1
                    conn.abort()
            elif conn.write_paused_since is not None:
                if now - conn.write_paused_since > limits.write_timeout:
                    self.counters.write_timeouts += 1
                    conn.abort()
            elif conn.partial_since is not None:
                if now - conn.partial_since > limits.read_timeout:
                    self.counters.read_timeouts += 1
                    conn.abort()
            elif conn.in_flight == 0 and conn.last_activity < idle_deadline:
                self.counters.idle_timeouts += 1
                conn.close()
        assert self._loop is not None
        self._sweeper = self._loop.call_later(limits.sweep_interval, self._sweep)
