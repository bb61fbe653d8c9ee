"""Fixtures for every test directory. Shared helper code lives in tests/support/; the
names below stay importable from here for the files that still do so."""

from __future__ import annotations

from tests.support.system import (
    REQUIRE_INTEROP_ENV,
    free_port,
    interop_required,
    require_binary,
)

__all__ = ["REQUIRE_INTEROP_ENV", "free_port", "interop_required", "require_binary"]
