"""Prometheus metrics and the health endpoints.

Nothing here runs per query: workers count in plain ints and send their totals
to the main process now and then (serve/workers.py); the main process keeps the
latest totals per worker and sums them at scrape time. Zone facts are read from
the live zone states when /metrics is scraped, so the numbers never go stale.

Endpoints on the `metrics` address: /metrics (Prometheus text), /healthz
(liveness: 200 while the process runs), /readyz (200 once every zone has loaded
once), /status (JSON of `authd zone status` for every zone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from authd.assure.watch import DELEGATION_KINDS, Watch
from authd.assure.watch import KINDS as DRIFT_KINDS
from authd.horizon import Horizon, horizon

log = logging.getLogger("authd.metrics")


@dataclass
class ControlPlaneStats:
    """Event counters of the main process (transfers, NOTIFY, rejections)."""

    transfers: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # zone,type,result
    transfer_seconds: defaultdict[str, float] = field(
        default_factory=lambda: defaultdict(float)
    )  # zone -> sum of durations
    transfer_bytes: Counter[str] = field(default_factory=Counter)  # zone -> bytes received
    transfer_records: Counter[str] = field(default_factory=Counter)
    notifies: Counter[tuple[str, str]] = field(default_factory=Counter)  # zone,result
    notifies_sent: Counter[tuple[str, str, str]] = field(
        default_factory=Counter
    )  # zone,remote,result
    rejections: Counter[tuple[str, str]] = field(default_factory=Counter)  # zone,reason
    tsig_failures: Counter[str] = field(default_factory=Counter)  # reason (TSIG_REASONS)
    soa_checks: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # zone,remote,result
    remote_last_success: dict[str, float] = field(default_factory=dict)  # remote id -> time
    remote_last_failure: dict[str, float] = field(default_factory=dict)
    store_failures: Counter[str] = field(default_factory=Counter)  # zone


@dataclass(frozen=True)
class ZoneFacts:
    """What /metrics says about one zone; built from the zone's state at scrape time."""

    zone: str
    state: str  # ok | refreshing | expired | never-loaded
    serial: int | None
    primary_serial: int | None
    last_success: float | None  # wall-clock time of the last successful refresh
    expires_at: float | None
    signature_horizon: float | None  # earliest RRSIG expiration in the served version
    refresh_interval: float | None = None  # the SOA REFRESH in force (secondary zones)
    retry_interval: float | None = None  # the SOA RETRY in force (secondary zones)
    servfail_on_expire: bool = False  # on-expire = "servfail": the expire deadline limits
    held: bool = False  # a version is held by the change guard (or the pin)
    pinned: bool = False  # a rollback pinned the zone

    @property
    def horizon(self) -> Horizon:
        return horizon(
            self.serial is not None,
            self.expires_at,
            self.servfail_on_expire,
            self.signature_horizon,
        )


@dataclass(frozen=True)
class CatalogFacts:
    """What /metrics says about one catalog zone (authd/xfr/consumer.py)."""

    catalog: str
    members: int
    held: bool  # an update waits for `authd zone approve`
    broken: bool  # the latest version could not be processed
    changes: Mapping[str, int] = field(default_factory=dict)  # added/removed/... -> members


ZONE_STATES = ("ok", "refreshing", "expired", "never-loaded")


# Workers report flat counters "<group>.<label>" (e.g. "rcode.NXDOMAIN", "udp.received");
# the pool sums them over workers, monotonic across restarts. Per group: the metric,
# its help, and the label the part after the dot goes into (None: no label).
WORKER_GROUPS: dict[str, tuple[str, str, str | None]] = {
    "queries": ("authd_queries_total", "Queries received, by transport.", "transport"),
    "rcode": ("authd_responses_total", "Responses sent, by rcode.", "rcode"),
    "qtype": ("authd_queries_by_type_total", "Queries received, by query type.", "qtype"),
    "zone": ("authd_zone_queries_total", "Queries answered from each zone.", "zone"),
    "responses": ("authd_responses_flagged_total", "Responses by property.", "kind"),
    "cache": ("authd_cache_lookups_total", "Response cache lookups.", "result"),
    "udp": ("authd_udp_events_total", "UDP transport events.", "event"),
    "tcp": ("authd_tcp_events_total", "TCP transport events.", "event"),
    "rrl": ("authd_rrl_responses_total", "Responses affected by RRL.", "action"),
    "ede": ("authd_responses_ede_total", "Extended DNS Errors sent (RFC 8914).", "code"),
    "cookie": ("authd_cookies_total", "Queries with a DNS Cookie, by verdict.", "result"),
    "xfrout": (
        "authd_xfr_outbound_total",
        "Outbound AXFR/IXFR requests by result (axfr, ixfr, ixfr-axfr-style, up-to-date, "
        "udp-soa, refused, bad-tsig, expired, not-loaded, not-auth, udp-axfr, formerr), and "
        "signed queries whose TSIG did not verify (query-bad-tsig).",
        "result",
    ),
}
GAUGE_COUNTERS = {"tcp.open_connections": ("authd_tcp_open_connections", "Open TCP connections.")}


class AuthdCollector:
    """A prometheus_client collector over the live state of the daemon."""

    def __init__(
        self,
        stats: ControlPlaneStats,
        zone_facts: Callable[[], Iterable[ZoneFacts]],
        worker_counters: Callable[[], Mapping[str, int]],
        now: Callable[[], float],
        watches: Callable[[], Iterable[tuple[str, Watch]]] = lambda: (),
        catalog_facts: Callable[[], Iterable[CatalogFacts]] = list,
    ) -> None:
        self.catalog_facts = catalog_facts
        self.stats = stats
        self.zone_facts = zone_facts
        self.worker_counters = worker_counters
        self.now = now
        self.watches = watches  # the periodic drift and delegation checks (assure/periodic.py)

    def collect(self) -> Iterator[Metric]:
        facts = list(self.zone_facts())
        # Only zones in the configuration have series: a zone removed by a reload takes
        # per-zone series with it (added again, they come back with their totals).
        zones = {f.zone for f in facts}
        yield from self._zone_metrics(facts)
        yield from watch_metrics(w for w in self.watches() if w[0] in zones)
        yield from self._catalog_metrics(list(self.catalog_facts()))
        for family in (*self._control_plane_metrics(), *self._worker_metrics()):
            yield _only_configured_zones(family, zones)

    def _catalog_metrics(self, catalogs: list[CatalogFacts]) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "authd_catalog_held",
            "1 while a catalog update removing too many members waits for approval.",
            labels=["catalog"],
        )
        broken = GaugeMetricFamily(
            "authd_catalog_broken",
            "1 when the catalog's latest version could not be processed (RFC 9432 5.1).",
            labels=["catalog"],
        )
        members = GaugeMetricFamily(
            "authd_catalog_members", "Member zones served for the catalog.", labels=["catalog"]
        )
        changes = CounterMetricFamily(
            "authd_catalog_changes",
            "Catalog member changes applied (added, removed, reset, regrouped) and broken "
            "versions seen.",
            labels=["catalog", "change"],
        )
        for facts in catalogs:
            held.add_metric([facts.catalog], int(facts.held))
            broken.add_metric([facts.catalog], int(facts.broken))
            members.add_metric([facts.catalog], facts.members)
            for change, count in sorted(facts.changes.items()):
                changes.add_metric([facts.catalog, change], count)
        yield from (held, broken, members, changes)

    def _zone_metrics(self, all_facts: list[ZoneFacts]) -> Iterator[Metric]:
        now = self.now()
        serial = GaugeMetricFamily("authd_zone_serial", "SOA serial served.", labels=["zone"])
        primary = GaugeMetricFamily(
            "authd_zone_primary_serial", "SOA serial last seen at a primary.", labels=["zone"]
        )
        age = GaugeMetricFamily(
            "authd_zone_refresh_age_seconds",
            "Seconds since the last successful refresh (or load for file zones).",
            labels=["zone"],
        )
        expires = GaugeMetricFamily(
            "authd_zone_expires_in_seconds",
            "Seconds until SOA EXPIRE passes without a refresh (negative: expired since).",
            labels=["zone"],
        )
        expired = GaugeMetricFamily(
            "authd_zone_expired", "1 when SOA EXPIRE has passed.", labels=["zone"]
        )
        state = GaugeMetricFamily(
            "authd_zone_state", "1 for the zone's current state.", labels=["zone", "state"]
        )
        interval = GaugeMetricFamily(
            "authd_zone_refresh_interval_seconds",
            "The SOA REFRESH in force (clamped), secondary zones only.",
            labels=["zone"],
        )
        retry = GaugeMetricFamily(
            "authd_zone_retry_interval_seconds",
            "The SOA RETRY in force (clamped), secondary zones only.",
            labels=["zone"],
        )
        horizon = GaugeMetricFamily(
            "authd_zone_signature_horizon_seconds",
            "Seconds until the earliest RRSIG in the served version expires.",
            labels=["zone"],
        )
        valid_until = GaugeMetricFamily(
            "authd_zone_valid_until_timestamp_seconds",
            "Until when the served copy is usable: the earlier of the earliest RRSIG "
            "expiration and, with on-expire = servfail, the expire deadline.",
            labels=["zone"],
        )
        signatures_until = GaugeMetricFamily(
            "authd_zone_signatures_valid_until_timestamp_seconds",
            "The earliest RRSIG expiration in the served version.",
            labels=["zone"],
        )
        held = GaugeMetricFamily(
            "authd_zone_held",
            "1 while a new version is held by the change guard (or a pin), not served.",
            labels=["zone"],
        )
        pinned = GaugeMetricFamily(
            "authd_zone_pinned",
            "1 while a rollback pins the zone to an older version.",
            labels=["zone"],
        )
        for facts in all_facts:
            zone = facts.zone
            held.add_metric([zone], 1.0 if facts.held else 0.0)
            pinned.add_metric([zone], 1.0 if facts.pinned else 0.0)
            limits = facts.horizon
            if limits.valid_until is not None:
                valid_until.add_metric([zone], limits.valid_until)
            if limits.signatures_valid_until is not None:
                signatures_until.add_metric([zone], limits.signatures_valid_until)
            if facts.serial is not None:
                serial.add_metric([zone], facts.serial)
            if facts.primary_serial is not None:
                primary.add_metric([zone], facts.primary_serial)
            if facts.last_success is not None:
                age.add_metric([zone], now - facts.last_success)
            if facts.expires_at is not None:
                expires.add_metric([zone], facts.expires_at - now)
            expired.add_metric([zone], 1.0 if facts.state == "expired" else 0.0)
            for name in ZONE_STATES:
                state.add_metric([zone, name], 1.0 if facts.state == name else 0.0)
            if facts.signature_horizon is not None:
                horizon.add_metric([zone], facts.signature_horizon - now)
            if facts.refresh_interval is not None:
                interval.add_metric([zone], facts.refresh_interval)
            if facts.retry_interval is not None:
                retry.add_metric([zone], facts.retry_interval)
        yield from (serial, primary, age, expires, expired, state, horizon, interval, retry)
        yield from (valid_until, signatures_until, held, pinned)

    def _control_plane_metrics(self) -> Iterator[Metric]:
        stats = self.stats
        yield _counter(
            "authd_xfr_transfers_total",
            "Zone transfers by type and result.",
            ["zone", "type", "result"],
            {key: value for key, value in stats.transfers.items()},
        )
        yield _counter(
            "authd_xfr_transfer_duration_seconds_total",
            "Time spent in transfers.",
            ["zone"],
            {(z,): v for z, v in stats.transfer_seconds.items()},
        )
        yield _counter(
            "authd_xfr_transfer_bytes_total",
            "Bytes received in transfers.",
            ["zone"],
            {(z,): v for z, v in stats.transfer_bytes.items()},
        )
        yield _counter(
            "authd_xfr_transfer_records_total",
            "Records received in transfers.",
            ["zone"],
            {(z,): v for z, v in stats.transfer_records.items()},
        )
        yield _counter(
            "authd_xfr_notifies_total",
            "NOTIFY messages by result.",
            ["zone", "result"],
            {key: value for key, value in stats.notifies.items()},
        )
        yield _counter(
            "authd_xfr_notifies_sent_total",
            "NOTIFY rounds sent to downstreams (zone `notify`), one per target and round, by "
            "result: ok, timeout, bad-tsig, or the rcode of the answer (notauth, refused...).",
            ["zone", "remote", "result"],
            {key: value for key, value in stats.notifies_sent.items()},
        )
        yield _counter(
            "authd_zone_rejections_total",
            "Candidate versions rejected by checks, by reason.",
            ["zone", "reason"],
            {key: value for key, value in stats.rejections.items()},
        )
        yield _counter(
            "authd_xfr_soa_checks_total",
            "SOA checks by zone, remote ([[remote]] id) and result (ok or the failure outcome).",
            ["zone", "remote", "result"],
            {key: value for key, value in stats.soa_checks.items()},
        )
        for name, help_text, times in (
            (
                "authd_remote_last_success_timestamp_seconds",
                "When an SOA check or transfer from the remote last succeeded.",
                stats.remote_last_success,
            ),
            (
                "authd_remote_last_failure_timestamp_seconds",
                "When an SOA check or transfer from the remote last failed.",
                stats.remote_last_failure,
            ),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=["remote"])
            for remote, at in times.items():
                gauge.add_metric([remote], at)
            yield gauge
        yield _counter(
            "authd_xfr_tsig_failures_total",
            "TSIG failures by reason: BADSIG, BADKEY, BADTIME, BADTRUNC, unsigned, unexpected, "
            "other (authd.xfr.transfer.TSIG_REASONS).",
            ["reason"],
            {(r,): v for r, v in stats.tsig_failures.items()},
        )
        yield _counter(
            "authd_store_failures_total",
            "Versions that could not be stored (disk full, I/O error).",
            ["zone"],
            {(z,): v for z, v in stats.store_failures.items()},
        )

    def _worker_metrics(self) -> Iterator[Metric]:
        flat = self.worker_counters()
        grouped: dict[str, dict[tuple[str, ...], float]] = {group: {} for group in WORKER_GROUPS}
        for name, value in flat.items():
            if name in GAUGE_COUNTERS:
                continue
            group, _, label = name.partition(".")
            if group in grouped:
                grouped[group][(label,)] = value
        for group, (metric, help_text, label_name) in WORKER_GROUPS.items():
            yield _counter(metric, help_text, [label_name] if label_name else [], grouped[group])
        for name, (metric, help_text) in GAUGE_COUNTERS.items():
            gauge = GaugeMetricFamily(metric, help_text)
            gauge.add_metric([], flat.get(name, 0))
            yield gauge


def watch_metrics(items: Iterable[tuple[str, Watch]]) -> Iterator[Metric]:
    """The periodic checks' series: per peer its serial, when it was last checked, since
    when it is ahead of authd (only while it is), and 1 per current drift finding kind (0
    for the other kinds); per zone the count of delegation findings by kind."""
    serial = GaugeMetricFamily(
        "authd_peer_serial",
        "SOA serial a peer served at the last drift check.",
        labels=["zone", "peer"],
    )
    checked = GaugeMetricFamily(
        "authd_peer_last_checked_timestamp_seconds",
        "When a peer was last asked by the drift check.",
        labels=["zone", "peer"],
    )
    ahead = GaugeMetricFamily(
        "authd_peer_ahead_since_timestamp_seconds",
        "Since when a peer has served a newer serial than authd (present only while it does).",
        labels=["zone", "peer"],
    )
    drift = GaugeMetricFamily(
        "authd_zone_drift",
        "1 for each kind of the current drift findings against a peer, else 0.",
        labels=["zone", "peer", "kind"],
    )
    delegation = GaugeMetricFamily(
        "authd_zone_delegation_findings",
        "Findings of the last delegation and DS check that the parent answered, by kind.",
        labels=["zone", "kind"],
    )
    for zone, watch in items:
        for peer in watch.peers:
            if peer.serial is not None:
                serial.add_metric([zone, peer.peer], peer.serial)
            if peer.checked_at is not None:
                checked.add_metric([zone, peer.peer], peer.checked_at)
            if peer.ahead_since is not None:
                ahead.add_metric([zone, peer.peer], peer.ahead_since)
            kinds = {f.kind for f in peer.findings}
            for kind in DRIFT_KINDS:
                drift.add_metric([zone, peer.peer, kind], 1.0 if kind in kinds else 0.0)
        if watch.delegation is not None:
            found = Counter(f.kind for f in watch.delegation)
            for kind in DELEGATION_KINDS:
                delegation.add_metric([zone, kind], found.get(kind, 0))
    yield from (serial, checked, ahead, drift, delegation)


def _only_configured_zones(family: Metric, zones: set[str]) -> Metric:
    """The family without the samples of zones no longer configured (any `zone` label)."""
    family.samples = [
        sample
        for sample in family.samples
        if "zone" not in sample.labels or sample.labels["zone"] in zones
    ]
    return family


def _counter(
    name: str, help_text: str, labels: list[str], values: Mapping[tuple[str, ...], float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=labels)
    for label_values, value in values.items():
        family.add_metric(list(label_values), value)
    return family


def make_registry(collector: AuthdCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class HealthServer:
    """A small HTTP/1.0 server for /metrics, /healthz, /readyz and /status."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        status: Callable[[], Any],
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.ready = ready
        self.status = status
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def route(self, path: str) -> tuple[int, str, bytes]:
        """(status code, content type, body) for a GET of path."""
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            if self.ready():
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", b"not ready: some zones have never loaded\n"
        if path == "/status":
            return 200, "application/json", json.dumps(self.status(), indent=1).encode() + b"\n"
        return 404, "text/plain", b"not found\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request.decode("latin-1").split()
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                pass  # headers are not needed
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                code, kind, body = 405, "text/plain", b"only GET\n"
            else:
                code, kind, body = self.route(parts[1])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(code, "Error")
            head = (
                f"HTTP/1.0 {code} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (body if parts and parts[0] == "GET" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError) as exc:
            log.debug("metrics connection dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
