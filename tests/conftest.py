"""Fixtures and hooks for every test directory. Shared helper code lives in tests/support/;
the names below stay importable from here for the files that still do so.

`-m "not slow"` is the quick loop (`make quick`): everything that starts real servers or
long-running processes is marked slow, here for whole directories and for tests marked
`interop`, and by a module-level `pytestmark` (or a test's own mark) elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.system import (
    REQUIRE_INTEROP_ENV,
    free_port,
    interop_required,
    require_binary,
)

__all__ = ["REQUIRE_INTEROP_ENV", "free_port", "interop_required", "require_binary"]

TESTS = Path(__file__).resolve().parent

SLOW_DIRECTORIES = frozenset({"interop", "fault", "robust", "ops"})
"""Live authd, knotd, named or NSD processes end to end: every test in them is slow."""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With exactly `-m "not slow"` the slow directories are not even imported (every test
    in them would be deselected): the quick loop saves their collection."""
    if config.option.markexpr.strip() != "not slow" or collection_path.parent != TESTS:
        return None
    return True if collection_path.name in SLOW_DIRECTORIES else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        in_slow_directory = len(parts) > 1 and parts[0] in SLOW_DIRECTORIES
        if in_slow_directory or item.get_closest_marker("interop") is not None:
            item.add_marker(pytest.mark.slow)
