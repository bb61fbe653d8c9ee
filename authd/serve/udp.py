"""UDP transport: batched recvmmsg/sendmmsg behind loop.add_reader, or a plain DatagramProtocol.

Per-datagram event-loop overhead is a large share of a query's cost in Python, so on Linux
we read up to `batch` datagrams with one recvmmsg(2) and write the replies with one
sendmmsg(2) (DESIGN.md principle 3). The message headers, iovecs, address slots and data
buffers are allocated once; per datagram the loop only copies the query out as bytes, copies
the reply in, and patches three integers through memoryviews (no ctypes objects per packet).
A reply goes back to the address it came from by pointing the send header at the address
slot recvmmsg filled, so addresses are never decoded into Python objects.

On a socket bound to a wildcard address (0.0.0.0, ::) the kernel would choose a reply's source
address by route, not the address the query was sent to. There the socket has IP_PKTINFO /
IPV6_RECVPKTINFO on (sockets.enable_pktinfo), recvmmsg also fills a control slot per datagram
with the destination address and interface index, and the reply's send header points at that
same control message: the kernel sends from ipi_spec_dst / ipi6_addr out of the interface the
query came in on (NSD and Knot do the same). Sockets bound to one address skip all of it.

Where recvmmsg is missing (not Linux, or a libc without it) `UdpListener` falls back to an
asyncio DatagramProtocol with the same counters and the same responder (on a wildcard socket:
recvmsg/sendmsg per datagram, passing the same control messages back).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import mmap
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from authd.serve.sockets import enable_pktinfo

# respond(query, tcp, client): `client` is what identifies the sender most cheaply here: the
# raw sockaddr bytes on the batched path, asyncio's address tuple otherwise; decode it with
# sockets.client_address() only when needed (NOTIFY ACLs, RRL).
log = logging.getLogger(__name__)

RespondFn = Callable[[bytes, bool, object], "bytes | None"]

BATCH = 64  # datagrams per recvmmsg/sendmmsg call
BATCHES_PER_WAKEUP = 4  # bound per readable event, so TCP and timers are not starved
SLOT_BYTES = 65536  # per-datagram buffer: any UDP payload fits, pages are touched lazily
NAME_BYTES = 128  # sizeof(struct sockaddr_storage)
# Per-datagram control buffer: one IP_PKTINFO (32 bytes with its header) or IPV6_PKTINFO (40).
CONTROL_BYTES = 64
MSG_TRUNC = 0x20
MSG_DONTWAIT = 0x40


@dataclass(slots=True)
class UdpCounters:
    """Plain ints on the hot path; the metrics layer reads and exports them."""

    received: int = 0
    sent: int = 0
    no_reply: int = 0  # the responder chose silence (unparsable query, QR=1, ...)
    truncated_queries: int = 0  # larger than a slot (cannot happen with 64 KiB slots)
    send_blocked: int = 0  # EAGAIN on send: we waited for writability
    send_errors: int = 0  # reply dropped by the kernel (EPERM, EMSGSIZE, ...)
    recv_errors: int = 0
    responder_errors: int = 0
    batches: int = 0


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


_HDR = ctypes.sizeof(_Mmsghdr)
# Field positions as indexes into uint32 / uint64 views of the header array.
_U32_PER_HDR = _HDR // 4
_U64_PER_HDR = _HDR // 8
_NAMELEN = _Msghdr.msg_namelen.offset // 4
_FLAGS = _Msghdr.msg_flags.offset // 4
_MSGLEN = _Mmsghdr.msg_len.offset // 4
_NAME_PTR = _Msghdr.msg_name.offset // 8
_CONTROL_PTR = _Msghdr.msg_control.offset // 8
_CONTROLLEN = _Msghdr.msg_controllen.offset // 8
_IOV_LEN = _Iovec.iov_len.offset // 8


class _Syscalls:
    """recvmmsg/sendmmsg from libc; raise OSError when the platform lacks them."""

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are Linux-only")
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.recvmmsg = libc.recvmmsg
        self.recvmmsg.argtypes = (
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        )
        self.recvmmsg.restype = ctypes.c_int
        self.sendmmsg = libc.sendmmsg
        self.sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        self.sendmmsg.restype = ctypes.c_int


_syscalls: _Syscalls | None = None


def batched_io_available() -> bool:
    global _syscalls
    if _syscalls is None:
        try:
            _syscalls = _Syscalls()
        except (OSError, AttributeError):
            return False
    return True


class _Arena:
    """The preallocated receive and send arrays for one socket (with control slots for the
    packet info of each datagram when `control` is set)."""

    def __init__(self, batch: int, control: bool = False) -> None:
        self.batch = batch
        # Anonymous mappings: zero pages until touched, so 64 KiB slots cost only what is used.
        self._maps = [mmap.mmap(-1, size) for size in (batch * _HDR, batch * _HDR)]
        self._maps += [mmap.mmap(-1, batch * ctypes.sizeof(_Iovec)) for _ in range(2)]
        self._maps += [mmap.mmap(-1, batch * NAME_BYTES)]
        self._maps += [mmap.mmap(-1, batch * SLOT_BYTES) for _ in range(2)]
        recv_map, send_map, iov_in_map, iov_out_map, names_map, in_map, out_map = self._maps
        self.recv_hdrs = (_Mmsghdr * batch).from_buffer(recv_map)
        self.send_hdrs = (_Mmsghdr * batch).from_buffer(send_map)
        iov_in = (_Iovec * batch).from_buffer(iov_in_map)
        iov_out = (_Iovec * batch).from_buffer(iov_out_map)
        names = (ctypes.c_char * (batch * NAME_BYTES)).from_buffer(names_map)
        inbuf = (ctypes.c_char * (batch * SLOT_BYTES)).from_buffer(in_map)
        outbuf = (ctypes.c_char * (batch * SLOT_BYTES)).from_buffer(out_map)
        self.names_addr = ctypes.addressof(names)
        self.recv_addr = ctypes.addressof(self.recv_hdrs)
        self.send_addr = ctypes.addressof(self.send_hdrs)
        self._keep: list[Any] = [iov_in, iov_out, names, inbuf, outbuf]
        for i in range(batch):
            iov_in[i].iov_base = ctypes.addressof(inbuf) + i * SLOT_BYTES
            iov_in[i].iov_len = SLOT_BYTES
            iov_out[i].iov_base = ctypes.addressof(outbuf) + i * SLOT_BYTES
            for hdrs, iov in ((self.recv_hdrs, iov_in), (self.send_hdrs, iov_out)):
                hdr = hdrs[i].msg_hdr
                hdr.msg_name = self.names_addr + i * NAME_BYTES
                hdr.msg_namelen = NAME_BYTES
                hdr.msg_iov = ctypes.addressof(iov) + i * ctypes.sizeof(_Iovec)
                hdr.msg_iovlen = 1
        # Views through which the hot loop reads and patches the arrays.
        self.recv_u32 = memoryview(recv_map).cast("I")
        self.send_u32 = memoryview(send_map).cast("I")
        self.send_u64 = memoryview(send_map).cast("Q")
        self.out_iov_u64 = memoryview(iov_out_map).cast("Q")
        self.names = memoryview(names_map)
        self.inbuf = memoryview(in_map)
        self.outbuf = memoryview(out_map)
        self.recv_u64 = memoryview(recv_map).cast("Q")
        self.control_addr = 0  # 0: no control slots
        if control:
            control_map = mmap.mmap(-1, batch * CONTROL_BYTES)
            self._maps.append(control_map)
            slots = (ctypes.c_char * (batch * CONTROL_BYTES)).from_buffer(control_map)
            self._keep.append(slots)
            self.control_addr = ctypes.addressof(slots)
            for i in range(batch):
                hdr = self.recv_hdrs[i].msg_hdr
                hdr.msg_control = self.control_addr + i * CONTROL_BYTES
                hdr.msg_controllen = CONTROL_BYTES


class BatchedUdp:
    """Serve one UDP socket with recvmmsg/sendmmsg driven by loop.add_reader."""

    def __init__(
        self,
        sock: socket.socket,
        respond: RespondFn,
        counters: UdpCounters,
        batch: int = BATCH,
        batches_per_wakeup: int = BATCHES_PER_WAKEUP,
    ) -> None:
        if not batched_io_available():
            raise OSError(errno.ENOSYS, "batched UDP I/O unavailable")
        assert _syscalls is not None
        self._calls = _syscalls
        self._sock = sock
        self._fd = sock.fileno()
        self._respond = respond
        self.counters = counters
        # Packet info only where the kernel cannot know the right source address by itself.
        self.pktinfo = enable_pktinfo(sock)
        self._arena = _Arena(batch, control=self.pktinfo)
        self._batches_per_wakeup = batches_per_wakeup
        self._loop = asyncio.get_running_loop()
        self._pending_start = 0  # replies staged in send_hdrs but not yet sent
        self._pending_end = 0
        self._closed = False
        sock.setblocking(False)
        self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._sock.close()

    def _on_readable(self) -> None:
        arena = self._arena
        recvmmsg = self._calls.recvmmsg
        for _ in range(self._batches_per_wakeup):
            count = recvmmsg(self._fd, arena.recv_addr, arena.batch, MSG_DONTWAIT, None)
            if count <= 0:
                if count < 0:
                    err = ctypes.get_errno()
                    if err == errno.EINTR:
                        continue
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        self.counters.recv_errors += 1
                return
            staged = self._answer(count)
            if staged and not self._send(0, staged):
                return  # the socket is full; _on_writable resumes reading
            if count < arena.batch:
                return  # drained: no need to ask the kernel again

    def _answer(self, count: int) -> int:
        """Run the responder over `count` received datagrams; stage replies; return how many."""
        arena = self._arena
        respond = self._respond
        recv_u32 = arena.recv_u32
        send_u32 = arena.send_u32
        send_u64 = arena.send_u64
        out_iov = arena.out_iov_u64
        inbuf = arena.inbuf
        outbuf = arena.outbuf
        names_addr = arena.names_addr
        recv_u64 = arena.recv_u64
        control_addr = arena.control_addr
        # One copy of the address slots filled, then a cheap bytes slice per datagram.
        names = arena.names[: count * NAME_BYTES].tobytes()
        counters = self.counters
        counters.received += count
        counters.batches += 1
        staged = 0
        for i in range(count):
            base = i * _U32_PER_HDR
            length = recv_u32[base + _MSGLEN]
            # recvmmsg wrote the address length here; every address of one socket family has
            # the same size, so the slot stays large enough and needs no reset per datagram.
            namelen = recv_u32[base + _NAMELEN]
            if control_addr:
                # recvmmsg wrote the control message's length over the slot's size; restore
                # the size for the next batch (a datagram without one would leave 0 there).
                controllen = recv_u64[i * _U64_PER_HDR + _CONTROLLEN]
                recv_u64[i * _U64_PER_HDR + _CONTROLLEN] = CONTROL_BYTES
            if length >= SLOT_BYTES and recv_u32[base + _FLAGS] & MSG_TRUNC:
                counters.truncated_queries += 1
                continue
            start = i * SLOT_BYTES
            name = i * NAME_BYTES
            try:
                reply = respond(
                    inbuf[start : start + length].tobytes(), False, names[name : name + namelen]
                )
            except Exception:
                self._responder_failed()
                continue
            if reply is None:
                counters.no_reply += 1
                continue
            size = len(reply)
            if size > SLOT_BYTES:
                counters.send_errors += 1
                continue
            out = staged * SLOT_BYTES
            outbuf[out : out + size] = reply
            out_iov[staged * 2 + _IOV_LEN] = size
            send_u32[staged * _U32_PER_HDR + _NAMELEN] = namelen
            send_u64[staged * _U64_PER_HDR + _NAME_PTR] = names_addr + name
            if control_addr:
                # Send from the address the query came to: the received IP_PKTINFO /
                # IPV6_PKTINFO control message, passed back as is.
                send_hdr64 = staged * _U64_PER_HDR
                send_u64[send_hdr64 + _CONTROL_PTR] = control_addr + i * CONTROL_BYTES
                send_u64[send_hdr64 + _CONTROLLEN] = controllen
            staged += 1
        return staged

    def _responder_failed(self) -> None:
        self.counters.responder_errors += 1
        if self.counters.responder_errors == 1:  # once: a broken responder must not flood logs
            log.exception("responder raised; the query gets no answer")

    def _send(self, start: int, end: int) -> bool:
        """Send staged replies [start, end); False when EAGAIN left some for later."""
        sendmmsg = self._calls.sendmmsg
        base = self._arena.send_addr
        while start < end:
            sent = sendmmsg(self._fd, base + start * _HDR, end - start, 0)
            if sent > 0:
                self.counters.sent += sent
                start += sent
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                # Stop reading (the arrays hold the unsent replies) until the socket drains.
                self.counters.send_blocked += 1
                self._pending_start, self._pending_end = start, end
                self._loop.remove_reader(self._fd)
                self._loop.add_writer(self._fd, self._on_writable)
                return False
            # This reply is refused (bad address, EPERM from a firewall, ...): skip it.
            self.counters.send_errors += 1
            start += 1
        return True

    def _on_writable(self) -> None:
        start, end = self._pending_start, self._pending_end
        self._loop.remove_writer(self._fd)
        if self._send(start, end):
            self._pending_start = self._pending_end = 0
            if not self._closed:
                self._loop.add_reader(self._fd, self._on_readable)


class _DatagramServer(asyncio.DatagramProtocol):
    """The portable path: one callback per datagram."""

    def __init__(self, respond: RespondFn, counters: UdpCounters) -> None:
        self._respond = respond
        self.counters = counters
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport; it quacks alike.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.counters.received += 1
        try:
            reply = self._respond(data, False, addr)
        except Exception:
            self.counters.responder_errors += 1
            if self.counters.responder_errors == 1:
                log.exception("responder raised; the query gets no answer")
            return
        if reply is None:
            self.counters.no_reply += 1
            return
        assert self.transport is not None
        # The transport buffers when the socket is full; asyncio bounds nothing here, but a
        # UDP send buffer only fills when the host itself is overloaded.
        self.transport.sendto(reply, addr)
        self.counters.sent += 1

    def error_received(self, exc: Exception) -> None:
        self.counters.send_errors += 1


class _SourcedDatagrams:
    """The portable path on a wildcard socket with packet info: recvmsg/sendmsg per datagram,
    each reply carrying the control message its query came with (so it leaves from the
    address the query was sent to)."""

    def __init__(self, sock: socket.socket, respond: RespondFn, counters: UdpCounters) -> None:
        self._sock = sock
        self._respond = respond
        self.counters = counters
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _on_readable(self) -> None:
        for _ in range(BATCH):
            try:
                data, ancdata, _flags, addr = self._sock.recvmsg(SLOT_BYTES, CONTROL_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters.recv_errors += 1
                return
            self.counters.received += 1
            try:
                reply = self._respond(data, False, addr)
            except Exception:
                self.counters.responder_errors += 1
                if self.counters.responder_errors == 1:
                    log.exception("responder raised; the query gets no answer")
                continue
            if reply is None:
                self.counters.no_reply += 1
                continue
            try:
                self._sock.sendmsg([reply], ancdata, 0, addr)
            except OSError:  # full send buffer (an overloaded host) or a refused address
                self.counters.send_errors += 1
                continue
            self.counters.sent += 1


class UdpListener:
    """Answer DNS over one bound UDP socket, batched when the platform allows it."""

    def __init__(self, respond: RespondFn, batched: bool | None = None) -> None:
        self._respond = respond
        self._want_batched = batched_io_available() if batched is None else batched
        self.counters = UdpCounters()
        self._batched: BatchedUdp | None = None
        self._sourced: _SourcedDatagrams | None = None
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def batched(self) -> bool:
        return self._batched is not None

    async def start(self, sock: socket.socket) -> None:
        if self._want_batched:
            self._batched = BatchedUdp(sock, self._respond, self.counters)
            return
        if enable_pktinfo(sock):
            self._sourced = _SourcedDatagrams(sock, self._respond, self.counters)
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _DatagramServer(self._respond, self.counters), sock=sock
        )
        self._transport = transport

    def close(self) -> None:
        if self._batched is not None:
            self._batched.close()
            self._batched = None
        if self._sourced is not None:
            self._sourced.close()
            self._sourced = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
