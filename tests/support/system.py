"""The test host: external programs the interop tests need, and free loopback ports."""

from __future__ import annotations

import os
import shutil

import pytest

from authd.bench import peers

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
    """A port that is free for both UDP and TCP on `host` right now (the harness's helper)."""
    return peers.free_port(host)
