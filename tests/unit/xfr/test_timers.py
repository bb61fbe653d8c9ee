"""Refresh timer arithmetic: clamping, jitter and the bootstrap back-off (pure)."""

from __future__ import annotations

from authd.xfr.timers import (
    BOOTSTRAP_CAP,
    Settings,
    SoaTimers,
    bootstrap_delay,
    clamped,
    jittered,
)


def test_bootstrap_delay_grows_quadratically_from_seconds() -> None:
    assert [bootstrap_delay(n) for n in range(1, 6)] == [5, 20, 45, 80, 125]
    assert bootstrap_delay(0) == 0


def test_bootstrap_delay_is_capped_at_two_hours() -> None:
    assert BOOTSTRAP_CAP == 7200
    assert bootstrap_delay(37) == 6845  # 5 * 37^2, still under the cap
    assert bootstrap_delay(38) == 7200
    assert bootstrap_delay(10_000) == 7200


def test_clamped_applies_the_configured_bounds() -> None:
    settings = Settings(refresh_min=300, retry_max=100, expire_min=7200)
    assert clamped(SoaTimers(1, refresh=5, retry=9999, expire=60), settings) == (300, 100, 7200)
    assert clamped(SoaTimers(1, 3600, 60, 86400), settings) == (3600, 60, 86400)


def test_jitter_only_shortens_and_stays_within_its_fraction() -> None:
    settings = Settings(jitter=0.2)
    assert jittered(1000, settings, lambda: 0.0) == 1000
    assert jittered(1000, settings, lambda: 0.5) == 900
    assert 800 < jittered(1000, settings, lambda: 0.999) < 1000
