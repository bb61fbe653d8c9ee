"""One serving engine: UDP and TCP listeners on every configured address, in the running loop.

Each worker process (serve/workers.py) runs one engine over its own SO_REUSEPORT sockets.
The engine only knows a `respond(query, tcp, client)` callable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
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

    async def start(self) -> None:
        """Bind every address (UDP and TCP on the same port) and start answering."""
        try:
            for host, port in self.listen:
                udp_sock = sockets.udp_socket(host, port, self.reuse_port)
                real_port = int(udp_sock.getsockname()[1])
                tcp_sock = sockets.tcp_socket(host, real_port, self.reuse_port)
                listener = UdpListener(self.respond)
                await listener.start(udp_sock)
                self.udp.append(listener)
                server = TcpServer(self._tcp_respond(), self.tcp_limits)
                await server.start(tcp_sock)
                self.tcp.append(server)
                self.bound.append((host, real_port))
        except BaseException:
            await self.stop(0)
            raise

    def _tcp_respond(self) -> TcpRespondFn:
        return self.respond

    async def stop(self, timeout: float = 3.0) -> None:
        """Stop reading UDP at once; let TCP finish what is in flight within `timeout`."""
        for listener in self.udp:
            listener.close()
        await asyncio.gather(*(server.stop(timeout) for server in self.tcp))
        self.udp.clear()
        self.tcp.clear()
