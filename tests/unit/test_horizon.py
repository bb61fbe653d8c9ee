"""The validity horizon of a served copy: pure values."""

from __future__ import annotations

from authd.horizon import Horizon, horizon, rfc3339, status_keys


def test_expire_deadline_counts_only_when_the_zone_servfails_on_expire() -> None:
    assert horizon(True, 100.0, False, 200.0) == Horizon(200.0, 200.0)
    assert horizon(True, 100.0, True, 200.0) == Horizon(100.0, 200.0)
    assert horizon(True, 300.0, True, 200.0) == Horizon(200.0, 200.0)
    assert horizon(True, 100.0, True, None) == Horizon(100.0, None)
    assert horizon(True, 100.0, False, None) == Horizon(None, None)
    assert horizon(True, None, True, None) == Horizon(None, None)  # a file zone: no expiry


def test_nothing_served_has_no_horizon() -> None:
    assert horizon(False, 100.0, True, 200.0) == Horizon(None, None)


def test_status_keys_are_rfc3339_utc() -> None:
    assert rfc3339(1767225600.9) == "2026-01-01T00:00:00Z"
    assert status_keys(Horizon(1767225600.0, None)) == {
        "valid_until": "2026-01-01T00:00:00Z",
        "signatures_valid_until": None,
    }
