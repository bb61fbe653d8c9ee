"""The control channel: one JSON request and one JSON reply per connection on a Unix socket.

Request:  {"command": "status", "args": {"zone": "example.com"}}\\n
Reply:    {"ok": true, "result": ...}\\n
     or   {"ok": false, "error": "unknown zone example.org"}\\n

The socket is created with mode 0600: whoever can use it can force transfers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("authd.control")

MAX_REQUEST = 64 * 1024
Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """A request the daemon understood but refused (unknown zone, bad argument)."""


class ControlUnreachable(Exception):
    """No daemon answers on the control socket."""


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._remove_stale_socket()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    def _remove_stale_socket(self) -> None:
        if not self.path.exists():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # nobody listens: a leftover from a crash
            return
        finally:
            probe.close()
        raise OSError(f"control socket {self.path} is in use: is another authd running?")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            reply = await self._dispatch(line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("control connection dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            command = request["command"]
            args = request.get("args") or {}
            if not isinstance(command, str) or not isinstance(args, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "malformed request"}
        try:
            return {"ok": True, "result": await self.handler(command, args)}
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not take the daemon down; say what happened
            log.exception("control command %s failed", command)
            return {"ok": False, "error": f"internal error: {exc}"}


def call(path: Path, command: str, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command to the daemon and return its result (blocking, for the CLI)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlUnreachable(
                f"no authd is listening on {path} ({exc.strerror}): is the daemon running?"
            ) from exc
        except PermissionError as exc:
            raise ControlUnreachable(
                f"no permission to use {path}: run as the daemon's user"
            ) from exc
        sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data:
        raise ControlUnreachable(f"authd closed the control connection on {path} without a reply")
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply.get("result")
