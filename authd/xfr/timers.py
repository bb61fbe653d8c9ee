"""Refresh timer arithmetic of a secondary zone (RFC 1034 4.3.5): pure.

The zone's state machine (authd/zone/lifecycle.py) asks this module *when*:
the SOA timers clamped to the configured bounds, the jitter that keeps zones from
refreshing in lockstep, and the bootstrap back-off of a zone that never loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Random = Callable[[], float]
"""A source of floats in [0, 1): random.random, or a constant in tests."""

BOOTSTRAP_STEP = 5.0  # seconds: the n-th consecutive failure waits STEP * n^2 (Knot)
BOOTSTRAP_CAP = 7200.0  # ... but never more than two hours


@dataclass(frozen=True, slots=True)
class Settings:
    """Clamps on the SOA timers and the behaviour choices of one zone."""

    refresh_min: int = 2
    refresh_max: int = 28 * 86400
    retry_min: int = 1
    retry_max: int = 14 * 86400
    expire_min: int = 3
    expire_max: int = 2**31 - 1
    jitter: float = 0.1  # refresh and retry are shortened by up to this fraction
    startup_spread: float = 10.0  # the first refresh after start lands in [0, spread) s
    servfail_on_expire: bool = False  # on-expire = "servfail" (RFC 1034) or serve stale
    rollback_after: int = 0  # accept a lower serial after this many checks; 0 = never


@dataclass(frozen=True, slots=True)
class SoaTimers:
    """The serial and the timer fields of an SOA."""

    serial: int
    refresh: int
    retry: int
    expire: int


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def clamped(soa: SoaTimers, settings: Settings) -> tuple[int, int, int]:
    """(refresh, retry, expire) of an SOA within the configured bounds."""
    s = settings
    return (
        clamp(soa.refresh, s.refresh_min, s.refresh_max),
        clamp(soa.retry, s.retry_min, s.retry_max),
        clamp(soa.expire, s.expire_min, s.expire_max),
    )


def jittered(interval: float, settings: Settings, rand: Random) -> float:
    """Shorten an interval by a random fraction, so zones do not refresh in lockstep."""
    return interval * (1.0 - settings.jitter * rand())


def bootstrap_delay(failures: int) -> float:
    """Seconds before the next attempt of a zone that never loaded, after `failures` in a row.

    Knot's bootstrap: 5 s, 20 s, 45 s, 80 s, ... capped at 2 h, instead of the SOA
    retry (which a zone with no copy does not even have: the default would be 900 s).
    """
    if failures <= 0:
        return 0.0
    return min(BOOTSTRAP_STEP * failures * failures, BOOTSTRAP_CAP)
