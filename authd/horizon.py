"""The validity horizon of a served copy (issue 13): until when it stays usable.

Pure: values in, values out. Two times per zone, each None when nothing limits it:
- signatures_valid_until: the earliest RRSIG expiration in the served version (serve-stale
  does not make a signature valid);
- valid_until: the earlier of that and the expire deadline, which counts only when the zone
  answers SERVFAIL once expired (on-expire = "servfail"; with serve-stale it never stops
  answering).
Nothing is served: no horizon at all.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from authd.zone.snapshot import Snapshot, is_sig_type, unpack_node


@dataclass(frozen=True, slots=True)
class Horizon:
    valid_until: float | None
    signatures_valid_until: float | None


def earliest_signature_expiration(snapshot: Snapshot, now: float) -> int | None:
    """The earliest RRSIG expiration in a version (RFC 4034 serial time, read near `now`):
    a scan, no crypto."""
    earliest: int | None = None
    reference = int(now)
    for _, blob in snapshot.items():
        for rtype, (_, rdatas) in unpack_node(blob).items():
            if not is_sig_type(rtype):
                continue
            for rdata in rdatas:
                delta = (int.from_bytes(rdata[8:12], "big") - reference) & 0xFFFFFFFF
                expires = reference + (delta - (1 << 32) if delta >= 1 << 31 else delta)
                if earliest is None or expires < earliest:
                    earliest = expires
    return earliest


def horizon(
    served: bool, expires_at: float | None, servfail_on_expire: bool, signatures: float | None
) -> Horizon:
    if not served:
        return Horizon(None, None)
    limits = [t for t in (expires_at if servfail_on_expire else None, signatures) if t is not None]
    return Horizon(min(limits) if limits else None, signatures)


def rfc3339(timestamp: float | None) -> str | None:
    """`2026-01-02T03:04:05Z` (UTC, whole seconds), or None."""
    if timestamp is None:
        return None
    when = datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_keys(value: Horizon) -> dict[str, str | None]:
    """The `authd zone status` keys (RFC 3339 strings)."""
    return {
        "valid_until": rfc3339(value.valid_until),
        "signatures_valid_until": rfc3339(value.signatures_valid_until),
    }
