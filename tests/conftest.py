"""Shared test helpers: kept light, imported by every test directory."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

REQUIRE_INTEROP_ENV = "AUTHD_REQUIRE_INTEROP"


def interop_required() -> bool:
    """True when missing external programs must fail the run instead of skipping (CI)."""
    return os.environ.get(REQUIRE_INTEROP_ENV, "") == "1"


def require_binary(name: str) -> str:
    """Return the path of program `name`; skip the test (or fail, in CI) when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is not None:
        return path
    reason = f"{name} not found in PATH (install its Debian package to run this test)"
    if interop_required():
        pytest.fail(f"{reason}; {REQUIRE_INTEROP_ENV}=1 demands it", pytrace=False)
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free for both UDP and TCP on `host` right now (bind to 0, read, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host}")
