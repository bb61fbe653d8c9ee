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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger("authd.metrics")


@dataclass
class ControlPlaneStats:
    """Event counters of the main process (transfers, NOTIFY, rejections)."""

    transfers: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # zone,type,result
    transfer_seconds: Counter[str] = field(default_factory=Counter)  # zone -> sum of durations
    transfer_bytes: Counter[str] = field(default_factory=Counter)  # zone -> bytes received
    transfer_records: Counter[str] = field(default_factory=Counter)
    notifies: Counter[tuple[str, str]] = field(default_factory=Counter)  # zone,result
    rejections: Counter[tuple[str, str]] = field(default_factory=Counter)  # zone,reason
    tsig_failures: Counter[str] = field(default_factory=Counter)  # reason
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


ZONE_STATES = ("ok", "refreshing", "expired", "never-loaded")


def sum_worker_counters(
    per_worker: Iterable[Mapping[str, Mapping[str, int]]],
) -> dict[str, Counter[str]]:
    """Add up the counters every worker last reported: name -> label key -> total."""
    total: dict[str, Counter[str]] = {}
    for counters in per_worker:
        for name, values in counters.items():
            total.setdefault(name, Counter()).update(values)
    return total


# Worker counter name -> (metric name, help, label names). A worker reports label
# values joined by "|" in the key (e.g. "A|NOERROR|udp"), which keeps its messages small.
WORKER_METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "queries": ("authd_queries_total", "Queries answered.", ("qtype", "rcode", "transport")),
    "truncated": ("authd_responses_truncated_total", "UDP responses sent with TC=1.", ()),
    "dropped": ("authd_queries_dropped_total", "Queries with no reply (unparsable).", ()),
    "tcp_accepted": ("authd_tcp_connections_accepted_total", "TCP connections accepted.", ()),
    "tcp_refused": ("authd_tcp_connections_refused_total", "TCP connections refused.", ()),
    "tcp_closed_idle": ("authd_tcp_connections_idle_closed_total", "Idle TCP closed.", ()),
    "udp_send_errors": ("authd_udp_send_errors_total", "UDP responses not sent.", ()),
    "rrl_limited": ("authd_rrl_limited_total", "Responses held back by RRL.", ()),
    "rrl_slipped": ("authd_rrl_slipped_total", "RRL responses sent truncated.", ()),
}


class AuthdCollector:
    """A prometheus_client collector over the live state of the daemon."""

    def __init__(
        self,
        stats: ControlPlaneStats,
        zone_facts: Callable[[], Iterable[ZoneFacts]],
        worker_counters: Callable[[], dict[str, Counter[str]]],
        now: Callable[[], float],
    ) -> None:
        self.stats = stats
        self.zone_facts = zone_facts
        self.worker_counters = worker_counters
        self.now = now

    def collect(self) -> Iterator[Metric]:
        yield from self._zone_metrics()
        yield from self._control_plane_metrics()
        yield from self._worker_metrics()

    def _zone_metrics(self) -> Iterator[Metric]:
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
        horizon = GaugeMetricFamily(
            "authd_zone_signature_horizon_seconds",
            "Seconds until the earliest RRSIG in the served version expires.",
            labels=["zone"],
        )
        for facts in self.zone_facts():
            zone = facts.zone
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
        yield from (serial, primary, age, expires, expired, state, horizon)

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
            "authd_zone_rejections_total",
            "Candidate versions rejected by checks, by reason.",
            ["zone", "reason"],
            {key: value for key, value in stats.rejections.items()},
        )
        yield _counter(
            "authd_xfr_tsig_failures_total",
            "TSIG verification failures by reason.",
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
        totals = self.worker_counters()
        for name, (metric, help_text, labels) in WORKER_METRICS.items():
            values = totals.get(name, Counter())
            yield _counter(
                metric,
                help_text,
                list(labels),
                {tuple(key.split("|")) if labels else (): v for key, v in values.items()},
            )


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
