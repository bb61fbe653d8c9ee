"""A TCP server running an echo responder, and the client side of the TCP tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from authd.serve.sockets import tcp_socket
from authd.serve.tcp import TcpLimits, TcpServer


def echo(query: bytes, tcp: bool, client: object) -> bytes:
    """The query with QR set: the transport must not care what the responder does."""
    return query[:2] + bytes([query[2] | 0x80]) + query[3:]


def query(qid: int, label: bytes = b"example") -> bytes:
    header = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + bytes([len(label)]) + label + b"\x04test\x00\x00\x01\x00\x01"


def frame(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(asyncio.wait_for(scenario(), 20))


async def serving(
    respond: Callable[[bytes, bool, object], Any] = echo,
    limits: TcpLimits | None = None,
    host: str = "127.0.0.1",
) -> tuple[TcpServer, tuple[str, int]]:
    sock = tcp_socket(host, 0)
    server = TcpServer(respond, limits)
    await server.start(sock)
    return server, sock.getsockname()[:2]


async def read_message(reader: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(size)


async def connect(
    address: tuple[str, int], source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    local = (source, 0) if source else None
    return await asyncio.open_connection(address[0], address[1], local_addr=local)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (FIN or, for abusers, RST)."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def settle(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
