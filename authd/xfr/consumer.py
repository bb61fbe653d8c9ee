"""The catalog consumer: each published catalog version in, member zones started and stopped.

    published version -> parse (authd.zone.catalog)
        Broken  -> log, metric, status; nothing else changes
        Catalog -> reconcile (authd.xfr.catalogs)
            held (too many removals) -> wait for `authd zone approve`
            applied -> MemberHost add/remove/reset/regroup; processed members saved to disk

Invariants:
- `processed[catalog]` is the last version applied; members always equal what reconcile
  gives for the processed versions (a broken or held version changes neither).
- The processed members of each catalog are saved (state-dir/catalogs/) when they change,
  so a restart starts the same members before any transfer, and an update held before a
  restart is still held after it (the stored catalog copy is only its latest version).
- An expired or unreachable catalog publishes nothing: its members go on on their own timers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from authd.config import ZoneConfig
from authd.metrics import CatalogFacts
from authd.xfr.catalogs import Membership, Plan, apply, reconcile, removal_held
from authd.zone import names
from authd.zone.catalog import Broken, Catalog, Member, parse
from authd.zone.snapshot import Snapshot
from authd.zone.store import zone_dir_name

log = logging.getLogger("authd.catalog")

CATALOGS_DIR = "catalogs"  # the processed members of each catalog
REMOVED_DIR = "catalog-removed"  # removed members' stored data, until their keep period ends


class MemberHost(Protocol):
    """What the consumer needs from the application."""

    def explicit_zones(self) -> Set[bytes]:
        """Zones configured as [[zone]] (the config wins over a catalog)."""
        ...

    def member_config(self, membership: Membership) -> ZoneConfig | str:
        """The member's config (its group's template), or why it cannot be built."""
        ...

    def add_member(self, config: ZoneConfig, batch: int) -> None:
        """Start a member; `batch` members are added at once (their first checks spread)."""
        ...

    def remove_member(self, zone: bytes, keep: float, catalog: str) -> None: ...

    def reset_member(self, config: ZoneConfig) -> None: ...

    def reconfigure_member(self, config: ZoneConfig) -> None: ...


@dataclass
class CatalogState:
    config: ZoneConfig
    processed: Catalog | None = None
    broken: Broken | None = None  # the latest version, when it could not be processed
    held: Catalog | None = None  # a version waiting for `authd zone approve`
    held_reason: str | None = None


class CatalogConsumer:
    def __init__(self, host: MemberHost, state_dir: Path) -> None:
        self.host = host
        self.state_dir = state_dir
        self.catalogs: dict[bytes, CatalogState] = {}
        self.members: dict[bytes, Membership] = {}
        self.changes: Counter[tuple[str, str]] = Counter()  # (catalog, change) -> members
        self._shadowed: set[bytes] = set()  # logged once

    # -- configuration --------------------------------------------------------------------

    def configure(self, configs: Iterable[ZoneConfig]) -> None:
        """The catalog zones of the (re)loaded config; a new one starts from its saved members."""
        fresh = {c.origin: c for c in configs if c.catalog is not None}
        for origin in self.catalogs.keys() - fresh.keys():
            del self.catalogs[origin]
            with contextlib.suppress(FileNotFoundError):
                self._saved_path(origin).unlink()
        for origin, config in fresh.items():
            state = self.catalogs.get(origin)
            if state is None:
                self.catalogs[origin] = CatalogState(config, self._load_saved(origin))
            else:
                state.config = config

    def reconcile_all(self) -> None:
        """Re-apply every processed catalog (after start-up or a reload): members of
        catalogs no longer configured go, members' settings follow their templates."""
        self._run(self._processed(), None, guard=False)
        for member in list(self.members.values()):
            config = self.host.member_config(member)
            if isinstance(config, ZoneConfig):
                self.host.reconfigure_member(config)

    # -- versions ---------------------------------------------------------------------------

    def published(self, origin: bytes, snapshot: Snapshot) -> None:
        state = self.catalogs.get(origin)
        if state is None:
            return
        parsed = parse(snapshot)
        name = state.config.name
        if isinstance(parsed, Broken):
            state.broken = parsed
            self.changes[(name, "broken")] += 1
            log.error(
                "catalog %s: serial %d not processed, members unchanged: %s",
                name,
                parsed.serial,
                parsed.reason,
            )
            return
        state.broken = None
        for note in parsed.ignored:
            log.warning("catalog %s: %s", name, note)
        self._run({**self._processed(), origin: parsed}, state, guard=True)

    def holds(self, origin: bytes, serial: object = None) -> bool:
        """Whether the catalog has an update held (that serial, when one is given)."""
        state = self.catalogs.get(origin)
        if state is None or state.held is None:
            return False
        return serial is None or str(serial) == str(state.held.serial)

    def approve(self, origin: bytes) -> str:
        state = self.catalogs[origin]
        if state.held is None:
            return f"catalog {state.config.name}: no update is held"
        held = state.held
        plan = self._run({**self._processed(), origin: held}, state, guard=False)
        return f"catalog {state.config.name}: serial {held.serial} approved: {_summary(plan)}"

    # -- applying ---------------------------------------------------------------------------

    def _processed(self) -> dict[bytes, Catalog]:
        return {o: s.processed for o, s in self.catalogs.items() if s.processed is not None}

    def _run(
        self, catalogs: dict[bytes, Catalog], state: CatalogState | None, *, guard: bool
    ) -> Plan:
        plan = reconcile(catalogs, self.members, self.host.explicit_zones())
        if state is not None:
            catalog = catalogs[state.config.origin]
            settings = state.config.catalog
            assert settings is not None
            reason = (
                removal_held(
                    plan,
                    self.members,
                    state.config.origin,
                    settings.max_removed_share,
                    settings.guard_from,
                )
                if guard
                else None
            )
            if reason is not None:
                if state.held is None or state.held.serial != catalog.serial:
                    log.warning(
                        "catalog %s: serial %d %s", state.config.name, catalog.serial, reason
                    )
                state.held, state.held_reason = catalog, reason
                return plan
            state.held = state.held_reason = None
            state.processed = catalog
        unusable = self._perform(plan)
        before, self.members = self.members, apply(self.members, plan)
        for zone in unusable:  # left as it was: the next version (or a reload) tries again
            if zone in before:
                self.members[zone] = before[zone]
            else:
                self.members.pop(zone, None)
        touched = {m.catalog for m in (*plan.add, *plan.remove, *plan.reset, *plan.regroup)}
        if state is not None:
            touched.add(state.config.origin)
        for origin in touched & self.catalogs.keys():
            self._save(origin)
        if not plan.empty and state is not None:
            log.info(
                "catalog %s: serial %d applied: %s",
                state.config.name,
                catalogs[state.config.origin].serial,
                _summary(plan),
            )
        return plan

    def _perform(self, plan: Plan) -> set[bytes]:
        """Carry the plan out; returns the members whose settings could not be built."""
        unusable: set[bytes] = set()
        for zone in plan.shadowed:
            if zone not in self._shadowed:
                self._shadowed.add(zone)
                log.info(
                    "zone %s: listed by a catalog but configured as a [[zone]]: the config wins",
                    names.display(zone),
                )
        for member in plan.release:
            log.info(
                "zone %s: now configured as a [[zone]]: the config wins over catalog %s",
                names.display(member.zone),
                self._name(member.catalog),
            )
        for member in plan.remove:
            state = self.catalogs.get(member.catalog)
            keep = state.config.catalog.removed_keep if state and state.config.catalog else 0.0
            self.host.remove_member(member.zone, keep, self._name(member.catalog))
            self.changes[(self._name(member.catalog), "removed")] += 1
        for kind, members in (
            ("added", plan.add),
            ("reset", plan.reset),
            ("regrouped", plan.regroup),
        ):
            for member in members:
                config = self.host.member_config(member)
                if isinstance(config, str):
                    log.error(
                        "zone %s: catalog member not served: %s", names.display(member.zone), config
                    )
                    unusable.add(member.zone)
                    continue
                if kind == "added":
                    self.host.add_member(config, len(plan.add))
                elif kind == "reset":
                    self.host.reset_member(config)
                else:
                    self.host.reconfigure_member(config)
                self.changes[(self._name(member.catalog), kind)] += 1
        return unusable

    def _name(self, origin: bytes) -> str:
        state = self.catalogs.get(origin)
        return state.config.name if state is not None else names.display(origin)

    # -- persistence ------------------------------------------------------------------------

    def _saved_path(self, origin: bytes) -> Path:
        return self.state_dir / CATALOGS_DIR / (zone_dir_name(origin) + ".json")

    def _save(self, origin: bytes) -> None:
        state = self.catalogs[origin]
        if state.processed is None:
            return
        members = [
            [names.display(m.zone), m.unique_id.hex(), m.group]
            for m in self.members.values()
            if m.catalog == origin
        ]
        data = {"serial": state.processed.serial, "members": members}
        path = self._saved_path(origin)
        try:
            path.parent.mkdir(mode=0o750, exist_ok=True)
            temp = path.with_suffix(".tmp")
            with temp.open("w", encoding="utf-8") as out:
                json.dump(data, out)
                out.flush()
                os.fsync(out.fileno())
            temp.replace(path)
        except OSError as exc:
            log.error("catalog %s: members not saved to %s: %s", state.config.name, path, exc)

    def _load_saved(self, origin: bytes) -> Catalog | None:
        """The members applied before the restart, as a catalog version."""
        path = self._saved_path(origin)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            members = {}
            for zone_text, unique_hex, group in data["members"]:
                zone = names.key_from_text(zone_text)
                members[zone] = Member(zone, bytes.fromhex(unique_hex), group)
            return Catalog(origin, int(data["serial"]), members)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "catalog %s: saved members unusable (%s): %s", names.display(origin), path, exc
            )
            return None

    # -- status and metrics ---------------------------------------------------------------

    def status(self, origin: bytes) -> dict[str, Any]:
        state = self.catalogs.get(origin)
        if state is None:
            return {}
        return {
            "catalog_members": sum(1 for m in self.members.values() if m.catalog == origin),
            "catalog_serial": state.processed.serial if state.processed else None,
            "catalog_broken": (
                f"serial {state.broken.serial}: {state.broken.reason}" if state.broken else None
            ),
            "catalog_held": (
                f"serial {state.held.serial}: {state.held_reason}" if state.held else None
            ),
        }

    def facts(self) -> list[CatalogFacts]:
        return [
            CatalogFacts(
                s.config.name,
                sum(1 for m in self.members.values() if m.catalog == origin),
                s.held is not None,
                s.broken is not None,
                {kind: n for (name, kind), n in self.changes.items() if name == s.config.name},
            )
            for origin, s in self.catalogs.items()
        ]


def _summary(plan: Plan) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in plan.counts().items())


def removed_dir_name(zone: bytes, delete_after: float) -> str:
    """The set-aside directory of a removed member: its zone dir and when it may go."""
    return f"{zone_dir_name(zone)}.{int(delete_after)}"


def purge_removed(state_dir: Path, now: float) -> list[Path]:
    """Delete the set-aside data of removed members whose keep period has ended."""
    removed: list[Path] = []
    folder = state_dir / REMOVED_DIR
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        _, _, deadline = entry.name.rpartition(".")
        if not deadline.isdigit() or int(deadline) > now:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
        log.info("removed catalog member data %s deleted (keep period over)", entry.name)
    return removed


__all__ = [
    "CatalogConsumer",
    "MemberHost",
    "purge_removed",
    "removed_dir_name",
]
