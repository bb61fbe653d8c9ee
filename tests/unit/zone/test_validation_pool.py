"""The validation pool's processes run at the priority the config asks for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from authd.config import load_config
from authd.zone.verify import ValidationPool
from tests.support.config import errors_of, write_config


def _scheduling(pool: ValidationPool) -> tuple[int, int]:
    future = pool._executor.submit(_policy_and_nice)
    return future.result(timeout=30)


def _policy_and_nice() -> tuple[int, int]:
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)


@pytest.mark.parametrize(("idle", "policy"), [(True, os.SCHED_IDLE), (False, os.SCHED_OTHER)])
def test_pool_processes_are_niced_and_idle_as_asked(idle: bool, policy: int) -> None:
    pool = ValidationPool(processes=1, nice=7, idle=idle)
    try:
        got_policy, got_nice = _scheduling(pool)
    finally:
        pool.close()
    assert got_policy == policy
    assert got_nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)


def test_idle_is_read_from_the_config(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "")).validation.idle is True
    config = load_config(write_config(tmp_path, "[validation]\nidle = false\n"))
    assert config.validation.idle is False
    assert any("idle" in str(issue) for issue in errors_of(tmp_path, "[validation]\nidle = 3\n"))
