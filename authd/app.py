"""The composition root: config in, a running server out.

Start-up order matters for operators: every zone that has a copy (a master file,
or the last good version in the store) is published before the first socket
opens, so a restart with every primary down answers at once. Then the serving
engine, the control socket, the metrics endpoint, and last the replication tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Iterator, Mapping
from typing import Any

from authd import horizon, metrics, sdnotify
from authd.assure.dscheck import DsCache
from authd.assure.gather import ZoneView
from authd.assure.periodic import PeriodicChecks
from authd.clock import Clock, SystemClock
from authd.config import Config, ZoneConfig
from authd.control import ControlError, ControlServer
from authd.export import Exporter
from authd.members import CatalogMembers
from authd.publish import DiffSteps
from authd.recorder import VersionRecorder
from authd.serve import cookies, rrl, updates
from authd.serve.querylog import SampledQueryLog
from authd.serve.responder import Responder
from authd.serve.stats import responder_counters
from authd.serve.tcp import TcpLimits
from authd.serve.workers import ResponderLike, WorkerPool, send_event, worker_count
from authd.serve.xfr_edge import XfrEndpoint
from authd.serve.zonetable import PublishedZone, ZoneTable
from authd.wording import plural
from authd.xfr import notify_out
from authd.xfr.consumer import CatalogConsumer
from authd.xfr.notify_edge import NotifyEndpoint, NotifyEvent, notify_acls, notify_keyring
from authd.xfr.policy import policy_for
from authd.xfr.secondary import (
    Operations,
    Pacer,
    Secondaries,
    ZoneEntry,
    remove_stale_candidates,
    startup_spread,
)
from authd.zone import lifecycle, names
from authd.zone.journal import VersionMeta
from authd.zone.loader import ZoneLoadError, load_zone_file
from authd.zone.snapshot import COMPACT_FROM_RECORDS, Snapshot
from authd.zone.store import LoadedZone, Store, StoreError, Unusable
from authd.zone.text import master_file_lines
from authd.zone.verify import ValidationPool, verify

log = logging.getLogger("authd")


class StateDirError(Exception):
    """The state directory cannot be used; the message says why and what to do."""


class ZoneRuntime:
    """What the control plane knows of one configured zone (status, metrics, publish)."""

    def __init__(self, config: ZoneConfig) -> None:
        self.config = config
        self.snapshot: Snapshot | None = None
        self.meta: VersionMeta | None = None
        self.last_error: str | None = None
        self.last_rejection: str | None = None
        self.file_mtime: float | None = None
        self.secondary: ZoneEntry | None = None  # the lifecycle record of a secondary zone

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def serial(self) -> int | None:
        return self.snapshot.serial if self.snapshot is not None else None

    def state(self) -> str:
        if self.secondary is not None:
            record = self.secondary.record
            if record.held is not None and record.state is lifecycle.State.OK:
                return "held"  # a version waits for approval; the served one answers
            return record.state.value
        return "never-loaded" if self.snapshot is None else "ok"

    def status(self, now: float) -> dict[str, Any]:
        meta = self.meta
        status: dict[str, Any] = {
            "zone": self.name,
            "kind": "secondary" if self.config.is_secondary else "file",
            "state": self.state(),
            "serial": self.serial,
            "source": (meta.primary or str(self.config.file or meta.transfer)) if meta else None,
            "transfer": meta.transfer if meta else None,
            "loaded_at": meta.received_at if meta else None,
            "records": self.snapshot.record_count if self.snapshot is not None else None,
            "last_error": self.last_error,
            "last_rejection": self.last_rejection,
        }
        if self.secondary is not None:
            status.update(self.secondary.status())
            status["state"] = self.state()  # "held" while a version waits for approval
            if self.last_error and not status.get("last_error"):
                status["last_error"] = self.last_error
        if self.config.member_of is not None:
            status["catalog"] = self.config.member_of
            status["group"] = self.config.group
        status.update(horizon.status_keys(self.facts().horizon))  # valid_until, ...
        return status

    def facts(self) -> metrics.ZoneFacts:
        meta = self.meta
        secondary = self.secondary
        if secondary is None:
            return metrics.ZoneFacts(
                self.name,
                self.state(),
                self.serial,
                None,
                meta.received_at if meta else None,
                None,
                None,
            )
        record = secondary.record
        return metrics.ZoneFacts(
            zone=self.name,
            state=record.state.value,
            serial=record.served.serial if record.served is not None else None,
            primary_serial=record.primary.serial if record.primary is not None else None,
            last_success=record.last_success,
            expires_at=record.expires_at,
            signature_horizon=secondary.horizon,
            refresh_interval=record.refresh,
            retry_interval=record.retry,
            servfail_on_expire=self.config.on_expire == "servfail",
            held=record.held is not None,
            pinned=record.pinned is not None,
        )


class ServedZones(Mapping[str, Snapshot]):
    """Every served version by zone name, read live (no copy per periodic check)."""

    def __init__(self, zones: Mapping[bytes, ZoneRuntime]) -> None:
        self._zones = zones

    def __getitem__(self, name: str) -> Snapshot:
        runtime = self._zones.get(names.key_from_text(name))
        if runtime is None or runtime.snapshot is None:
            raise KeyError(name)
        return runtime.snapshot

    def __iter__(self) -> Iterator[str]:
        return (r.name for r in list(self._zones.values()) if r.snapshot is not None)

    def __len__(self) -> int:
        return sum(1 for r in self._zones.values() if r.snapshot is not None)


# Versions at least this large are compacted in the main process (snapshot.build_compact).
RECYCLE_FROM_RECORDS = COMPACT_FROM_RECORDS
PUBLISH_TIMEOUT = 60.0  # seconds wait_published waits for every worker to be re-forked


class App:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.table = ZoneTable()  # the main's copy: what a freshly forked worker starts from
        self.zones: dict[bytes, ZoneRuntime] = {}
        self.stats = metrics.ControlPlaneStats()
        self._store: Store | None = None
        self.pool: WorkerPool[ZoneTable] | None = None
        self.pacer: Pacer | None = None
        self.secondaries: Secondaries | None = None  # the lifecycle shell of every secondary
        self.checks: PeriodicChecks | None = None  # drift and delegation rounds (issue 13)
        self.ds_cache = DsCache(self.clock)  # the parent's DS for ds-check = "parent"
        self._spread = 0.0  # first SOA checks after start spread over this many seconds
        self.validation: ValidationPool | None = None
        self.control: ControlServer | None = None
        self.health: metrics.HealthServer | None = None
        self.stopping = asyncio.Event()
        self.cookie_secret = cookies.random_secret()  # used when [cookies] gives none
        self._background: set[asyncio.Task[None]] = set()
        self.last_file_publish: int | None = None  # publish ticket of the last file load
        self._published: dict[bytes, int] = {}  # origin -> pool generation of its version
        self.recorder: VersionRecorder | None = None  # history index + ledger (issue 14)
        self.exporter: Exporter | None = None
        self._export_task: asyncio.Task[None] | None = None
        self.catalogs: CatalogConsumer | None = None  # catalog zones' members (issue 15)
        self.members = CatalogMembers(self)  # what the consumer decides, done to zones

    # -- zones ------------------------------------------------------------------------

    def publish(
        self, runtime: ZoneRuntime, snapshot: Snapshot, meta: VersionMeta, *, stored: bool = False
    ) -> int | None:
        """Make a version visible: one reference swap in the main's table, then every worker
        is re-forked from it (coalesced; workers.WorkerPool.publish). No worker rebuilds it.

        Returns the ticket for wait_published (None before the workers exist).
        """
        previous = runtime.serial
        runtime.snapshot = snapshot
        runtime.meta = meta
        self.table.publish(runtime.config.origin, snapshot)
        if self.recorder is not None:  # history index + ledger, in a thread
            event = "rolled-back" if meta.transfer == "rollback" else "published"
            self.recorder.published(
                runtime.config.origin, snapshot, meta, runtime.config.history_versions, event
            )
        ticket = None
        if self.pool is not None:
            ticket = self.pool.publish()
        self._published[runtime.config.origin] = ticket or 0
        if runtime.config.catalog is not None and self.catalogs is not None:
            self.catalogs.published(runtime.config.origin, snapshot)
        if stored:
            how = f"the stored copy (received {meta.transfer} from {meta.primary or '-'})"
        else:
            how = f"{meta.primary or runtime.config.file or 'the store'} via {meta.transfer}"
        log.info(
            "zone %s: serving serial %d (%s) from %s, %d records",
            runtime.name,
            snapshot.serial,
            "first version" if previous is None else f"was {previous}",
            how,
            snapshot.record_count,
        )
        notify_out.after_publish(
            self, runtime.config, snapshot.serial, (snapshot.soa_ttl, snapshot.soa_rdata), ticket
        )
        return ticket

    def publish_ticket(self, origin: bytes) -> int | None:
        """The publish ticket of the zone's current version (for wait_published)."""
        return self._published.get(origin) or None

    def workers_state(self, origin: bytes) -> str | None:
        """Whether the workers answer for a zone's published version: None when they do,
        else "publishing" (not every worker has it yet) or "not-answering" (a worker slot
        has no serving worker: crashed or starting)."""
        if self.pool is None:
            return "not-answering"
        served = self.pool.served_generation()
        if served is None:
            return "not-answering"
        return None if served >= self._published.get(origin, 0) else "publishing"

    def add_zone(self, config: ZoneConfig) -> ZoneRuntime:
        runtime = ZoneRuntime(config)
        self.zones[config.origin] = runtime
        self.table.add_zone(config.origin)
        if self.pool is not None:
            self.pool.broadcast(updates.AddZone(config.origin))
        if config.file is not None:
            self.load_file_zone(runtime)
        else:
            self.load_stored_zone(runtime)
        return runtime

    def load_file_zone(self, runtime: ZoneRuntime) -> bool:
        """(Re)load a zone from its master file; a bad file keeps the old version serving."""
        path = runtime.config.file
        assert path is not None
        try:
            mtime = path.stat().st_mtime
            snapshot = load_zone_file(path, runtime.config.name)
        except (ZoneLoadError, OSError) as exc:
            error = str(exc) if isinstance(exc, ZoneLoadError) else f"{path}: {exc.strerror}"
            runtime.last_error = error
            log.error("zone %s: not loaded: %s", runtime.name, error)
            return False
        runtime.file_mtime = mtime
        runtime.last_error = None
        self.last_file_publish = self.publish(
            runtime, snapshot, VersionMeta("file", self.clock.now(), None)
        )
        return True

    def load_stored_zone(self, runtime: ZoneRuntime) -> None:
        loaded = self.store.try_load(runtime.config.origin)
        if loaded is None:
            log.info("zone %s: no stored copy yet, waiting for a transfer", runtime.name)
            return
        if isinstance(loaded, Unusable):
            runtime.last_error = f"stored copy unusable ({loaded.path}): {loaded.reason}"
            log.error(
                "zone %s: %s; it will be transferred afresh", runtime.name, runtime.last_error
            )
            return
        self._adopt_loaded(runtime, loaded)

    def _adopt_loaded(self, runtime: ZoneRuntime, loaded: LoadedZone) -> None:
        for warning in loaded.warnings:
            log.warning("zone %s: stored copy: %s", runtime.name, warning)
        self.publish(runtime, loaded.snapshot, loaded.meta, stored=True)  # logged as from disk

    # -- what secondaries need (xfr/secondary.py Host) ----------------------------------

    @property
    def store(self) -> Store:
        """The state directory's store; opened by start()."""
        if self._store is None:
            raise RuntimeError("the store is not open yet")
        return self._store

    def publish_version(
        self, origin: bytes, snapshot: Snapshot, meta: VersionMeta, steps: DiffSteps | None
    ) -> int | None:
        """The Publisher port (authd/publish.py): how the workers get the version is ours.

        `steps` is not needed: the version is built once (here) and the workers are
        re-forked from this process, so no worker re-applies the diff.
        """
        return self.publish(self.zones[origin], snapshot, meta)

    async def wait_published(self, seq: int | None) -> bool:
        """True once every worker serves the version behind ticket `seq`."""
        if seq is None or self.pool is None:
            return True
        return await self.pool.wait_published(seq, timeout=PUBLISH_TIMEOUT)

    def served_snapshot(self, origin: bytes) -> Snapshot | None:
        runtime = self.zones.get(origin)
        return runtime.snapshot if runtime is not None else None

    def record_event(
        self, origin: bytes, event: str, serial: int | None, digest: str, reason: str
    ) -> None:
        if self.recorder is not None:
            self.recorder.note(origin, event, serial, digest, reason)

    def set_servfail(self, origin: bytes, servfail: bool, expired_at: float | None = None) -> None:
        current = self.table.get(origin)
        before = (current.servfail, current.expired_at) if current is not None else None
        self.table.set_state(origin, servfail, expired_at)
        after = self.table.get(origin)
        if (
            self.pool is not None
            and after is not None
            and (after.servfail, after.expired_at) != before
        ):
            self.pool.broadcast(_state_message(after))  # only changes

    def set_expiry(
        self, origin: bytes, expires_at: float | None, signatures_until: float | None
    ) -> None:
        """The Publisher port: what EDNS EXPIRE answers count down to (one message per change,
        about one per refresh; answers and caches stay as they are)."""
        current = self.table.get(origin)
        if current is None:
            return
        self.table.set_expiry(origin, expires_at, signatures_until)
        after = self.table.get(origin)
        if self.pool is not None and after is not None and after is not current:
            self.pool.broadcast(_state_message(after))

    def start_secondary(self, runtime: ZoneRuntime, spread: float | None = None) -> None:
        assert self.secondaries is not None
        spread = self._spread if spread is None else spread
        runtime.secondary = self.secondaries.add(runtime.config, spread=spread)
        if self.checks is not None:
            self.checks.add(runtime.config, self.config.server)

    def post(self, runtime: ZoneRuntime, event: lifecycle.Event) -> None:
        if self.secondaries is not None:
            self.secondaries.post(runtime.config.origin, event)

    def on_worker_event(self, payload: object) -> None:
        """An accepted NOTIFY from a worker: one event for the zone's refresh machine."""
        if not isinstance(payload, NotifyEvent):
            return
        runtime = self.zones.get(payload.zone)
        if runtime is None or runtime.secondary is None:
            return
        self.stats.notifies[(runtime.name, "accepted")] += 1
        self.post(runtime, lifecycle.NotifyReceived(payload.serial, payload.source))

    def remove_zone(
        self, origin: bytes, why: str = "removed from the configuration"
    ) -> asyncio.Task[None] | None:
        """Stop serving a zone now; the returned task ends when its operations have."""
        runtime = self.zones.pop(origin)
        if self.checks is not None:
            self.checks.remove(origin)
        self.ds_cache.forget(origin)
        task = None
        if runtime.secondary is not None and self.secondaries is not None:
            task = asyncio.get_running_loop().create_task(self.secondaries.remove(origin))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self.table.remove_zone(origin)
        self._published.pop(origin, None)
        if self.pool is not None:
            self.pool.broadcast(updates.RemoveZone(origin))
        log.info("zone %s: %s, no longer served", runtime.name, why)
        return task

    def zone_named(self, name: object) -> ZoneRuntime:
        if not isinstance(name, str) or not name:
            raise ControlError("a zone name is required")
        try:
            origin = names.key_from_text(name)
        except Exception as exc:
            raise ControlError(f"not a domain name: {name}") from exc
        runtime = self.zones.get(origin)
        if runtime is None:
            raise ControlError(f"unknown zone {name.rstrip('.')}: not in the configuration")
        return runtime

    # -- control ------------------------------------------------------------------------

    def status(self, zone: object = None) -> list[dict[str, Any]]:
        now = self.clock.now()
        selected = [self.zone_named(zone)] if zone else list(self.zones.values())
        statuses = [runtime.status(now) for runtime in selected]
        for runtime, status in zip(selected, statuses, strict=True):
            # "ok" only when the workers answer for the zone's version (README, workers).
            workers = self.workers_state(runtime.config.origin)
            if status.get("state") == "ok" and workers is not None:
                status["state"] = workers
            if self.checks is not None:
                status.update(self.checks.status(runtime.config.origin))  # drift, delegation
            if runtime.config.ds_check != "off":
                status["ds_check"] = self.ds_cache.status(runtime.config)
            if runtime.config.catalog is not None and self.catalogs is not None:
                status.update(self.catalogs.status(runtime.config.origin))
        return statuses

    async def handle_control(self, command: str, args: dict[str, Any]) -> Any:
        if command == "status":
            return self.status(args.get("zone"))
        if command == "approve":  # a catalog update held for its removals, else the guard's
            runtime = self.zone_named(args.get("zone"))
            origin = runtime.config.origin
            if self.catalogs is not None and self.catalogs.holds(origin, args.get("serial")):
                return self.catalogs.approve(origin)
        if command == "reload":
            return await self.reload()
        if command == "verify":
            return await self.verify_served(self.zone_named(args.get("zone")))
        if command == "dump":
            return self.dump(self.zone_named(args.get("zone")))
        if command in ("report", "drill"):
            return await self.assure(command, self.zone_named(args.get("zone")))
        if command in ("approve", "reject", "rollback", "unpin"):
            from authd.guardctl import guard_command

            return await guard_command(self, command, self.zone_named(args.get("zone")), args)
        if command in ("history", "diff", "ledger", "export", "promote"):
            return await self.versions_command(command, self.zone_named(args.get("zone")), args)
        if command in ("refresh", "retransfer"):
            runtime = self.zone_named(args.get("zone"))
            if runtime.config.file is not None:
                if self.load_file_zone(runtime):
                    # Answer once every worker serves it: "refreshed" means served.
                    await self.wait_published(self.last_file_publish)
                    return f"zone {runtime.name}: reloaded from {runtime.config.file}"
                raise ControlError(f"zone {runtime.name}: {runtime.last_error}")
            assert runtime.secondary is not None
            if command == "refresh":
                self.post(runtime, lifecycle.ForceRefresh())
                return f"zone {runtime.name}: refresh started (SOA check, then IXFR/AXFR if newer)"
            self.post(runtime, lifecycle.ForceRetransfer())
            return f"zone {runtime.name}: retransfer started (forced AXFR)"
        raise ControlError(f"unknown command {command}")

    async def verify_served(self, runtime: ZoneRuntime) -> dict[str, Any]:
        """The full check of the served version, on demand (authd zone verify)."""
        snapshot = runtime.snapshot
        if snapshot is None:
            raise ControlError(f"zone {runtime.name}: nothing is served yet")
        policy = policy_for(runtime.config)
        verdict = await asyncio.to_thread(verify, snapshot, policy, self.clock.now())
        result = dataclasses.asdict(verdict)
        result["serial"] = snapshot.serial
        return result

    async def assure(self, command: str, runtime: ZoneRuntime) -> dict[str, Any]:
        """authd zone report / drill (issue 13): authd/assure/ asks and judges."""
        from authd.assure import run

        snapshot = runtime.snapshot
        if snapshot is None:
            raise ControlError(f"zone {runtime.name}: nothing is served yet")
        now = self.clock.now()
        served = {r.name: r.snapshot for r in self.zones.values() if r.snapshot is not None}
        view = run.ZoneView(self.config, runtime.config, snapshot, runtime.facts(), now, served)
        return await (run.report(view) if command == "report" else run.drill(view))

    def assure_view(self, origin: bytes) -> ZoneView | None:
        """What the periodic checks compare: the served version (None: nothing served)."""
        runtime = self.zones.get(origin)
        if runtime is None or runtime.snapshot is None:
            return None
        served = ServedZones(self.zones)
        return ZoneView(
            self.config, runtime.config, runtime.snapshot, runtime.facts(), self.clock.now(), served
        )

    def _drift_due(self, origin: bytes) -> None:
        if self.checks is not None:
            self.checks.wake(origin)

    # -- version history, ledger, export, promote (issue 14) ------------------------------

    async def versions_command(
        self, command: str, runtime: ZoneRuntime, args: dict[str, Any]
    ) -> dict[str, Any]:
        from authd import versions

        assert self.recorder is not None
        zone = versions.ZoneVersions(
            runtime.name,
            runtime.config,
            runtime.snapshot,
            self.recorder,
            self.config.server.state_dir,
            self.clock.now,
            self.config.source,
        )
        try:
            if command == "history":
                return await zone.history()
            if command == "diff":
                return await zone.diff(args.get("from"), args.get("to"))
            if command == "ledger":
                return await zone.ledger(bool(args.get("verify")))
            directory = args.get("dir") or None
            if command == "export":
                return await zone.export(directory or self.config.export.dir)
            return await zone.promote(directory)
        except versions.VersionsError as exc:
            raise ControlError(str(exc)) from exc

    async def load_version(self, origin: bytes, serial: int) -> Snapshot:
        """A version from the zone's history, rebuilt from the store and checked against
        its recorded digest (for rollback); ControlError when it is not retained."""
        from authd import versions

        runtime = self.zones[origin]
        assert self.recorder is not None
        zone = versions.ZoneVersions(
            runtime.name,
            runtime.config,
            runtime.snapshot,
            self.recorder,
            self.config.server.state_dir,
            self.clock.now,
        )
        try:
            return await zone.load(serial)
        except versions.VersionsError as exc:
            raise ControlError(str(exc)) from exc

    def dump(self, runtime: ZoneRuntime) -> str:
        """The served version as master-file text (authd zone dump)."""
        snapshot = runtime.snapshot
        if snapshot is None:
            raise ControlError(f"zone {runtime.name}: nothing is served yet")
        return "".join(line + "\n" for line in master_file_lines(snapshot))

    async def reload(self) -> str:
        """Re-read the config: add and remove zones, reload changed files; queries go on."""
        sdnotify.reloading()
        summary = "reload failed"
        try:
            summary = await self._reload()
            return summary
        finally:
            sdnotify.reloaded(summary)

    async def _reload(self) -> str:
        from authd.config import ConfigError, format_errors, load_config

        try:
            fresh = load_config(self.config.source)
        except ConfigError as exc:
            # The daemon's own log says so too, however the reload was asked for.
            log.error("config not reloaded, the running one stays: %s", format_errors(exc.errors))
            raise ControlError("config not reloaded:\n" + format_errors(exc.errors)) from exc
        old = {z.origin: z for z in self.config.zones}
        new = {z.origin: z for z in fresh.zones}
        self.config = fresh
        self._spread = startup_spread(len(new.keys() - old.keys()))
        if self.catalogs is not None:
            self.catalogs.configure(fresh.zones)
        for origin in old.keys() - new.keys():
            self.remove_zone(origin)
        added = changed = 0
        for origin, zone in new.items():
            runtime = self.zones.get(origin)
            if runtime is None:
                runtime = self.add_zone(zone)
                if zone.is_secondary:
                    self.start_secondary(runtime)
                added += 1
            elif runtime.config != zone or self._file_changed(runtime):
                runtime.config = zone
                if runtime.secondary is not None and self.secondaries is not None:
                    await self.secondaries.remove(origin)
                    runtime.secondary = None
                if zone.file is not None:
                    self.load_file_zone(runtime)
                else:
                    self.start_secondary(runtime)
                changed += 1
        if self.catalogs is not None:
            self.catalogs.reconcile_all()  # members follow templates, catalogs removed
        if self.pool is not None:
            # Workers build their NOTIFY ACL, keyring, RRL and identity from self.config at
            # fork: re-fork them so the reloaded config (and zones it added) take effect.
            self.pool.publish()
        summary = (
            f"reloaded {self.config.source}: {plural(len(new), 'zone')} "
            f"({added} added, {len(old.keys() - new.keys())} removed, {changed} changed)"
        )
        log.info(summary)
        return summary

    @staticmethod
    def _file_changed(runtime: ZoneRuntime) -> bool:
        path = runtime.config.file
        if path is None:
            return False
        try:
            return path.stat().st_mtime != runtime.file_mtime
        except OSError:
            return True

    # -- lifecycle ----------------------------------------------------------------------

    def serving(self) -> int:
        """Zones with a version to answer from (from a file, the store or a primary)."""
        return sum(1 for runtime in self.zones.values() if runtime.snapshot is not None)

    def ready(self) -> bool:
        return self.serving() == len(self.zones)

    async def start(self) -> None:
        server = self.config.server
        try:
            self._store = Store(server.state_dir)
            remove_stale_candidates(self._store.state_dir)
        except StoreError as exc:
            hint = (
                "is another authd running with this state-dir?"
                if exc.errno is None
                else "check that the directory exists and is writable by this user"
            )
            raise StateDirError(f"state-dir unusable: {exc}; {hint}") from exc
        self.recorder = VersionRecorder(self._store, self.clock.now)
        # Catalog members saved at the last run start first, before any catalog copy is read;
        # each catalog's stored copy then goes through the consumer like any new version.
        self.catalogs = CatalogConsumer(self.members, server.state_dir)
        self.catalogs.configure(self.config.zones)
        self.catalogs.reconcile_all()
        for zone in self.config.zones:
            self.add_zone(zone)
        self.members.start_cleanup()
        limits = TcpLimits(
            max_connections=server.tcp_max_clients,
            max_per_address=server.tcp_max_clients_per_ip,
            idle_timeout=server.tcp_idle_timeout,
        )
        self.pool = WorkerPool(
            server.workers,
            [(e.host, e.port) for e in server.listen],
            self.table,
            self._make_responder,
            updates.apply_update,
            read_counters=worker_counters,
            tcp_limits=limits,
            on_event=self.on_worker_event,
        )
        await self.pool.start()  # forks: the workers inherit every zone loaded above
        for endpoint in server.listen:
            log.info(
                "answering on %s (UDP and TCP, %s)", endpoint, plural(self.pool.count, "worker")
            )
        self.pacer = Pacer(self.config.transfer)
        validation = self.config.validation
        self.validation = ValidationPool(validation.processes, validation.nice, validation.idle)
        own_ns = frozenset(names.key_from_text(n) for n in server.ns_names)
        operations = Operations(
            self,
            self.pacer,
            self.validation,
            self.config.transfer,
            self.clock,
            self.ds_cache,
            own_ns=own_ns,
        )
        self.secondaries = Secondaries(self, operations, self.clock)
        self.checks = PeriodicChecks(
            self.assure_view, self.secondaries.schedule("drift", self._drift_due), self.clock
        )
        # Counted once (a count per zone was quadratic in the number of zones).
        self._spread = startup_spread(sum(1 for r in self.zones.values() if r.config.is_secondary))
        for runtime in self.zones.values():
            if runtime.config.is_secondary:
                self.start_secondary(runtime)
        if server.control_socket is not None:
            self.control = ControlServer(server.control_socket, self.handle_control)
            await self.control.start()
        if server.metrics is not None:
            collector = metrics.AuthdCollector(
                self.stats,
                lambda: [runtime.facts() for runtime in self.zones.values()],
                self._worker_counters,
                self.clock.now,
                lambda: self.checks.facts() if self.checks is not None else (),
                catalog_facts=self._catalog_facts,
            )
            self.health = metrics.HealthServer(
                server.metrics.host,
                server.metrics.port,
                metrics.make_registry(collector),
                self.ready,
                lambda: {"zones": self.status()},
            )
            await self.health.start()
        export = self.config.export
        if export.dir is not None:
            self.exporter = Exporter(export.dir, export.interval, self._served, self.clock.now)
            self._export_task = asyncio.get_running_loop().create_task(self.exporter.run())

    def _catalog_facts(self) -> list[metrics.CatalogFacts]:
        return self.catalogs.facts() if self.catalogs is not None else []

    def _served(self) -> list[tuple[str, Snapshot | None]]:
        return [(runtime.name, runtime.snapshot) for runtime in self.zones.values()]

    def _make_responder(self, table: ZoneTable) -> ResponderLike:
        """Runs in each worker: its responder, with the NOTIFY edge for secondary zones."""
        server = self.config.server
        responder = Responder(
            table,
            identity=server.identity,
            version=server.version,
            nsid=server.nsid,
            udp_payload=server.udp_payload,
            cookies=cookies.jar_for(self.config.cookies, self.cookie_secret),
            tcp_idle_timeout=server.tcp_idle_timeout,
            clock=self.clock,
        )
        # Catalog members are zones too: their NOTIFY ACL comes with the zone, not the config.
        zones = tuple(runtime.config for runtime in self.zones.values())
        responder.notify_handler = NotifyEndpoint(
            notify_acls(dataclasses.replace(self.config, zones=zones)),
            notify_keyring(self.config),
            send_event,
            clock=self.clock.now,
            udp_payload=server.udp_payload,
        )
        responder.xfr_handler = XfrEndpoint.from_config(self.config, table, self.clock.now)
        responder.catalogs = frozenset(z.origin for z in self.config.zones if z.catalog is not None)
        front: ResponderLike = rrl.install(responder, self.config.rrl, worker_count(server.workers))
        if self.config.log.query_sample_rate > 0:
            front = SampledQueryLog(front, self.config.log.query_sample_rate)
        return front

    def _worker_counters(self) -> dict[str, int]:
        return self.pool.collect_counters() if self.pool is not None else {}

    async def stop(self) -> None:
        notify_out.close(self)
        if self.checks is not None:
            await self.checks.stop()
        self.members.stop_cleanup()
        if self.secondaries is not None:
            await self.secondaries.stop()
        if self.validation is not None:
            self.validation.close()
        if self.pool is not None:
            await self.pool.stop(timeout=3.0)
        if self.control is not None:
            await self.control.stop()
        if self.health is not None:
            await self.health.stop()
        if self._export_task is not None:
            self._export_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._export_task
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        if self._store is not None:
            self._store.close()


def worker_counters(responder: ResponderLike) -> dict[str, int]:
    """Runs in each worker: responder, NOTIFY and RRL counters, flat (metrics.py groups them)."""
    front = responder
    while not isinstance(responder, Responder):  # unwrap the query log / RRL layers
        responder = responder.wrapped  # type: ignore[attr-defined]
    counters = responder_counters(responder)
    if isinstance(responder.notify_handler, NotifyEndpoint):
        counters.update(responder.notify_handler.counters())
    counters.update(rrl.rrl_counters(front))
    return counters


async def _main(config: Config) -> int:
    app = App(config)
    await app.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_reload() -> None:
        task = loop.create_task(app.reload())
        task.add_done_callback(_log_reload_failure)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    serving, total = app.serving(), len(app.zones)
    if serving == total:
        zones = plural(total, "zone")
        log.info("authd ready: %s, all serving, pid-relative start took %.2f s", zones, _uptime())
    else:
        log.warning(
            "authd started: %d of %d zones serving, %d with nothing to serve yet (SERVFAIL "
            "until loaded; /readyz says 503 until every zone has loaded), start took %.2f s",
            serving,
            total,
            total - serving,
            _uptime(),
        )
    sdnotify.ready(f"{serving} of {plural(total, 'zone')} serving")
    await stop.wait()
    sdnotify.stopping()
    log.info("stopping")
    await app.stop()
    return 0


def _log_reload_failure(task: asyncio.Task[str]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None and not isinstance(exc, ControlError):  # those are logged already
            log.error("reload failed: %s", exc)


_STARTED = time.monotonic()


def _uptime() -> float:
    return time.monotonic() - _STARTED


def run(config: Config) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        log.warning("uvloop not available; using the default asyncio loop")
    try:
        return asyncio.run(_main(config))
    except StateDirError as exc:
        log.error("%s", exc)
        return 1


def _state_message(zone: PublishedZone) -> updates.SetState:
    """Everything a worker knows of a zone besides its version, as one message."""
    return updates.SetState(
        zone.origin, zone.servfail, zone.expired_at, zone.expires_at, zone.signatures_until
    )
