"""A pytest plugin that makes the run start long after collection, without waiting.

While test modules are imported (collection), `time.time()` reads SHIFT_SECONDS in the
past; from the first test on it is the real clock again. To a test this is the same as a
suite whose collection ran 10 minutes before the tests did (a loaded machine): a value
read from the wall clock at import is 10 minutes older than one read during the test.
A test that takes signing and validation times from one injected clock does not notice.

authd's modules are imported before the clock is moved: a default argument such as
`clock=time.time` must keep the real function, as it does in a normal run.

    python -m pytest -p tests.support.timeshift tests/unit/zone/test_dnssec.py
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import time
from collections.abc import Generator

import pytest

SHIFT_ENV = "AUTHD_TEST_COLLECTED_SECONDS_AGO"
SHIFT_SECONDS = float(os.environ.get(SHIFT_ENV, "600"))


def _import_authd() -> None:
    import authd

    for module in pkgutil.walk_packages(authd.__path__, "authd."):
        importlib.import_module(module.name)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    _import_authd()
    real = time.time
    time.time = lambda: real() - SHIFT_SECONDS
    try:
        return (yield)
    finally:
        time.time = real
