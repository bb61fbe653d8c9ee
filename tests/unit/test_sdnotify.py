"""authd.sdnotify against real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd import sdnotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_ready_with_status_reaches_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert sdnotify.notify("READY=1", "STATUS=2 zones", environ={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 zones"


def test_abstract_namespace_socket() -> None:
    name = f"authd-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert sdnotify.notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_helpers_read_the_process_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.ready("serving 1 zone")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 1 zone"
    assert sdnotify.reloading()
    first, second = sock.recv(4096).split(b"\n")
    assert first == b"RELOADING=1"
    assert second.startswith(b"MONOTONIC_USEC=") and int(second.split(b"=")[1]) > 0
    assert sdnotify.reloaded()
    assert sock.recv(4096) == b"READY=1"
    assert sdnotify.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert sdnotify.status("1 zone expired")
    assert sock.recv(4096) == b"STATUS=1 zone expired"


def test_without_notify_socket_nothing_is_sent() -> None:
    assert sdnotify.notify("READY=1", environ={}) is False


def test_a_missing_socket_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = str(tmp_path / "gone.sock")
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": gone}) is False
    assert "cannot notify" in caplog.text


def test_unusable_addresses_are_refused() -> None:
    assert sdnotify.socket_address("vsock:2:1234") is None
    assert sdnotify.socket_address("relative.sock") is None
    assert sdnotify.socket_address("@x") == b"\0x"
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1"}) is False
