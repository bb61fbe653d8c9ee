"""Export and promote (issue 14): the served version as a master file, with its digest.

An export is `<dir>/<zone>.zone` plus `<dir>/<zone>.zone.sha384`. The zone file starts
with comment lines naming the zone, serial, time and digest, then one record per line
(absolute names, AXFR order: SOA first), so authd, NSD, Knot and BIND all load it as is.
The `.sha384` file holds one line, `<hex digest> <zone>. serial <N>`: the RFC 8976
SIMPLE/SHA-384 digest of the canonical zone (what `authd zone history` shows and what
dnspython's `Zone.compute_digest` gives), not a hash of the file's bytes.

Every file is written atomically: a temp file in the same directory, fsync, rename, then
the directory fsynced, so a reader (or a crash) sees the old export or the new one.

`Exporter` keeps `[export] dir` up to date: every `interval` it exports the zones whose
served version changed since their last export, one zone at a time in a thread (the
rendering is CPU work), at most `batch` zones per tick; the rest wait for the next tick.

Promote writes the same file into `<state-dir>/promoted/` (or a given directory) and
says which config change turns the zone into a file zone; the serial stays the same, so
after the change and a reload the zone is served from the file with no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from authd.zone import names
from authd.zone.history import digest_hex
from authd.zone.snapshot import Snapshot
from authd.zone.store import _fsync_dir
from authd.zone.text import master_file_lines

log = logging.getLogger("authd.export")

DIGEST_SUFFIX = ".sha384"
PROMOTED_DIR = "promoted"


@dataclass(frozen=True, slots=True)
class Exported:
    zone: str
    serial: int
    path: Path
    digest_path: Path
    digest: str
    records: int


def file_name(zone: str) -> str:
    """`example.com.zone`; the root zone is `root.zone`."""
    return ("root" if zone == "." else zone) + ".zone"


def export_text(zone: str, snapshot: Snapshot, digest: str, now: float) -> str:
    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    origin = names.to_text(snapshot.origin)
    head = [
        f"; zone {origin} serial {snapshot.serial}, exported by authd at "
        f"{when:%Y-%m-%dT%H:%M:%SZ}, {snapshot.record_count} records",
        f"; sha384 {digest} (RFC 8976 SIMPLE digest of the canonical zone)",
        f"$ORIGIN {origin}",
    ]
    body = list(master_file_lines(snapshot))[1:]  # its first line is a shorter header
    return "\n".join(head + body) + "\n"


def digest_line(snapshot: Snapshot, digest: str) -> str:
    return f"{digest} {names.to_text(snapshot.origin)} serial {snapshot.serial}\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file beside `path`, fsync, rename, directory fsync (OSError on failure)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def export_zone(zone: str, snapshot: Snapshot, directory: Path, now: float) -> Exported:
    """Write the version and its digest into `directory` (created if needed). Blocking,
    CPU-bound: run it in a thread. Raises OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = digest_hex(snapshot)
    path = directory / file_name(zone)
    digest_path = path.with_name(path.name + DIGEST_SUFFIX)
    # The zone first: a digest file never names a version the zone file does not hold yet.
    write_atomic(path, export_text(zone, snapshot, digest, now).encode())
    write_atomic(digest_path, digest_line(snapshot, digest).encode())
    return Exported(zone, snapshot.serial, path, digest_path, digest, snapshot.record_count)


def promote_config_change(
    zone: str, path: Path, template: str | None, config: Path | None = None
) -> str:
    """The config change that serves the zone from the promoted file, spelled out.

    A zone's own `primaries` and `notify-from` conflict with `file`; primaries given by its
    template are ignored once the zone has a file, so the template may stay."""
    where = f" in {config}" if config is not None else ""
    lines = [
        f'In the [[zone]] with name = "{zone}"{where}:',
        "  - delete its own `primaries = [...]` line and its `notify-from` line, if any",
    ]
    if template is not None:
        lines.append(
            f'    (the primaries of template "{template}" are ignored for a file zone: '
            "the template can stay)"
        )
    lines += [
        "  - add this line:",
        f'    file = "{path}"',
        "Then: authd check-config"
        + (f" -c {config}" if config is not None else "")
        + " && authd reload"
        + (f" -c {config}" if config is not None else ""),
        "The zone is then served from the file with the same serial (and after restarts).",
    ]
    return "\n".join(lines)


# -- the periodic exports -------------------------------------------------------------------

ZoneSource = Callable[[], Iterable[tuple[str, Snapshot | None]]]


class Exporter:
    """Keeps `[export] dir` holding the served version of every zone."""

    def __init__(
        self,
        directory: Path,
        interval: float,
        zones: ZoneSource,
        now: Callable[[], float],
        *,
        batch: int = 8,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self.zones = zones
        self.now = now
        self.batch = batch
        self._exported: dict[str, Snapshot] = {}  # zone -> the version last written
        self.exports = 0
        self.failures = 0

    def due(self) -> list[tuple[str, Snapshot]]:
        """Zones whose served version is not the one last exported (in config order)."""
        return [
            (zone, snapshot)
            for zone, snapshot in self.zones()
            if snapshot is not None and self._exported.get(zone) is not snapshot
        ]

    async def tick(self) -> int:
        """Export up to `batch` due zones, one after the other in a thread; returns how
        many were written."""
        written = 0
        for zone, snapshot in self.due()[: self.batch]:
            try:
                done = await asyncio.to_thread(
                    export_zone, zone, snapshot, self.directory, self.now()
                )
            except OSError as exc:
                self.failures += 1
                log.error("zone %s: export to %s failed: %s", zone, self.directory, exc)
                continue
            self._exported[zone] = snapshot
            self.exports += 1
            written += 1
            log.info("zone %s: exported serial %d to %s", zone, done.serial, done.path)
        return written

    async def run(self) -> None:
        """Until cancelled: a tick every `interval` seconds, and right away while a
        previous tick left due zones behind."""
        while True:
            written = await self.tick()
            more = written == self.batch and bool(self.due())
            await asyncio.sleep(0 if more else self.interval)
