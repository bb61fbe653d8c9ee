"""Metrics exposition and the health endpoints, over a real HTTP connection."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from authd.metrics import (
    AuthdCollector,
    ControlPlaneStats,
    HealthServer,
    ZoneFacts,
    make_registry,
)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_endpoints_expose_live_state() -> None:
    stats = ControlPlaneStats()
    stats.transfers[("example.test", "IXFR", "updated")] += 2
    stats.rejections[("example.test", "rrsig-invalid")] += 1
    facts = [
        ZoneFacts("example.test", "expired", 7, 9, 1000.0, 1500.0, 2000.0),
        ZoneFacts("never.test", "never-loaded", None, None, None, None, None),
    ]
    ready = {"value": False}
    collector = AuthdCollector(
        stats,
        lambda: facts,
        lambda: {"queries.udp": 3, "rcode.NOERROR": 2, "tcp.open_connections": 4, "udp.sent": 9},
        now=lambda: 1600.0,
    )
    server = HealthServer(
        "127.0.0.1", 0, make_registry(collector), lambda: ready["value"], lambda: {"zones": []}
    )
    await server.start()
    try:
        code, body = await _get(server.port, "/metrics")
        assert code == 200
        samples = _samples(body.decode())
        zone = (("zone", "example.test"),)
        assert samples[("authd_zone_serial", zone)] == 7
        assert samples[("authd_zone_primary_serial", zone)] == 9
        assert samples[("authd_zone_refresh_age_seconds", zone)] == 600
        assert samples[("authd_zone_expires_in_seconds", zone)] == -100
        assert samples[("authd_zone_expired", zone)] == 1
        assert samples[("authd_zone_state", (("state", "expired"), ("zone", "example.test")))] == 1
        assert samples[("authd_zone_state", (("state", "ok"), ("zone", "example.test")))] == 0
        assert samples[("authd_zone_signature_horizon_seconds", zone)] == 400
        key = (("result", "updated"), ("type", "IXFR"), ("zone", "example.test"))
        assert samples[("authd_xfr_transfers_total", key)] == 2
        assert samples[("authd_queries_total", (("transport", "udp"),))] == 3
        assert samples[("authd_responses_total", (("rcode", "NOERROR"),))] == 2
        assert samples[("authd_udp_events_total", (("event", "sent"),))] == 9
        assert samples[("authd_tcp_open_connections", ())] == 4
        assert ("authd_zone_serial", (("zone", "never.test"),)) not in samples

        assert (await _get(server.port, "/healthz"))[0] == 200
        assert (await _get(server.port, "/readyz"))[0] == 503
        ready["value"] = True
        assert (await _get(server.port, "/readyz"))[0] == 200
        code, body = await _get(server.port, "/status")
        assert code == 200 and b'"zones"' in body
        assert (await _get(server.port, "/nope"))[0] == 404
    finally:
        await server.stop()
