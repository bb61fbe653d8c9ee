"""Worker processes: one event loop per core, each on its own SO_REUSEPORT sockets.

The main process loads and builds every zone version, calls gc.freeze() and forks; the zone
data is shared copy-on-write (frozen objects are never touched by the collector, so their
pages stay shared). Each worker builds its responder and serves with uvloop.

One publish per process: a worker never rebuilds a version. The application publishes a
version in the main process's zone table, then calls `publish()`, which returns a
generation number G and re-forks every slot's worker from the main process (`recycle()`);
`wait_published(G)` returns once every slot's worker was forked after G and nothing older
answers. Publishes are coalesced: a pass re-forks (all slots at once) each slot whose worker
is older than the newest generation when the pass starts, and passes start at most every
`publish_interval` (0.1 s) or twice the last pass's length (at most 2 s), whichever is
longer, so a version waits at most for the pass in progress, that gap and one more pass,
however many zones change.

Sockets belong to slots, not to processes. Before forking, the main process binds one UDP
and one listening TCP socket per listen address for every worker slot, all with
SO_REUSEPORT (the kernel spreads clients over the slots), and keeps them open, never reading
them, until stop(). The worker of slot i serves slot i's sockets only. So a worker that
crashes is replaced on the very same sockets: what the kernel queued for its slot meanwhile
(datagrams, TCP connections in the backlog) is answered by its successor, and there is no
bind race. A re-fork has the same property: old and new worker read the same sockets for a
moment, each datagram goes to one of them, and the old one stops reading before it exits,
so no query is lost.

Small state changes that rebuild nothing (SERVFAIL on/off, a zone added or removed) are
broadcast as messages (updates.py); each worker applies them to its own table and
acknowledges; `broadcast_and_wait()` returns True once every worker has applied one.

Control channel: one socketpair per worker, frames of a 4-byte length and a pickle, written
without blocking from a per-process outgoing buffer (loop.add_writer) and always read.
  main -> worker: ("update", seq, message) | ("stop",)
  worker -> main: ("ready",) | ("failed", text) | ("ack", seq, error or None)
                  | ("counters", {name: int}) | ("event", payload)
                  | ("draining",)  (no new query reaches it; answers in flight may follow)
Workers ignore SIGINT (the main process handles it), stop gracefully on SIGTERM, and exit
when the channel to the main process closes or the main process dies (PR_SET_PDEATHSIG), so
they never outlive it.

Worker processes as a transition table (`TRANSITIONS`, `step`):

    fork ──▶ STARTING ──ready──▶ SERVING
               │  │                │  │
               │  └─────stop───────┼──┴──stop──▶ DRAINING ──quiet/exited──▶ STOPPED
               │                   │
               └──failed/exited────┴──exited──▶ CRASHED ──(slot worker: re-forked)

Invariants:
  1. Each slot has at most one slot worker (`_slot_workers[i]`), STARTING or SERVING; it is
     the one re-forked when it crashes. A re-fork candidate is STARTING and not the slot
     worker until it is SERVING; then it becomes the slot worker and the old one is sent
     "stop" (DRAINING).
  2. Processes that may answer a query: STARTING, SERVING, DRAINING. STOPPED and CRASHED
     ones answer nothing; they are forgotten once reaped (waitpid), their counters kept.
  3. A slot whose worker crashed always gets a new one, after a damped backoff (doubling per
     quick crash, capped), unless the pool is stopping or start() is failing. The
     supervisor tick reaps and restarts even when no channel event arrives, and kills a
     restarted worker that is not ready within ready_timeout (it then counts as crashed).
  4. The main process never blocks on a worker's socket: frames queue in the worker's
     outgoing buffer; one whose buffer exceeds _MAX_BACKLOG is killed (then re-forked).
  5. A worker holds every version published up to its `generation` (the pool's generation
     at its fork); every message broadcast after its fork reaches it.
  6. Unlisted (state, event) pairs leave the state unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import enum
import gc
import logging
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from authd.serve import sockets
from authd.serve.engine import ServingEngine
from authd.serve.tcp import TcpLimits, TcpServer
from authd.serve.udp import UdpListener

log = logging.getLogger(__name__)

Z = TypeVar("Z")
_HEADER = 4
_MAX_FRAME = 1 << 30
_MAX_BACKLOG = 64 << 20  # bytes queued for a worker that does not read: it is stuck, kill it
_TICK = 0.1  # seconds between supervisor passes (reap, restart, kill stragglers)
_QUICK_CRASH = 5.0  # a worker that dies sooner after its fork counts as a crash loop
_MAX_RESTART_DELAY = 10.0
PASS_SPACING = 2.0  # publish passes start at least this many pass lengths apart
MAX_PASS_SECONDS = 1.0  # ...counting a pass as at most this long (a change waits <= 2 s more)
_GAUGES = frozenset({"tcp.open_connections"})  # not summed into the totals of exited workers
# Held back around fork(): until the child has reset their handlers, a signal to it would run
# the main process's handlers, which write to the main's event loop (shared wakeup fd).
_FORK_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD})
_Slot = list[tuple[socket.socket, socket.socket]]  # (UDP, listening TCP) per listen address


class State(enum.Enum):
    STARTING = "starting"  # forked; builds its responder (reads its slot's sockets once built)
    SERVING = "serving"  # reported ready
    DRAINING = "draining"  # told to stop: finishes its TCP queries, may still answer
    STOPPED = "stopped"  # answers nothing any more (exiting or exited as asked)
    CRASHED = "crashed"  # failed or exited without being asked


class Event(enum.Enum):
    READY = "ready"
    FAILED = "failed"  # it reported it cannot start
    STOP = "stop"  # the main process asked it to stop
    QUIET = "quiet"  # it reported that it answers no query any more
    EXITED = "exited"  # its channel closed or the process was reaped


TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (State.STARTING, Event.READY): State.SERVING,
    (State.STARTING, Event.FAILED): State.CRASHED,
    (State.STARTING, Event.EXITED): State.CRASHED,
    (State.STARTING, Event.STOP): State.DRAINING,
    (State.SERVING, Event.EXITED): State.CRASHED,
    (State.SERVING, Event.FAILED): State.CRASHED,
    (State.SERVING, Event.STOP): State.DRAINING,
    (State.DRAINING, Event.QUIET): State.STOPPED,
    (State.DRAINING, Event.FAILED): State.STOPPED,
    (State.DRAINING, Event.EXITED): State.STOPPED,
}
ANSWERING = frozenset({State.STARTING, State.SERVING, State.DRAINING})


def step(state: State, event: Event) -> State:
    """The next state; unlisted pairs keep the state (invariant 6)."""
    return TRANSITIONS.get((state, event), state)


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


def restart_delay(base: float, quick_crashes: int) -> float:
    """Damped backoff: base, doubled per crash in a row of workers that died young, capped."""
    return float(min(_MAX_RESTART_DELAY, base * (2 ** min(quick_crashes, 16))))


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


class _Outbox:
    """Frames for one peer, written without blocking as the socket takes them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.broken = False  # the peer is gone: frames are dropped
        self._watching: asyncio.AbstractEventLoop | None = None

    def put(self, frame: bytes, loop: asyncio.AbstractEventLoop | None) -> None:
        if self.broken:
            return
        self.buf += frame
        self.flush()
        if self.buf and not self.broken and loop is not None and self._watching is None:
            loop.add_writer(self.sock.fileno(), self._on_writable)
            self._watching = loop

    def flush(self) -> None:
        while self.buf and not self.broken:
            try:
                sent = self.sock.send(self.buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.broken = True
                self.buf.clear()
                return
            del self.buf[:sent]

    def _on_writable(self) -> None:
        self.flush()
        if not self.buf or self.broken:
            self.unwatch()

    def unwatch(self) -> None:
        if self._watching is not None:
            with contextlib.suppress(ValueError, OSError):
                self._watching.remove_writer(self.sock.fileno())
            self._watching = None


def _set_parent_death_signal() -> None:
    """Linux: SIGTERM this process when the main process dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


@dataclasses.dataclass(eq=False)
class _Worker:
    """One forked process; its lifecycle is `state` (see TRANSITIONS)."""

    index: int  # its slot
    pid: int
    channel: socket.socket
    reader: _FrameReader
    outbox: _Outbox
    forked_at: float  # monotonic
    generation: int  # the pool's generation at its fork (invariant 5)
    state: State = State.STARTING
    acked: int = 0
    failure: str | None = None
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: dict[int, str] = dataclasses.field(default_factory=dict)
    kill_at: float | None = None  # DRAINING: SIGKILL when still alive then (monotonic)
    status: int | None = None  # wait status once reaped
    reaped: bool = False


class WorkerPool(Generic[Z]):
    """Fork `count` workers serving `listen`; re-fork them to publish; deliver small updates.

    make_responder(zones) runs in each worker and returns its responder.
    apply_update(message, zones) runs in each worker for every broadcast message.
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
        on_event: Callable[[object], None] | None = None,
        read_counters: Callable[[ResponderLike], Mapping[str, int]] | None = None,
        tcp_limits: TcpLimits | None = None,
        counter_interval: float = 1.0,
        restart_delay: float = 0.2,
        stop_timeout: float = 3.0,
        ready_timeout: float = 30.0,
        max_backlog: int = _MAX_BACKLOG,
        publish_interval: float = 0.1,
    ) -> None:
        self.count = worker_count(count)
        self.listen = list(listen)
        self.bound: list[tuple[str, int]] = []  # `listen` with the real ports, after start()
        self.zones = zones
        self._make_responder = make_responder
        self._apply_update = apply_update
        self._on_event = on_event
        self._read_counters = read_counters
        self._tcp_limits = tcp_limits
        self._counter_interval = counter_interval
        self._restart_delay = restart_delay
        self._stop_timeout = stop_timeout
        self._ready_timeout = ready_timeout
        self._max_backlog = max_backlog
        # Publish passes start at most this often: while thousands of zones publish (a first
        # load, a NOTIFY storm) one fork carries many versions instead of one or two each,
        # and a lone change still reaches the workers within this delay plus one pass.
        self._publish_interval = publish_interval
        self._last_pass = float("-inf")  # loop time when the last publish pass began
        self._pass_seconds = 0.0  # how long the last publish pass took
        self._slots: list[_Slot] = []  # by index; open in the main process until stop()
        self._procs: dict[int, _Worker] = {}  # by pid: every forked process not reaped yet
        self._slot_workers: dict[int, _Worker] = {}  # by index (invariant 1)
        self._restart_at: dict[int, float] = {}  # slot -> when its crashed worker is re-forked
        self._quick_crashes: dict[int, int] = {}  # slot -> crashes in a row of young workers
        self._seq = 0  # broadcast messages
        self.generation = 0  # publishes (and recycle() calls)
        self._wanted = 0  # the generation every slot should have reached
        self._retired: dict[str, int] = {}  # counters of workers that have exited
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recycling = asyncio.Lock()
        self._refork_task: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._started = False
        self._stopping = False
        self._start_failure = ""  # a worker that could not start (e.g. bind), for start()
        self.restarts = 0  # slot workers re-forked after a crash
        self.recycles = 0  # completed re-fork passes

    # -- main process: lifecycle ------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        """The worker of each slot (not a re-fork candidate, not one being stopped)."""
        return [w.pid for w in self._slot_workers.values()]

    def processes(self) -> list[tuple[int, int, State]]:
        """(pid, slot, state) of every forked process not reaped yet."""
        return [(w.pid, w.index, w.state) for w in self._procs.values()]

    async def start(self, ready_timeout: float = 10.0) -> None:
        """Bind every slot's sockets, fork every worker and wait until all serve.

        Raises RuntimeError when a socket cannot be bound (e.g. the address is in use) or a
        worker cannot start.
        """
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._bind_slots()
        for index in range(self.count):
            self._slot_workers[index] = self._fork(index)
        self._tick_handle = self._loop.call_later(_TICK, self._tick)
        deadline = self._loop.time() + ready_timeout
        while True:
            if self._start_failure:
                reason = self._start_failure
                await self.stop()
                raise RuntimeError(reason)
            workers = list(self._slot_workers.values())
            if len(workers) == self.count and all(w.state is State.SERVING for w in workers):
                self._started = True
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
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._refork_task is not None:
            self._refork_task.cancel()
        timeout = self._stop_timeout if timeout is None else timeout
        for worker in list(self._procs.values()):
            self._event(worker, Event.STOP)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._procs and time.monotonic() < deadline:
            for worker in list(self._procs.values()):
                self._try_reap(worker)
            await asyncio.sleep(0.02)
        for worker in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            self._try_reap(worker, block=True)
        self._close_slots()

    # -- main process: publishing by re-fork ------------------------------------------
    def publish(self) -> int:
        """The main's table has changed: re-fork every worker (coalesced); returns the
        generation to pass to wait_published()."""
        self.generation += 1
        self._wanted = self.generation
        idle = self._refork_task is None or self._refork_task.done()
        if self._loop is not None and not self._stopping and idle:
            self._refork_task = self._loop.create_task(self._refork_loop())
        return self.generation

    async def wait_published(self, generation: int, timeout: float) -> bool:
        """True once every slot's worker was forked at or after `generation`, serves, and no
        process forked before it still answers; False on timeout or when stopping."""
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        while not self._stopping:
            served = self.served_generation()
            if served is not None and served >= generation:
                return True
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            await self._wait_change(remaining)
        return False

    def served_generation(self) -> int | None:
        """The newest generation every answering process holds; None while a slot has no
        serving worker (then some queries wait in its sockets for its successor)."""
        workers = [self._slot_workers.get(index) for index in range(self.count)]
        if not all(w is not None and w.state is State.SERVING for w in workers):
            return None
        answering = [w for w in self._procs.values() if w.state in ANSWERING]
        return min(w.generation for w in answering)

    def status(self) -> dict[str, Any]:
        """What the pool knows, for `authd zone status` and metrics."""
        serving = sum(1 for w in self._slot_workers.values() if w.state is State.SERVING)
        return {
            "slots": self.count,
            "serving": serving,
            "generation": self.generation,
            "served_generation": self.served_generation(),
            "restarts": self.restarts,
            "recycles": self.recycles,
        }

    async def _refork_loop(self) -> None:
        """Re-fork passes until every slot has the wanted generation; a failed pass is
        retried after a damped backoff (a published version must reach the workers)."""
        failures = 0
        while not self._stopping:
            served = self.served_generation()
            if served is not None and served >= self._wanted:
                return
            if not self._outdated():  # only restarts, start-ups or old workers to wait for
                await self._wait_change(1.0)
                continue
            assert self._loop is not None
            # Between two pass starts: the interval, or twice the last pass's length when
            # passes are slow (a big table: forks and worker starts at most ~1/3 of the time).
            gap = max(self._publish_interval, PASS_SPACING * self._pass_seconds)
            early = self._last_pass + gap - self._loop.time()
            if early > 0:  # let more publishes join this pass
                await asyncio.sleep(early)
                continue
            self._last_pass = self._loop.time()
            try:
                ok = await self._pass(lambda: self._wanted)
                self._pass_seconds = min(self._loop.time() - self._last_pass, MAX_PASS_SECONDS)
                if ok:
                    failures = 0
                    continue
            except Exception:  # a bug must not stop versions from reaching the workers
                log.exception("re-fork pass failed")
            if self._stopping:
                return
            failures += 1
            delay = restart_delay(self._restart_delay, failures)
            log.warning("workers not re-forked; trying again in %.1f s", delay)
            await asyncio.sleep(delay)

    def _outdated(self) -> bool:
        return any(w.generation < self._wanted for w in self._slot_workers.values())

    async def recycle(self, ready_timeout: float | None = None) -> bool:
        """Replace every worker by a fresh fork of the main process.

        The new worker inherits the main's zone table as it is now (shared copy-on-write).
        Per slot (every slot at once): fork, wait until the new worker serves, make it the
        slot's worker (broadcasts sent since its fork reach it), then stop the old one
        gracefully and wait until it answers no more. Both serve the slot's sockets
        meanwhile: no query is lost.

        True when every slot's worker was forked after the call. False when a new worker
        could not start (it is killed and the old one keeps its slot; logged) or the pool
        is stopping. Calls are serialised; a slot re-forked by an
        earlier pass after this call began is not re-forked again.
        """
        if self._loop is None or self._stopping:
            return False
        self.generation += 1
        target = self.generation
        return await self._pass(lambda: target, ready_timeout)

    async def _pass(self, target: Callable[[], int], ready_timeout: float | None = None) -> bool:
        """Re-fork, all at once, every slot whose worker is older than target(); True when
        every one was replaced. A crashed slot is left to its restart (a fork of the main
        as it is then)."""
        async with self._recycling:
            if self._stopping:
                return False
            wanted = target()
            stale = [
                index
                for index, worker in sorted(self._slot_workers.items())
                if worker.generation < wanted
            ]
            timeout = ready_timeout or self._ready_timeout
            results = await asyncio.gather(*(self._recycle_slot(i, timeout) for i in stale))
            if stale and all(results):
                self.recycles += 1
                log.info("workers re-forked: %d slots now at generation %d", len(stale), wanted)
            return all(results) and not self._stopping

    async def _recycle_slot(self, index: int, ready_timeout: float) -> bool:
        try:
            new = self._fork(index)
        except OSError as exc:
            log.error("re-fork: cannot fork a new worker %d: %s", index, exc)
            return False
        installed = False
        try:
            reason = await self._wait_ready(new, ready_timeout)
            if reason is not None:
                if not self._stopping:
                    log.error(
                        "re-fork: new worker %d (pid %d) did not start (%s); the old one goes on",
                        index,
                        new.pid,
                        reason,
                    )
                await self._gone(new)
                return False
            old = self._slot_workers.get(index)  # None when it crashed and awaits a restart
            self._slot_workers[index] = new  # from now on it is the one re-forked on a crash
            self._restart_at.pop(index, None)
            installed = True
            self._notify()
            if old is not None:
                self._dismiss(old)
                while old.state in ANSWERING and not self._stopping:
                    await self._wait_change(self._stop_timeout + 2.0)
            log.debug(
                "re-fork: worker %d is now pid %d (was %s)",
                index,
                new.pid,
                old.pid if old is not None else "none",
            )
            return not self._stopping
        finally:
            if not installed and new.state in ANSWERING:  # failed, cancelled or stopping
                self._kill(new)

    # -- main process: updates and counters ------------------------------------------
    def broadcast(self, message: object) -> int:
        """Send `message` to every worker; returns its sequence number."""
        self._seq += 1
        frame = _encode(("update", self._seq, message))
        for worker in self._procs.values():
            if worker.state in ANSWERING:
                self._send(worker, frame)
        return self._seq

    async def broadcast_and_wait(self, message: object, timeout: float = 5.0) -> bool:
        """True once every worker applied `message`; False on timeout or a worker's error."""
        seq = self.broadcast(message)
        return await self.wait_applied(seq, timeout)

    async def wait_applied(self, seq: int, timeout: float) -> bool:
        """True once every process that may answer a new query has applied update `seq`."""
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        while True:
            answering = [w for w in self._procs.values() if w.state in ANSWERING]
            errors = [w.errors[seq] for w in answering if seq in w.errors]
            if errors:
                log.error("zone update %d failed in a worker: %s", seq, errors[0])
                return False
            serving = [w for w in self._slot_workers.values() if w.state is State.SERVING]
            if len(serving) == self.count and all(w.acked >= seq for w in answering):
                return True
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            await self._wait_change(remaining)

    def collect_counters(self) -> dict[str, int]:
        """Counters summed over all workers, ever: monotonic across restarts and recycles."""
        total = dict(self._retired)
        for worker in self._procs.values():
            for name, value in worker.counters.items():
                total[name] = total.get(name, 0) + value
        return total

    # -- main process: internals -----------------------------------------------------
    def _event(self, worker: _Worker, event: Event) -> None:
        """Apply one lifecycle event; the consequences of the new state follow here."""
        before = worker.state
        worker.state = step(before, event)
        if worker.state is before:
            return
        if worker.state is State.DRAINING:
            worker.kill_at = time.monotonic() + self._stop_timeout + 1.0
        elif worker.state is State.CRASHED:
            self._on_crash(worker)
        self._notify()

    def _on_crash(self, worker: _Worker) -> None:
        index = worker.index
        if self._slot_workers.get(index) is not worker:
            return  # a re-fork candidate: its _recycle_slot reports it
        del self._slot_workers[index]
        if not self._started:
            reason = worker.failure or "it exited"
            self._start_failure = self._start_failure or f"worker {index} failed: {reason}"
            return  # start() reports it; a bind error would only repeat
        if self._stopping:
            return
        young = time.monotonic() - worker.forked_at < _QUICK_CRASH
        crashes = self._quick_crashes.get(index, 0) + 1 if young else 0
        self._quick_crashes[index] = crashes
        delay = restart_delay(self._restart_delay, crashes)
        log.warning(
            "worker %d (pid %d) %s; re-forking it in %.2f s",
            index,
            worker.pid,
            f"failed: {worker.failure}" if worker.failure else "exited",
            delay,
        )
        self._restart_at[index] = time.monotonic() + delay
        if self._loop is not None:
            self._loop.call_later(delay, self._tick_restarts)

    def _tick(self) -> None:
        """Supervisor pass: reap exits, kill stragglers, restart crashed slots (invariant 3)."""
        if self._stopping or self._loop is None:
            return
        try:
            now = time.monotonic()
            for worker in list(self._procs.values()):
                if self._try_reap(worker):
                    continue
                stuck = now - worker.forked_at > self._ready_timeout
                if self._started and worker.state is State.STARTING and stuck:
                    log.warning("worker pid %d not ready in time; killing it", worker.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)  # a slot worker: crashed, re-forked
                    continue
                if worker.kill_at is None or now < worker.kill_at:
                    continue
                log.warning("worker pid %d did not stop in time; killing it", worker.pid)
                worker.kill_at = None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            self._tick_restarts()
        finally:
            self._tick_handle = self._loop.call_later(_TICK, self._tick)

    def _tick_restarts(self) -> None:
        if self._stopping or not self._started:
            return
        now = time.monotonic()
        for index in range(self.count):
            if index in self._slot_workers:
                self._restart_at.pop(index, None)
                continue
            due = self._restart_at.setdefault(index, now)
            if now < due or self._candidate(index) is not None:
                continue  # a re-fork candidate takes the slot when it serves, or fails
            try:
                worker = self._fork(index)
            except OSError as exc:  # e.g. fork: out of memory; the slot's sockets keep queueing
                log.error("cannot re-fork worker %d: %s; trying again", index, exc)
                self._restart_at[index] = now + restart_delay(self._restart_delay, 4)
                continue
            self._slot_workers[index] = worker
            del self._restart_at[index]
            self.restarts += 1
            self._notify()

    def _candidate(self, index: int) -> _Worker | None:
        for worker in self._procs.values():
            starting = worker.index == index and worker.state is State.STARTING
            if starting and self._slot_workers.get(index) is not worker:
                return worker
        return None

    def _try_reap(self, worker: _Worker, block: bool = False) -> bool:
        """Reap `worker` if it has exited: EXITED, then forget it (invariant 2)."""
        if worker.reaped:
            return True
        try:
            reaped, status = os.waitpid(worker.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            reaped, status = worker.pid, 0
        if reaped != worker.pid:
            return False
        worker.status = status
        worker.reaped = True
        self._drain(worker)  # its last counters may still wait in the channel
        self._event(worker, Event.EXITED)
        self._forget(worker)
        return True

    def _forget(self, worker: _Worker) -> None:
        self._procs.pop(worker.pid, None)
        if self._slot_workers.get(worker.index) is worker:  # cannot be: it is not answering
            del self._slot_workers[worker.index]
        worker.outbox.unwatch()
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(worker.channel.fileno())
        worker.channel.close()
        for name, value in worker.counters.items():
            if name not in _GAUGES:
                self._retired[name] = self._retired.get(name, 0) + value
        worker.counters = {}
        if worker.status is not None and worker.state is State.CRASHED:
            log.info("worker pid %d: %s", worker.pid, _describe(worker.status))
        self._notify()

    def _drain(self, worker: _Worker) -> None:
        if worker.channel.fileno() < 0:
            return
        messages, _ = worker.reader.read()
        self._handle(worker, messages)

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

    def _fork(self, index: int) -> _Worker:
        """Fork a worker for slot `index`; the caller decides whether it is the slot's."""
        assert self._loop is not None
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
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
        parent_end.setblocking(False)
        worker = _Worker(
            index,
            pid,
            parent_end,
            _FrameReader(parent_end),
            _Outbox(parent_end),
            time.monotonic(),
            self.generation,
            acked=self._seq,  # a fresh fork holds the main's table as of now
        )
        self._procs[pid] = worker
        self._loop.add_reader(parent_end.fileno(), self._on_message, worker)
        return worker

    async def _gone(self, worker: _Worker) -> None:
        """Kill `worker` if it still runs and wait (bounded) until it is reaped."""
        if worker.state in ANSWERING:
            self._kill(worker)
        deadline = time.monotonic() + self._stop_timeout + 1.0
        while not self._try_reap(worker) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _wait_ready(self, worker: _Worker, timeout: float) -> str | None:
        """None once `worker` serves; otherwise why it will not."""
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        while True:
            if worker.state is State.SERVING:
                return None
            if worker.state is not State.STARTING:
                return worker.failure or "it exited"
            if self._stopping:
                return "the pool is stopping"
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return f"not ready within {timeout} s"
            await self._wait_change(remaining)

    def _dismiss(self, worker: _Worker) -> None:
        """Stop `worker` gracefully: it stops reading UDP, finishes its TCP connections
        within stop_timeout, reports "draining" and exits; the tick SIGKILLs it after
        that, and reaps it."""
        self._event(worker, Event.STOP)
        self._send(worker, _encode(("stop",)))

    def _kill(self, worker: _Worker) -> None:
        self._event(worker, Event.STOP)
        worker.kill_at = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)

    def _send(self, worker: _Worker, frame: bytes) -> None:
        """Queue `frame`; never blocks (invariant 4)."""
        worker.outbox.put(frame, self._loop)
        if len(worker.outbox.buf) > self._max_backlog:
            log.warning(
                "worker %d (pid %d) does not read its channel (%d bytes queued); killing it",
                worker.index,
                worker.pid,
                len(worker.outbox.buf),
            )
            worker.outbox.buf.clear()
            worker.outbox.broken = True
            worker.outbox.unwatch()
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    def _on_message(self, worker: _Worker) -> None:
        messages, eof = worker.reader.read()
        self._handle(worker, messages)
        if eof:
            assert self._loop is not None
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(worker.channel.fileno())
            worker.outbox.broken = True
            worker.outbox.unwatch()
            # It is exiting: it answers nothing more. The tick reaps it.
            self._event(worker, Event.EXITED)
            self._try_reap(worker)
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
                    self._event(worker, Event.READY)
                case ("draining",):
                    self._event(worker, Event.QUIET)
                case ("failed", text):
                    worker.failure = str(text)
                    self._event(worker, Event.FAILED)
                case ("event", payload):
                    if self._on_event is not None:
                        try:
                            self._on_event(payload)
                        except Exception:
                            log.exception("handling an event from worker %d failed", worker.index)

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
        for other in self._procs.values():
            other.channel.close()
        self._procs, self._slot_workers = {}, {}
        self._refork_task = self._tick_handle = None
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


_WORKER_BACKLOG = 8 << 20  # a worker drops counter reports while this much waits for the main


class _WorkerMain:  # pragma: no cover - runs in the child; tested through WorkerPool
    def __init__(self, pool: WorkerPool[Any], channel: socket.socket, index: int) -> None:
        self.pool = pool
        self.channel = channel
        self.index = index
        self.outbox = _Outbox(channel)
        self.stopped = asyncio.Event()
        self.engine: ServingEngine | None = None
        # The engine's listeners, kept here: its stop() forgets them, the final report must not.
        self.udp: list[UdpListener] = []
        self.tcp: list[TcpServer] = []
        self.responder: ResponderLike | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def send(self, message: object) -> None:
        self.outbox.put(_encode(message), self.loop)

    def finish_sending(self, timeout: float) -> None:
        """Before exit: hand what is queued to the main process (blocking, bounded)."""
        self.outbox.unwatch()
        if self.outbox.broken or not self.outbox.buf:
            return
        with contextlib.suppress(OSError):
            self.channel.settimeout(timeout)
            self.channel.sendall(self.outbox.buf)

    async def run(self) -> int:
        global _CURRENT_WORKER
        _CURRENT_WORKER = self
        pool = self.pool
        loop = self.loop = asyncio.get_running_loop()
        self.channel.setblocking(False)
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
            self.finish_sending(2.0)
            return 1
        reader = _FrameReader(self.channel)
        loop.add_reader(self.channel.fileno(), self._on_control, reader)
        loop.add_signal_handler(signal.SIGTERM, self.stopped.set)
        self.send(("ready",))
        reporter = loop.create_task(self._report_counters())
        await self.stopped.wait()
        # Updates are still applied while draining: a TCP connection may send a query in
        # its grace period (tcp.STOP_GRACE), and it must see what the main published.
        # "draining" once no new query can reach us: the re-fork of this slot goes on while
        # the answers in flight are written.
        await self.engine.stop(pool._stop_timeout * 0.8, quiet=lambda: self.send(("draining",)))
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self.channel.fileno())
        reporter.cancel()
        self.send(("counters", self.counters()))
        self.finish_sending(2.0)
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
            self.outbox.broken = True
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
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.pool._counter_interval)
            if len(self.outbox.buf) < _WORKER_BACKLOG:  # the main is busy: skip, they add up
                counters = self.counters()
                if counters != last:  # idle: nothing to send (totals, so none is lost)
                    self.send(("counters", counters))
                    last = counters


def _describe(status: int | None) -> str:
    if status is None:
        return "status unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    if os.WIFEXITED(status):
        return f"exit code {os.WEXITSTATUS(status)}"
    return f"status {status}"
