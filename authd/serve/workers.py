"""Worker processes: one event loop per core, each on its own SO_REUSEPORT sockets.

The main process loads the zones, calls gc.freeze() and forks; the zone data is shared
copy-on-write (frozen objects are never touched by the collector, so their pages stay
shared). Each worker builds its responder and serves with uvloop.

Sockets belong to slots, not to processes. Before forking, the main process binds one UDP
and one listening TCP socket per listen address for every worker slot, all with
SO_REUSEPORT (the kernel spreads clients over the slots), and keeps them open, never reading
them, until stop(). The worker of slot i serves slot i's sockets only. So a worker that
crashes is replaced on the very same sockets: what the kernel queued for its slot meanwhile
(datagrams, TCP connections in the backlog) is answered by its successor, and there is no
bind race. `recycle()` uses the same property to replace every worker by a fresh fork of the
main process with zero lost queries: old and new worker read the same sockets for a moment,
each datagram goes to one of them, and the old one stops reading before it exits.

After that the pool knows nothing about zones. The application broadcasts small picklable
messages ("zone X now has the stored version with serial N", an IXFR diff, ...); each worker
runs `apply_update(message, zones)` on its own copy of the zone table and acknowledges.
`broadcast_and_wait()` returns True once every worker has applied a message.

A worker that dies is forked again from the main process; it inherits the main process's
zone table as it is then, so the application publishes a version in the main process
before broadcasting it (or passes `catch_up`, the messages a fresh worker must apply).
The same holds for the workers `recycle()` forks: a new worker is current when forked, and
gets every broadcast sent after its fork, even before it serves.

Control channel: one socketpair per worker, frames of a 4-byte length and a pickle.
  main -> worker: ("update", seq, message) | ("stop",)
  worker -> main: ("ready",) | ("failed", text) | ("ack", seq, error or None)
                  | ("counters", {name: int}) | ("event", payload)
                  | ("draining",)  (stopped serving: it answers no query any more)
Workers ignore SIGINT (the main process handles it), stop gracefully on SIGTERM, and exit
when the channel to the main process closes or the main process dies (PR_SET_PDEATHSIG), so
they never outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import math
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from authd.serve import sockets
from authd.serve.engine import ServingEngine
from authd.serve.tcp import TcpLimits, TcpServer
from authd.serve.udp import UdpListener

log = logging.getLogger(__name__)

Z = TypeVar("Z")
_HEADER = 4
_MAX_FRAME = 1 << 30
_CONTROL_TIMEOUT = 5.0  # a worker that cannot take a message in this long is killed
_GAUGES = frozenset({"tcp.open_connections"})  # not summed into the totals of exited workers
# Held back around fork(): until the child has reset their handlers, a signal to it would run
# the main process's handlers, which write to the main's event loop (shared wakeup fd).
_FORK_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD})
_Slot = list[tuple[socket.socket, socket.socket]]  # (UDP, listening TCP) per listen address


class ResponderLike(Protocol):
    def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None: ...


def worker_count(configured: int) -> int:
    """`workers = 0` means one per CPU this process may run on."""
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _encode(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(_HEADER, "big") + body


class _FrameReader:
    """Reassembles frames from a non-blocking stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def read(self) -> tuple[list[object], bool]:
        """Messages now complete, and whether the peer has closed."""
        eof = False
        while True:
            try:
                chunk = self._sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError, TimeoutError):
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            self._buf += chunk
            if len(chunk) < 1 << 20:
                break
        messages: list[object] = []
        while len(self._buf) >= _HEADER:
            size = int.from_bytes(self._buf[:_HEADER], "big")
            if size > _MAX_FRAME:
                return messages, True
            if len(self._buf) < _HEADER + size:
                break
            messages.append(pickle.loads(self._buf[_HEADER : _HEADER + size]))
            del self._buf[: _HEADER + size]
        return messages, eof


def _set_parent_death_signal() -> None:
    """Linux: SIGTERM this process when the main process dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


@dataclasses.dataclass
class _Worker:
    index: int
    pid: int
    channel: socket.socket
    reader: _FrameReader
    started: float
    acked: int = 0
    ready: bool = False
    failure: str | None = None
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: dict[int, str] = dataclasses.field(default_factory=dict)
    closed: bool = False  # its channel reached EOF: the process is exiting
    draining: bool = False  # stopping: answers no new query, so needs no more updates
    retired: bool = False  # reaped, its counters moved into the totals


class WorkerPool(Generic[Z]):
    """Fork `count` workers serving `listen`; deliver zone updates to all of them.

    make_responder(zones) runs in each worker and returns its responder.
    apply_update(message, zones) runs in each worker for every broadcast message.
    catch_up() runs in the main process when a worker is (re)started and returns the
    messages it must apply on top of the inherited table (default: none).
    read_counters(responder) runs in each worker and returns extra counters to report.
    on_event(payload) runs in the main process for every send_event(payload) a worker makes
    (e.g. an accepted NOTIFY).
    """

    def __init__(
        self,
        count: int,
        listen: Sequence[tuple[str, int]],
        zones: Z,
        make_responder: Callable[[Z], ResponderLike],
        apply_update: Callable[[object, Z], None],
        *,
        catch_up: Callable[[], Iterable[object]] | None = None,
        on_event: Callable[[object], None] | None = None,
        read_counters: Callable[[ResponderLike], Mapping[str, int]] | None = None,
        tcp_limits: TcpLimits | None = None,
        counter_interval: float = 1.0,
        restart_delay: float = 0.2,
        stop_timeout: float = 3.0,
    ) -> None:
        self.count = worker_count(count)
        self.listen = list(listen)
        self.bound: list[tuple[str, int]] = []  # `listen` with the real ports, after start()
        self.zones = zones
        self._make_responder = make_responder
        self._apply_update = apply_update
        self._catch_up = catch_up
        self._on_event = on_event
        self._read_counters = read_counters
        self._tcp_limits = tcp_limits
        self._counter_interval = counter_interval
        self._restart_delay = restart_delay
        self._stop_timeout = stop_timeout
        self._slots: list[_Slot] = []  # by index; open in the main process until stop()
        self._workers: dict[int, _Worker] = {}  # by index: THE worker serving each slot
        self._candidates: dict[int, _Worker] = {}  # by index: forked by recycle(), not ready
        self._retiring: dict[int, _Worker] = {}  # by pid: replaced, told to stop, not reaped
        self._seq = 0
        self._retired: dict[str, int] = {}  # counters of workers that have exited
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recycling = asyncio.Lock()
        self._stopping = False
        self._start_failure = ""  # a worker that could not start (e.g. bind), for start()
        self.restarts = 0
        self.recycles = 0  # completed recycle() passes

    # -- main process: lifecycle ------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        """The worker serving each slot (not one being started or stopped by recycle())."""
        return [w.pid for w in self._workers.values()]

    async def start(self, ready_timeout: float = 10.0) -> None:
        """Bind every slot's sockets, fork every worker and wait until all serve.

        Raises RuntimeError when a socket cannot be bound (e.g. the address is in use) or a
        worker cannot start.
        """
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._bind_slots()
        for index in range(self.count):
            self._spawn(index)
        deadline = self._loop.time() + ready_timeout
        while True:
            failed = [w for w in self._workers.values() if w.failure]
            if failed or self._start_failure:
                reason = (
                    f"worker {failed[0].index} failed: {failed[0].failure}"
                    if failed
                    else self._start_failure
                )
                await self.stop()
                raise RuntimeError(reason)
            if len(self._workers) == self.count and all(w.ready for w in self._workers.values()):
                return
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                await self.stop()
                raise RuntimeError(f"workers not ready within {ready_timeout} s")
            await self._wait_change(remaining)

    async def stop(self, timeout: float | None = None) -> None:
        """SIGTERM every worker (each finishes its TCP queries), SIGKILL stragglers, reap.

        Also ends a recycle() in progress (it returns False) and closes the slots' sockets.
        """
        self._stopping = True
        timeout = self._stop_timeout if timeout is None else timeout
        for worker in self._everyone():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._everyone() and time.monotonic() < deadline:
            for worker in self._everyone():
                if self._reap(worker.pid, block=False) is not None:  # 0 is a clean exit
                    self._retire(worker)
            await asyncio.sleep(0.02)
        for worker in self._everyone():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            self._reap(worker.pid, block=True)
            self._retire(worker)
        self._close_slots()

    async def recycle(self, ready_timeout: float = 10.0) -> bool:
        """Replace every worker, one slot at a time, by a fresh fork of the main process.

        The new worker inherits the main's zone table as it is now (shared copy-on-write),
        so private copies the old workers built since go away with them. Per slot: fork,
        wait until the new worker serves, make it the slot's worker (broadcasts sent since
        its fork reach it, wait_applied() counts it), then stop the old one gracefully and
        wait until it has exited and is reaped, so at most one extra process exists at a
        time. Both serve the slot's sockets meanwhile: no query is lost.

        True when every slot was replaced. False when a new worker could not start (it is
        killed, the old one keeps its slot and later slots are left alone; logged) or the
        pool is stopping. A call while a recycle runs waits for it, then makes its own full
        pass: the caller wants forks of the main process as it is at the time of the call.
        """
        if self._loop is None or self._stopping:
            return False
        async with self._recycling:
            for index in range(self.count):
                if self._stopping or not await self._recycle_slot(index, ready_timeout):
                    return False
            self.recycles += 1
            return True

    # -- main process: updates and counters ------------------------------------------
    def broadcast(self, message: object) -> int:
        """Send `message` to every worker; returns its sequence number."""
        self._seq += 1
        frame = _encode(("update", self._seq, message))
        # A worker recycle() is starting was forked before this message: it needs it too.
        for worker in [*self._workers.values(), *self._candidates.values()]:
            self._send(worker, frame)
        return self._seq

    async def broadcast_and_wait(self, message: object, timeout: float = 5.0) -> bool:
        """True once every worker applied `message`; False on timeout or a worker's error."""
        seq = self.broadcast(message)
        return await self.wait_applied(seq, timeout)

    async def wait_applied(self, seq: int, timeout: float) -> bool:
        """True once every process that may answer a new query has applied update `seq`.

        That is every slot's worker, and during recycle() also the new worker still starting
        (it already reads its slot's sockets before it has caught up) and the old one until
        it stops taking queries.
        """
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        while True:
            workers = list(self._workers.values())
            answering = workers + self._transitional()
            errors = [w.errors[seq] for w in answering if seq in w.errors]
            if errors:
                log.error("zone update %d failed in a worker: %s", seq, errors[0])
                return False
            if len(workers) == self.count and all(w.acked >= seq for w in answering):
                return True
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            await self._wait_change(remaining)

    def collect_counters(self) -> dict[str, int]:
        """Counters summed over all workers, ever: monotonic across restarts and recycles."""
        total = dict(self._retired)
        for worker in self._everyone():
            for name, value in worker.counters.items():
                total[name] = total.get(name, 0) + value
        return total

    # -- main process: internals -----------------------------------------------------
    def _everyone(self) -> list[_Worker]:
        """Every forked process not reaped yet: slot workers, recycle's new and old ones."""
        return [*self._workers.values(), *self._candidates.values(), *self._retiring.values()]

    def _transitional(self) -> list[_Worker]:
        """recycle()'s new and old workers that may still answer a query."""
        others = [*self._candidates.values(), *self._retiring.values()]
        return [w for w in others if not (w.closed or w.draining or w.failure or w.retired)]

    def _bind_slots(self) -> None:
        """Every slot's sockets, bound before any fork; a port 0 becomes one real port."""
        ports = [port for _, port in self.listen]
        try:
            for _ in range(self.count):
                slot: _Slot = []
                self._slots.append(slot)
                for i, (host, _port) in enumerate(self.listen):
                    try:
                        pair = sockets.udp_tcp_pair(host, ports[i], reuse_port=True)
                    except OSError as exc:
                        where = f"{host} port {ports[i]}"
                        raise RuntimeError(
                            f"cannot listen on {where} (UDP and TCP): {exc}"
                        ) from exc
                    slot.append(pair)
                    ports[i] = int(pair[0].getsockname()[1])  # the other slots share it
        except BaseException:
            self._close_slots()
            raise
        self.bound = [(host, port) for (host, _), port in zip(self.listen, ports, strict=True)]

    def _close_slots(self) -> None:
        for slot in self._slots:
            for udp_sock, tcp_sock in slot:
                udp_sock.close()
                tcp_sock.close()
        self._slots = []

    def _spawn(self, index: int) -> None:
        self._workers[index] = self._fork(index)

    def _fork(self, index: int) -> _Worker:
        """Fork a worker for slot `index`; the caller decides what role it has."""
        assert self._loop is not None
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        catch_up = list(self._catch_up()) if self._catch_up is not None else []
        gc.collect()
        gc.freeze()  # what exists now stays shared with the children copy-on-write
        main_pid = os.getpid()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                parent_end.close()
                self._child(child_end, main_pid, index, mask)
        except BaseException:
            parent_end.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            child_end.close()
        parent_end.settimeout(_CONTROL_TIMEOUT)
        worker = _Worker(index, pid, parent_end, _FrameReader(parent_end), time.monotonic())
        # A fresh fork holds the main's table as of now, i.e. every update so far; with
        # catch-up messages it is current once it has acknowledged them.
        worker.acked = self._seq - 1 if catch_up else self._seq
        self._loop.add_reader(parent_end.fileno(), self._on_message, worker)
        for message in catch_up:
            self._send(worker, _encode(("update", self._seq, message)))
        return worker

    async def _recycle_slot(self, index: int, ready_timeout: float) -> bool:
        try:
            new = self._fork(index)
        except OSError as exc:
            log.error("recycle: cannot fork a new worker %d: %s", index, exc)
            return False
        self._candidates[index] = new
        installed = False
        try:
            reason = await self._wait_ready(new, ready_timeout)
            if reason is not None:
                if self._stopping:
                    return False
                log.error(
                    "recycle: new worker %d (pid %d) did not start (%s); the old one goes on",
                    index,
                    new.pid,
                    reason,
                )
                return False
            del self._candidates[index]
            old = self._workers.get(index)  # None when it crashed and awaits its restart
            self._workers[index] = new  # from now on broadcasts go to it, not to the old one
            installed = True
            self._notify()
            if old is not None:
                self._dismiss(old, graceful=True)
                while not old.retired and not self._stopping:
                    await self._wait_change(self._stop_timeout + 2.0)
            log.info(
                "recycle: worker %d is now pid %d (was %s)",
                index,
                new.pid,
                old.pid if old is not None else "none",
            )
            return not self._stopping
        finally:
            if not installed:  # failed, cancelled or stopping: this process must not linger
                self._candidates.pop(index, None)
                if not new.retired:
                    self._dismiss(new, graceful=False)

    async def _wait_ready(self, worker: _Worker, timeout: float) -> str | None:
        """None once `worker` serves; otherwise why it will not."""
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        while True:
            if worker.failure:
                return worker.failure
            if worker.closed:  # even if it was ready: nobody would restart it
                return "it exited"
            if self._stopping:
                return "the pool is stopping"
            if worker.ready:
                return None
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return f"not ready within {timeout} s"
            await self._wait_change(remaining)

    def _dismiss(self, worker: _Worker, graceful: bool) -> None:
        """Take `worker` out of service: stop it (gracefully or not), reap it, keep counters.

        Its exit does not start a new worker. Graceful: it stops reading UDP, finishes its
        TCP connections within stop_timeout and reports its final counters; SIGKILL after
        that. Reaping runs from loop callbacks, so it finishes even if the caller is
        cancelled.
        """
        self._retiring[worker.pid] = worker
        grace = self._stop_timeout + 1.0 if graceful else 0.0
        if graceful and not worker.closed:
            self._send(worker, _encode(("stop",)))  # it reports "draining" when it has quit
        elif not graceful:
            worker.draining = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        self._poll_exit(worker, time.monotonic() + grace)

    def _poll_exit(self, worker: _Worker, kill_at: float) -> None:
        if worker.retired:
            return
        if self._reap(worker.pid, block=False) is not None:
            self._retire(worker)
            return
        if time.monotonic() >= kill_at:
            log.warning("worker pid %d did not stop in time; killing it", worker.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            kill_at = math.inf
        assert self._loop is not None
        self._loop.call_later(0.02, self._poll_exit, worker, kill_at)

    def _send(self, worker: _Worker, frame: bytes) -> None:
        try:
            worker.channel.sendall(frame)
        except OSError as exc:
            # Stuck or gone: kill it; its EOF brings a fresh worker with the current table.
            log.warning(
                "worker %d (pid %d) not reachable (%s); killing it", worker.index, worker.pid, exc
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    def _on_message(self, worker: _Worker) -> None:
        messages, eof = worker.reader.read()
        self._handle(worker, messages)
        if eof:
            assert self._loop is not None
            worker.closed = True
            self._loop.remove_reader(worker.channel.fileno())
            # Only a slot's worker is restarted; stop() and recycle() reap the others.
            if self._workers.get(worker.index) is worker and not self._stopping:
                self._on_exit(worker)
        self._notify()

    def _handle(self, worker: _Worker, messages: list[object]) -> None:
        for message in messages:
            match message:
                case ("ack", int(seq), error):
                    if error is not None:
                        worker.errors[seq] = str(error)
                    worker.acked = max(worker.acked, seq)
                case ("counters", dict(counters)):
                    worker.counters = {str(k): int(v) for k, v in counters.items()}
                case ("ready",):
                    worker.ready = True
                case ("draining",):
                    worker.draining = True
                case ("failed", text):
                    worker.failure = str(text)
                case ("event", payload):
                    if self._on_event is not None:
                        try:
                            self._on_event(payload)
                        except Exception:
                            log.exception("handling an event from worker %d failed", worker.index)

    def _on_exit(self, worker: _Worker, waited: float = 0.0) -> None:
        """The worker's channel closed: reap it (it is exiting) and start a new one."""
        assert self._loop is not None
        status = self._reap(worker.pid, block=False)
        if status is None and not self._stopping:
            if waited >= _CONTROL_TIMEOUT:  # closed its channel yet lingers: finish it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            self._loop.call_later(0.02, self._on_exit, worker, waited + 0.02)
            return
        if self._stopping:
            return
        replaced = self._workers.get(worker.index) is not worker  # by recycle(), meanwhile
        self._retire(worker)
        if replaced:
            return
        if worker.failure and not worker.ready:
            log.error("worker %d failed to start: %s", worker.index, worker.failure)
            # Retired above, so start() cannot find it among the workers: keep the reason.
            self._start_failure = f"worker {worker.index} failed: {worker.failure}"
            self._notify()
            return  # start() reports it; a bind error would only repeat
        log.warning(
            "worker %d (pid %d) exited (%s); restarting",
            worker.index,
            worker.pid,
            _describe(status),
        )
        quick = time.monotonic() - worker.started < 5.0
        delay = self._restart_delay * (10 if quick else 1)  # damp crash loops
        self._loop.call_later(delay, self._restart, worker.index)

    def _restart(self, index: int) -> None:
        if self._stopping or index in self._workers:
            return
        assert self._loop is not None
        if index in self._candidates:  # recycle() is starting one: it takes the slot or fails
            self._loop.call_later(self._restart_delay, self._restart, index)
            return
        try:
            self._spawn(index)
        except OSError as exc:  # e.g. fork: out of memory; the slot's sockets keep queueing
            log.error("cannot restart worker %d: %s; trying again", index, exc)
            self._loop.call_later(self._restart_delay * 10, self._restart, index)
            return
        self.restarts += 1

    def _retire(self, worker: _Worker) -> None:
        """Forget a worker whose process has exited; keep its counters in the totals."""
        if worker.retired:
            return
        worker.retired = True
        if self._workers.get(worker.index) is worker:
            del self._workers[worker.index]
        if self._candidates.get(worker.index) is worker:
            del self._candidates[worker.index]
        self._retiring.pop(worker.pid, None)
        if not worker.closed:  # its last counters may still wait in the channel
            with contextlib.suppress(OSError):
                worker.channel.setblocking(False)
                self._handle(worker, worker.reader.read()[0])
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(worker.channel.fileno())
        worker.channel.close()
        for name, value in worker.counters.items():
            if name in _GAUGES:
                continue
            self._retired[name] = self._retired.get(name, 0) + value
        worker.counters = {}
        self._notify()

    @staticmethod
    def _reap(pid: int, block: bool) -> int | None:
        """The exit status of `pid` once it has exited, else None."""
        try:
            reaped, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return 0  # already reaped
        return status if reaped == pid else None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _wait_change(self, timeout: float) -> None:
        assert self._changed is not None
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), min(timeout, 0.5))

    # -- worker process --------------------------------------------------------------
    def _child(
        self, channel: socket.socket, main_pid: int, index: int, mask: set[int | signal.Signals]
    ) -> None:  # pragma: no cover
        code = 1
        try:
            self._detach_from_main(main_pid, index)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # pending signals act now
            import uvloop

            loop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            code = loop.run_until_complete(_WorkerMain(self, channel, index).run())
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def _detach_from_main(self, main_pid: int, index: int) -> None:  # pragma: no cover
        # The main's event loop and its signal wakeup fd are shared with us after fork:
        # never touch them, or a signal to this worker would wake the main process.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        # Python 3.11 keeps the parent's running loop after fork (3.12 resets it).
        asyncio.events._set_running_loop(None)
        for other in self._everyone():
            other.channel.close()
        self._workers, self._candidates, self._retiring = {}, {}, {}
        # Only this slot's sockets: the other slots' belong to the main and their workers.
        for other_index, slot in enumerate(self._slots):
            if other_index != index:
                for udp_sock, tcp_sock in slot:
                    udp_sock.close()
                    tcp_sock.close()
                slot.clear()
        _set_parent_death_signal()
        if os.getppid() != main_pid:
            os._exit(0)  # the main process died before prctl took effect


_CURRENT_WORKER: _WorkerMain | None = None


def send_event(payload: object) -> None:
    """From inside a worker: hand `payload` to the main process's `on_event` callback.

    Outside a worker (tests, a single process) it does nothing.
    """
    if _CURRENT_WORKER is not None:
        _CURRENT_WORKER.send(("event", payload))


class _WorkerMain:  # pragma: no cover - runs in the child; tested through WorkerPool
    def __init__(self, pool: WorkerPool[Any], channel: socket.socket, index: int) -> None:
        self.pool = pool
        self.channel = channel
        self.index = index
        self.stopped = asyncio.Event()
        self.engine: ServingEngine | None = None
        # The engine's listeners, kept here: its stop() forgets them, the final report must not.
        self.udp: list[UdpListener] = []
        self.tcp: list[TcpServer] = []
        self.responder: ResponderLike | None = None

    def send(self, message: object) -> None:
        with contextlib.suppress(OSError):
            self.channel.sendall(_encode(message))

    async def run(self) -> int:
        global _CURRENT_WORKER
        _CURRENT_WORKER = self
        pool = self.pool
        loop = asyncio.get_running_loop()
        self.channel.settimeout(_CONTROL_TIMEOUT)
        try:
            self.responder = pool._make_responder(pool.zones)
            self.engine = ServingEngine(
                self.responder.respond,
                pool.listen,
                pool._tcp_limits or TcpLimits(),
                reuse_port=True,
                prebound=pool._slots[self.index],
            )
            await self.engine.start()
            self.udp, self.tcp = list(self.engine.udp), list(self.engine.tcp)
        except Exception as exc:
            self.send(("failed", f"{type(exc).__name__}: {exc}"))
            return 1
        reader = _FrameReader(self.channel)
        loop.add_reader(self.channel.fileno(), self._on_control, reader)
        loop.add_signal_handler(signal.SIGTERM, self.stopped.set)
        self.send(("ready",))
        reporter = loop.create_task(self._report_counters())
        await self.stopped.wait()
        # Updates are still applied while draining: a TCP connection may send a query in
        # its grace period (tcp.STOP_GRACE), and it must see what the main published.
        await self.engine.stop(pool._stop_timeout * 0.8)
        self.send(("draining",))
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self.channel.fileno())
        reporter.cancel()
        self.send(("counters", self.counters()))
        return 0

    def _on_control(self, reader: _FrameReader) -> None:
        messages, eof = reader.read()
        for message in messages:
            if not isinstance(message, tuple) or not message:
                continue
            if message[0] == "update":
                _, seq, body = message
                error: str | None = None
                try:
                    self.pool._apply_update(body, self.pool.zones)
                except Exception as exc:
                    log.exception("applying update %d failed", seq)
                    error = f"{type(exc).__name__}: {exc}"
                self.send(("ack", seq, error))
            elif message[0] == "stop":
                self.stopped.set()
        if eof:
            # The main process is gone: never outlive it (and stop polling a closed channel).
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.channel.fileno())
            self.stopped.set()

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        groups: tuple[tuple[str, list[Any]], ...] = (("udp", self.udp), ("tcp", self.tcp))
        for prefix, group in groups:
            for item in group:
                for name, value in dataclasses.asdict(item.counters).items():
                    key = f"{prefix}.{name}"
                    total[key] = total.get(key, 0) + int(value)
        for server in self.tcp:
            total["tcp.open_connections"] = (
                total.get("tcp.open_connections", 0) + server.open_connections
            )
        if self.pool._read_counters is not None and self.responder is not None:
            total.update(self.pool._read_counters(self.responder))
        return total

    async def _report_counters(self) -> None:
        while True:
            await asyncio.sleep(self.pool._counter_interval)
            self.send(("counters", self.counters()))


def _describe(status: int | None) -> str:
    if status is None:
        return "status unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    if os.WIFEXITED(status):
        return f"exit code {os.WEXITSTATUS(status)}"
    return f"status {status}"
