"""`authd zone refresh|retransfer --wait`: has the zone's attempt ended, and how? (pure)

The CLI sends the command, then polls the zone's status over the control socket. It reads
only these status keys: kind, state, serial, primary_serial, last_attempt, last_error,
last_rejection, in_flight. The attempt that answers the request is the first one that
started after it: `last_attempt` differs from its value just before the request (an
attempt already running then is followed by one more, which the daemon starts when it
ends). It has ended when nothing is in flight. Then the zone is good only if it serves the
serial its primary has and the attempt left no error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    message: str


def outcome(zone: str, before: Mapping[str, Any], now: Mapping[str, Any]) -> Outcome | None:
    """The outcome of the attempt the request started, or None while it is not over."""
    if now.get("kind") == "file":
        return Outcome(True, f"zone {zone}: serves serial {now.get('serial')} from its file")
    attempt = now.get("last_attempt")
    if not isinstance(attempt, int | float) or attempt == before.get("last_attempt"):
        return None  # no attempt has started since the request
    if now.get("in_flight") not in (None, "none"):
        return None
    serial, primary = now.get("serial"), now.get("primary_serial")
    error = now.get("last_error")
    if error:
        return Outcome(False, f"zone {zone}: failed: {error}{_serving(serial)}")
    if serial is not None and serial == primary:
        return Outcome(True, f"zone {zone}: serves serial {serial}, the primary's")
    why = now.get("last_rejection") or f"the primary has serial {primary}"
    return Outcome(False, f"zone {zone}: not up to date: {why}{_serving(serial)}")


def timed_out(zone: str, timeout: float, now: Mapping[str, Any]) -> Outcome:
    state = now.get("state", "?")
    doing = now.get("in_flight")
    what = f", {doing} in progress" if doing not in (None, "none") else ""
    error = now.get("last_error")
    last = f"; last error: {error}" if error else ""
    return Outcome(
        False,
        f"zone {zone}: no outcome within {timeout:g} s (state {state}{what}){last}"
        f"{_serving(now.get('serial'))}",
    )


def _serving(serial: object) -> str:
    return f" (still serving serial {serial})" if serial is not None else " (nothing served)"
