"""The control channel round trip over a real Unix socket."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest

from authd.control import ControlError, ControlServer, ControlUnreachable, call


async def _handler(command: str, args: dict[str, Any]) -> Any:
    if command == "echo":
        return args
    raise ControlError(f"unknown command {command}")


async def test_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    server = ControlServer(path, _handler)
    await server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        result = await asyncio.to_thread(call, path, "echo", zone="example.test")
        assert result == {"zone": "example.test"}
        with pytest.raises(ControlError, match="unknown command nope"):
            await asyncio.to_thread(call, path, "nope")
    finally:
        await server.stop()
    assert not path.exists()
    with pytest.raises(ControlUnreachable, match="is the daemon running"):
        call(path, "echo")


async def test_stale_socket_is_replaced_but_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    first = ControlServer(path, _handler)
    await first.start()
    try:
        with pytest.raises(OSError, match="in use"):
            await ControlServer(path, _handler).start()
    finally:
        await first.stop()
    path.touch()  # a leftover file nobody listens on
    second = ControlServer(path, _handler)
    await second.start()
    try:
        assert await asyncio.to_thread(call, path, "echo") == {}
    finally:
        await second.stop()
