"""The control commands over a zone's versions (issue 14): history, diff, ledger, export,
promote. The daemon answers them (App.versions_command); the CLI prints the answers.

Reads of the index and the ledger run on the recorder's thread (recorder.py), after
every record already asked for, so a command sees every version published before it.
Rebuilding a version, diffing and rendering run there too: CPU work, off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from authd import export as export_files
from authd.config import ZoneConfig
from authd.recorder import VersionRecorder
from authd.zone import history, ledger
from authd.zone.history import VersionRecord
from authd.zone.snapshot import Snapshot


class VersionsError(Exception):
    """A request about a zone's versions that cannot be answered; one line for the user."""


def parse_serial(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise VersionsError(f"{what}: not a serial: {value!r}")
    try:
        serial = int(str(value), 10)
    except ValueError:
        raise VersionsError(f"{what}: not a serial: {value!r}") from None
    if not 0 <= serial < 2**32:
        raise VersionsError(f"{what}: not a serial (0..4294967295): {serial}")
    return serial


class ZoneVersions:
    def __init__(
        self,
        name: str,
        config: ZoneConfig,
        served: Snapshot | None,
        recorder: VersionRecorder,
        state_dir: Path,
        now: Callable[[], float],
        config_source: Path | None = None,
    ) -> None:
        self.config_source = config_source
        self.name = name
        self.config = config
        self.served = served
        self.recorder = recorder
        self.state_dir = state_dir
        self.now = now

    async def _records(self) -> list[VersionRecord]:
        """The last `history-versions` entries (the file may hold up to twice as many)."""
        records = await self.recorder.run(self.recorder.index(self.config.origin).read)
        keep = self.config.history_versions
        return records[-keep:] if keep else []

    async def history(self) -> dict[str, Any]:
        records = await self._records()
        return {
            "zone": self.name,
            "served": self.served.serial if self.served is not None else None,
            "keep": self.config.history_versions,
            "versions": [asdict(r) for r in records],
        }

    def _beyond(self, serial: int, records: list[VersionRecord]) -> VersionsError:
        if not records:
            return VersionsError(f"zone {self.name}: no versions in the history yet")
        kept = ", ".join(str(r.serial) for r in records[-5:])
        more = f" (last {min(5, len(records))} of {len(records)})" if len(records) > 5 else ""
        return VersionsError(
            f"zone {self.name}: serial {serial} is not in the history; kept{more}: {kept}"
        )

    async def load(self, serial: int) -> Snapshot:
        """The version `serial` as it was published: the served one, or rebuilt from the
        store and checked against the digest the history recorded for it."""
        records = await self._records()
        record = history.find(records, serial)
        if self.served is not None and self.served.serial == serial:
            return self.served
        if record is None:
            raise self._beyond(serial, records)
        return await self.recorder.run(self._rebuild, record)

    def _rebuild(self, record: VersionRecord) -> Snapshot:
        store = self.recorder.store
        origin = self.config.origin
        found = store.load_version(
            origin, record.serial, lambda s: history.digest_hex(s) == record.digest
        )
        if found is not None:
            return found[0]
        if store.load_version(origin, record.serial) is None:
            raise VersionsError(
                f"zone {self.name}: serial {record.serial} is in the history but its copy is "
                "not stored (file zones keep no copies; see the README)"
            )
        raise VersionsError(
            f"zone {self.name}: no stored copy of serial {record.serial} matches its recorded "
            f"digest ({record.digest[:16]}...)"
        )

    async def diff(self, serial_a: object, serial_b: object) -> dict[str, Any]:
        a = parse_serial(serial_a, "SERIAL_A")
        if self.served is None:
            raise VersionsError(f"zone {self.name}: nothing is served yet")
        b = self.served.serial if serial_b is None else parse_serial(serial_b, "SERIAL_B")
        old = await self.load(a)
        new = await self.load(b)
        removed, added = await self.recorder.run(history.diff_lines, old, new)
        return {"zone": self.name, "from": a, "to": b, "removed": removed, "added": added}

    async def ledger(self, verify: bool) -> dict[str, Any]:
        path = self.recorder.ledger_path(self.config.origin)

        def read() -> dict[str, Any]:
            try:
                entries = [asdict(entry) for _file, _line, entry in ledger.read(path)]
            except ledger.LedgerError as exc:
                entries = []
                if not verify:
                    raise VersionsError(str(exc)) from None
            result: dict[str, Any] = {"zone": self.name, "path": str(path), "entries": entries}
            if verify:
                checked = ledger.verify(path, self.recorder.head(self.config.origin))
                result.update(ok=checked.ok, checked=checked.entries, problem=checked.problem)
            return result

        return await self.recorder.run(read)

    async def export(self, directory: object) -> dict[str, Any]:
        if not directory:
            raise VersionsError("no --dir given and no [export] dir in the config")
        return await self._write(Path(str(directory)))

    async def _write(self, directory: Path) -> dict[str, Any]:
        snapshot = self.served
        if snapshot is None:
            raise VersionsError(f"zone {self.name}: nothing is served yet")
        try:
            done = await self.recorder.run(
                export_files.export_zone, self.name, snapshot, directory, self.now()
            )
        except OSError as exc:
            raise VersionsError(f"zone {self.name}: cannot write into {directory}: {exc}") from exc
        return {
            "zone": self.name,
            "serial": done.serial,
            "path": str(done.path),
            "digest_path": str(done.digest_path),
            "digest": done.digest,
            "records": done.records,
        }

    async def promote(self, directory: object) -> dict[str, Any]:
        if not self.config.is_secondary:
            raise VersionsError(f"zone {self.name}: already a file zone ({self.config.file})")
        target = Path(str(directory)) if directory else self.state_dir / export_files.PROMOTED_DIR
        result = await self._write(target)
        result["config_change"] = export_files.promote_config_change(
            self.name, Path(result["path"]), self.config.template, self.config_source
        )
        return result
