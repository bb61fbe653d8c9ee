"""When `--wait` stops waiting, and with which verdict (authd.waiting, pure)."""

from __future__ import annotations

from typing import Any

from authd.waiting import outcome, timed_out

BEFORE: dict[str, Any] = {"kind": "secondary", "last_attempt": 100.0, "in_flight": "none"}


def status(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "secondary",
        "state": "ok",
        "serial": 7,
        "primary_serial": 7,
        "last_attempt": 100.0,
        "last_error": None,
        "last_rejection": None,
        "in_flight": "none",
    }
    return base | fields


def test_waits_until_an_attempt_started_after_the_request_has_ended() -> None:
    assert outcome("a.test", BEFORE, status()) is None  # the old attempt: not ours
    assert outcome("a.test", BEFORE, status(in_flight="soa-query")) is None
    assert outcome("a.test", BEFORE, status(last_attempt=101.0, in_flight="soa-query")) is None
    assert outcome("a.test", BEFORE, status(last_attempt=101.0, in_flight="transfer")) is None
    done = outcome("a.test", BEFORE, status(last_attempt=102.0))
    assert done is not None and done.ok
    assert done.message == "zone a.test: serves serial 7, the primary's"


def test_a_zone_never_tried_before_counts_its_first_attempt() -> None:
    before = {"kind": "secondary", "last_attempt": None}
    assert outcome("a.test", before, status(last_attempt=None)) is None
    assert outcome("a.test", before, status(last_attempt=5.0)) is not None


def test_the_last_error_is_the_outcome() -> None:
    done = outcome(
        "a.test",
        BEFORE,
        status(last_attempt=101.0, last_error="192.0.2.1@53: timeout: SOA query", serial=None),
    )
    assert done is not None and not done.ok
    assert done.message == (
        "zone a.test: failed: 192.0.2.1@53: timeout: SOA query (nothing served)"
    )


def test_behind_the_primary_without_an_error_is_a_failure() -> None:
    rejected = status(last_attempt=101.0, primary_serial=9, last_rejection="dnssec: bad RRSIG")
    done = outcome("a.test", BEFORE, rejected)
    assert done is not None and not done.ok
    assert done.message == (
        "zone a.test: not up to date: dnssec: bad RRSIG (still serving serial 7)"
    )
    done = outcome("a.test", BEFORE, status(last_attempt=101.0, primary_serial=9))
    assert done is not None and "the primary has serial 9" in done.message


def test_a_file_zone_is_done_when_the_command_returns() -> None:
    done = outcome("f.test", {}, {"kind": "file", "serial": 3})
    assert done is not None and done.ok and "serial 3" in done.message


def test_timeout_message_says_what_is_still_going_on() -> None:
    result = timed_out(
        "a.test", 0.5, status(state="refreshing", in_flight="soa-query", last_error="x")
    )
    assert not result.ok
    assert result.message == (
        "zone a.test: no outcome within 0.5 s (state refreshing, soa-query in progress); "
        "last error: x (still serving serial 7)"
    )
