"""One serving engine: UDP and TCP listeners on every configured address, in the running loop.

Each worker process (serve/workers.py) runs one engine over the SO_REUSEPORT sockets of its
slot, which the main process bound before forking (`prebound`); without them (one process,
tests) the engine binds its own. The engine only knows a `respond(query, tcp, client)` callable.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from authd.serve import sockets
from authd.serve.tcp import TcpLimits, TcpRespondFn, TcpServer
from authd.serve.udp import RespondFn, UdpListener

log = logging.getLogger("authd.serve")


@dataclass
class ServingEngine:
    respond: RespondFn
    listen: Iterable[tuple[str, int]]
    tcp_limits: TcpLimits = field(default_factory=TcpLimits)
    reuse_port: bool = False
    udp: list[UdpListener] = field(default_factory=list)
    tcp: list[TcpServer] = field(default_factory=list)
    bound: list[tuple[str, int]] = field(default_factory=list)  # with real ports when 0 was asked
    # (UDP, listening TCP) per listen address, already bound: serve these instead of binding.
    prebound: Sequence[tuple[socket.socket, socket.socket]] | None = None

    async def start(self) -> None:
        """Bind every address (UDP and TCP on the same port) and start answering."""
        try:
            if self.prebound is not None:
                for (host, _), (udp_sock, tcp_sock) in zip(self.listen, self.prebound, strict=True):
                    await self._serve(host, udp_sock, tcp_sock)
                return
            for host, port in self.listen:
                udp_sock, tcp_sock = sockets.udp_tcp_pair(host, port, self.reuse_port)
                await self._serve(host, udp_sock, tcp_sock)
        except BaseException:
            await self.stop(0)
            raise

    async def _serve(self, host: str, udp_sock: socket.socket, tcp_sock: socket.socket) -> None:
        """Answer on one bound UDP socket and one listening TCP socket of the same port."""
        listener = UdpListener(self.respond)
        await listener.start(udp_sock)
        self.udp.append(listener)
        server = TcpServer(self._tcp_respond(), self.tcp_limits)
        await server.start(tcp_sock)
        self.tcp.append(server)
        self.bound.append((host, int(udp_sock.getsockname()[1])))

    def _tcp_respond(self) -> TcpRespondFn:
        return self.respond

    async def stop(self, timeout: float = 3.0, quiet: Callable[[], None] | None = None) -> None:
        """Stop reading UDP at once; let TCP finish what is in flight within `timeout`.

        quiet() runs as soon as no new query can reach the responder (UDP closed, TCP no
        longer accepting, idle connections closed, busy ones reading no more), before the
        answers in flight are done.
        """
        for listener in self.udp:
            listener.close()
        stops = [asyncio.ensure_future(server.stop(timeout)) for server in self.tcp]
        # One turn of the loop runs each TcpServer.stop() up to its first await, which is
        # where it has stopped accepting and reading.
        await asyncio.sleep(0)
        if quiet is not None:
            quiet()
        await asyncio.gather(*stops)
        self.udp.clear()
        self.tcp.clear()
