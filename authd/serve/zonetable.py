"""The set of served zones, each published version swapped in atomically.

Every zone is one PublishedZone reference in a dict; publish() and set_state()
replace that reference, never mutate it, so a query that already holds a
PublishedZone answers from one version only (DESIGN.md principle 2), and a new
version comes with an empty response cache. All the zones' caches share one budget
(cache.CacheBudget), so their memory is capped for the table, not per zone.

A zone's expiry facts (`expires_at`, `signatures_until`: what EDNS EXPIRE answers say,
RFC 7314) change on every refresh without changing any answer: set_expiry() swaps the
reference but keeps the cache, and a new version keeps the facts until the next message
brings newer ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from authd.serve.cache import DEFAULT_ENTRIES, DEFAULT_TOTAL_ENTRIES, CacheBudget, ResponseCache
from authd.zone.snapshot import Snapshot


@dataclass(frozen=True, slots=True, eq=False)
class PublishedZone:
    origin: bytes
    snapshot: Snapshot | None  # None: configured, never loaded
    servfail: bool  # answer SERVFAIL (not loaded, or expired with on-expire = servfail)
    cache: ResponseCache = field(default_factory=ResponseCache)
    expired_at: float | None = None  # past expire (UNIX time it expired): answers are stale
    expires_at: float | None = None  # a secondary's expire deadline (None: served from a file)
    signatures_until: float | None = None  # earliest RRSIG expiration of the served version


class ZoneTable:
    def __init__(
        self, cache_entries: int = DEFAULT_ENTRIES, cache_total: int = DEFAULT_TOTAL_ENTRIES
    ) -> None:
        self._zones: dict[bytes, PublishedZone] = {}
        self.cache_entries = cache_entries
        self.cache_budget = CacheBudget(cache_total)

    def _new(
        self,
        origin: bytes,
        snapshot: Snapshot | None,
        servfail: bool,
        expired_at: float | None = None,
    ) -> PublishedZone:
        old = self._zones.get(origin)
        if old is not None:
            old.cache.release()  # a query still holding `old` may use it, uncounted
        cache = ResponseCache(self.cache_entries, self.cache_budget)
        expires_at = old.expires_at if old is not None else None
        signatures_until = old.signatures_until if old is not None else None
        return PublishedZone(
            origin, snapshot, servfail, cache, expired_at, expires_at, signatures_until
        )

    def add_zone(self, origin_key: bytes) -> None:
        """A configured zone: SERVFAIL until a version is published."""
        if origin_key not in self._zones:
            self._zones[origin_key] = self._new(origin_key, None, True)

    def remove_zone(self, origin_key: bytes) -> None:
        old = self._zones.pop(origin_key, None)
        if old is not None:
            old.cache.release()

    def publish(self, origin_key: bytes, snapshot: Snapshot) -> None:
        """Serve `snapshot` from now on (adds the zone if needed)."""
        if snapshot.origin != origin_key:
            raise ValueError("snapshot origin does not match the zone")
        self._zones[origin_key] = self._new(origin_key, snapshot, False)

    def set_state(self, origin_key: bytes, servfail: bool, expired_at: float | None = None) -> None:
        """Switch SERVFAIL on or off, keeping the current version (if any); `expired_at`
        marks the version as served past its expiry (EDE 3/24 in answers)."""
        current = self._zones.get(origin_key)
        if current is None:
            raise KeyError(origin_key)
        loaded = current.snapshot is not None
        servfail = servfail or not loaded
        if servfail != current.servfail or expired_at != current.expired_at:
            self._zones[origin_key] = self._new(origin_key, current.snapshot, servfail, expired_at)

    def set_expiry(
        self, origin_key: bytes, expires_at: float | None, signatures_until: float | None
    ) -> None:
        """The zone's expire deadline and signature horizon (EDNS EXPIRE); answers do not
        change, so the cache is kept."""
        current = self._zones.get(origin_key)
        if current is None:
            raise KeyError(origin_key)
        if (current.expires_at, current.signatures_until) != (expires_at, signatures_until):
            self._zones[origin_key] = replace(
                current, expires_at=expires_at, signatures_until=signatures_until
            )

    def get(self, origin_key: bytes) -> PublishedZone | None:
        return self._zones.get(origin_key)

    def origins(self) -> list[bytes]:
        return list(self._zones)

    def find(self, qname_key: bytes) -> PublishedZone | None:
        """The zone with the longest origin that qname_key is at or below."""
        zones = self._zones
        zone = zones.get(qname_key)
        if zone is not None:
            return zone
        pos = 0
        while qname_key[pos]:
            pos += qname_key[pos] + 1
            zone = zones.get(qname_key[pos:])
            if zone is not None:
                return zone
        return None
