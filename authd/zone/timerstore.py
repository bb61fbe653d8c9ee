"""The per-zone refresh timers record, encoded for its own small file: pure.

Timers change on every SOA check, so they never share a file with the zone: the
record is a handful of scalars written as one small JSON document (readable by an
operator with `cat`), with a crc32 over its canonical form so silent damage is
caught. The file is replaced atomically by the store, so it is never torn.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping

TIMERS_FORMAT = 1

TimerValue = int | float | str | None
Timers = dict[str, TimerValue]


def _canonical(timers: Mapping[str, TimerValue]) -> str:
    return json.dumps(dict(timers), sort_keys=True, separators=(",", ":"), allow_nan=False)


def encode_timers(zone_text: str, timers: Mapping[str, TimerValue]) -> bytes:
    """The file content for `timers`; ValueError for a value JSON cannot round-trip."""
    for name, value in timers.items():
        if not isinstance(name, str):
            raise ValueError(f"timer name {name!r} is not a string")
        if value is not None and not isinstance(value, int | float | str):
            raise ValueError(f"timer {name}: {type(value).__name__} is not int, float, str or None")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"timer {name}: {value} is not a finite number")
    body = _canonical(timers)
    document = {
        "format": TIMERS_FORMAT,
        "zone": zone_text,
        "timers": dict(timers),
        "crc32": zlib.crc32(body.encode()),
    }
    return (json.dumps(document, sort_keys=True, indent=1) + "\n").encode()


def decode_timers(data: bytes, zone_text: str) -> Timers:
    """The timers record from file content; ValueError says precisely what is wrong."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("format") != TIMERS_FORMAT:
        raise ValueError(f"format {document.get('format')!r} is not {TIMERS_FORMAT}")
    if document.get("zone") != zone_text:
        raise ValueError(f"belongs to zone {document.get('zone')!r}, not {zone_text!r}")
    timers = document.get("timers")
    if not isinstance(timers, dict):
        raise ValueError("'timers' is not an object")
    for name, value in timers.items():
        if value is not None and not isinstance(value, int | float | str):
            raise ValueError(f"timer {name}: {type(value).__name__} is not a scalar")
    if document.get("crc32") != zlib.crc32(_canonical(timers).encode()):
        raise ValueError("checksum mismatch")
    return timers
