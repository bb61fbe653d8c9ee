"""Worker processes: one event loop per core, each on its own SO_REUSEPORT sockets.

The main process loads the zones, calls gc.freeze() and forks; the zone data is shared
copy-on-write (frozen objects are never touched by the collector, so their pages stay
shared). Each worker builds its responder, binds a UDP and a TCP socket for every listen
address with SO_REUSEPORT (the kernel spreads clients over the workers) and serves with
uvloop.

After that the pool knows nothing about zones. The application broadcasts small picklable
messages ("zone X now has the stored version with serial N", an IXFR diff, ...); each worker
runs `apply_update(message, zones)` on its own copy of the zone table and acknowledges.
`broadcast_and_wait()` returns True once every worker has applied a message.

A worker that dies is forked again from the main process; it inherits the main process's
zone table as it is then, so the application publishes a version in the main process
before broadcasting it (or passes `catch_up`, the messages a fresh worker must apply).

Control channel: one socketpair per worker, frames of a 4-byte length and a pickle.
  main -> worker: ("update", seq, message) | ("stop",)
  worker -> main: ("ready",) | ("failed", text) | ("ack", seq, error or None)
                  | ("counters", {name: int}) | ("event", payload)
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
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from authd.serve.engine import ServingEngine
from authd.serve.tcp import TcpLimits

log = logging.getLogger(__name__)

Z = TypeVar("Z")
_HEADER = 4
_MAX_FRAME = 1 << 30
_CONTROL_TIMEOUT = 5.0  # a worker that cannot take a message in this long is killed
_GAUGES = frozenset({"tcp.open_connections"})  # not summed into the totals of exited workers


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
        self._workers: dict[int, _Worker] = {}  # by index
        self._seq = 0
        self._retired: dict[str, int] = {}  # counters of workers that have exited
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._start_failure = ""  # a worker that could not start (e.g. bind), for start()
        self.restarts = 0

    # -- main process: lifecycle ------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers.values()]

    async def start(self, ready_timeout: float = 10.0) -> None:
        """Fork every worker and wait until all serve; raise if one cannot (e.g. bind)."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
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
        """SIGTERM every worker (each finishes its TCP queries), SIGKILL stragglers, reap."""
        self._stopping = True
        timeout = self._stop_timeout if timeout is None else timeout
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._workers and time.monotonic() < deadline:
            for worker in list(self._workers.values()):
                if self._reap(worker.pid, block=False) is not None:  # 0 is a clean exit
                    self._retire(worker)
            await asyncio.sleep(0.02)
        for worker in list(self._workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            self._reap(worker.pid, block=True)
            self._retire(worker)

    # -- main process: updates and counters ------------------------------------------
    def broadcast(self, message: object) -> int:
        """Send `message` to every worker; returns its sequence number."""
        self._seq += 1
        frame = _encode(("update", self._seq, message))
        for worker in list(self._workers.values()):
            self._send(worker, frame)
        return self._seq

    async def broadcast_and_wait(self, message: object, timeout: float = 5.0) -> bool:
        """True once every worker applied `message`; False on timeout or a worker's error."""
        seq = self.broadcast(message)
        return await self.wait_applied(seq, timeout)

    async def wait_applied(self, seq: int, timeout: float) -> bool:
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        while True:
            workers = list(self._workers.values())
            errors = [w.errors[seq] for w in workers if seq in w.errors]
            if errors:
                log.error("zone update %d failed in a worker: %s", seq, errors[0])
                return False
            if len(workers) == self.count and all(w.acked >= seq for w in workers):
                return True
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return False
            await self._wait_change(remaining)

    def collect_counters(self) -> dict[str, int]:
        """Counters summed over all workers, ever: monotonic across worker restarts."""
        total = dict(self._retired)
        for worker in self._workers.values():
            for name, value in worker.counters.items():
                total[name] = total.get(name, 0) + value
        return total

    # -- main process: internals -----------------------------------------------------
    def _spawn(self, index: int) -> None:
        assert self._loop is not None
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        catch_up = list(self._catch_up()) if self._catch_up is not None else []
        gc.collect()
        gc.freeze()  # what exists now stays shared with the children copy-on-write
        main_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            parent_end.close()
            self._child(child_end, main_pid)
        child_end.close()
        parent_end.settimeout(_CONTROL_TIMEOUT)
        worker = _Worker(index, pid, parent_end, _FrameReader(parent_end), time.monotonic())
        # A fresh fork holds the main's table as of now, i.e. every update so far; with
        # catch-up messages it is current once it has acknowledged them.
        worker.acked = self._seq - 1 if catch_up else self._seq
        self._workers[index] = worker
        self._loop.add_reader(parent_end.fileno(), self._on_message, worker)
        for message in catch_up:
            self._send(worker, _encode(("update", self._seq, message)))

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
                case ("failed", text):
                    worker.failure = str(text)
                case ("event", payload):
                    if self._on_event is not None:
                        try:
                            self._on_event(payload)
                        except Exception:
                            log.exception("handling an event from worker %d failed", worker.index)
        if eof:
            assert self._loop is not None
            self._loop.remove_reader(worker.channel.fileno())
            if self._workers.get(worker.index) is worker and not self._stopping:
                self._on_exit(worker)  # during stop(), stop() reaps
        self._notify()

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
        self._retire(worker)
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
        self.restarts += 1
        self._spawn(index)

    def _retire(self, worker: _Worker) -> None:
        """Forget a worker whose process has exited; keep its counters in the totals."""
        if self._workers.get(worker.index) is worker:
            del self._workers[worker.index]
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
    def _child(self, channel: socket.socket, main_pid: int) -> None:  # pragma: no cover
        code = 1
        try:
            self._detach_from_main(main_pid)
            import uvloop

            loop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            code = loop.run_until_complete(_WorkerMain(self, channel).run())
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def _detach_from_main(self, main_pid: int) -> None:  # pragma: no cover - in the child
        # The main's event loop and its signal wakeup fd are shared with us after fork:
        # never touch them, or a signal to this worker would wake the main process.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        # Python 3.11 keeps the parent's running loop after fork (3.12 resets it).
        asyncio.events._set_running_loop(None)
        for other in self._workers.values():
            other.channel.close()
        self._workers = {}
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
    def __init__(self, pool: WorkerPool[Any], channel: socket.socket) -> None:
        self.pool = pool
        self.channel = channel
        self.stopped = asyncio.Event()
        self.engine: ServingEngine | None = None
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
            )
            await self.engine.start()
        except Exception as exc:
            self.send(("failed", f"{type(exc).__name__}: {exc}"))
            return 1
        reader = _FrameReader(self.channel)
        loop.add_reader(self.channel.fileno(), self._on_control, reader)
        loop.add_signal_handler(signal.SIGTERM, self.stopped.set)
        self.send(("ready",))
        reporter = loop.create_task(self._report_counters())
        await self.stopped.wait()
        loop.remove_reader(self.channel.fileno())
        await self.engine.stop(pool._stop_timeout * 0.8)
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
            self.stopped.set()  # the main process is gone: never outlive it

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        engine = self.engine
        if engine is None:
            return total
        groups: tuple[tuple[str, list[Any]], ...] = (("udp", engine.udp), ("tcp", engine.tcp))
        for prefix, group in groups:
            for item in group:
                for name, value in dataclasses.asdict(item.counters).items():
                    key = f"{prefix}.{name}"
                    total[key] = total.get(key, 0) + int(value)
        for server in engine.tcp:
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
