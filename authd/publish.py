"""The one port between replication (xfr/) and serving (serve/): make a version visible.

xfr/ decides *that* a verified, stored version is to be served; serve/ (through the
application) decides *how* every process gets it. xfr/ never builds serve's messages.
"""

from __future__ import annotations

from typing import Protocol

from authd.zone.journal import VersionMeta
from authd.zone.snapshot import Record, Snapshot

DiffSteps = tuple[tuple[tuple[Record, ...], tuple[Record, ...]], ...]
"""(deleted, added) per IXFR step, oldest first."""


class Publisher(Protocol):
    def publish_version(
        self, origin: bytes, snapshot: Snapshot, meta: VersionMeta, steps: DiffSteps | None
    ) -> int | None:
        """Serve `snapshot` (durable already); `steps` is the diff from the served version,
        None for a full version. Returns a ticket for wait_published (None: nothing to wait)."""
        ...

    async def wait_published(self, seq: int | None) -> bool:
        """True once every serving process answers from the version behind `seq`."""
        ...

    def set_servfail(self, origin: bytes, servfail: bool, expired_at: float | None = None) -> None:
        """Answer SERVFAIL for the zone (never loaded, or expired with on-expire=servfail);
        `expired_at` (UNIX time) while it is past expire, so answers say they are stale."""
        ...

    def set_expiry(
        self, origin: bytes, expires_at: float | None, signatures_until: float | None
    ) -> None:
        """The zone's expire deadline and earliest RRSIG expiration (UNIX times), what
        EDNS EXPIRE answers count down to (RFC 7314); sent when either changes."""
        ...
