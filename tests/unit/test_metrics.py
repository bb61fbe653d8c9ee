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
    stats.soa_checks[("example.test", "provider", "timeout")] += 3
    stats.soa_checks[("example.test", "provider", "ok")] += 1
    stats.remote_last_success["provider"] = 1500.0
    stats.remote_last_failure["provider"] = 1550.0
    stats.tsig_failures["BADTIME"] += 1
    facts = [
        ZoneFacts("example.test", "expired", 7, 9, 1000.0, 1500.0, 2000.0),
        ZoneFacts("never.test", "never-loaded", None, None, None, None, None),
    ]
    ready = {"value": False}
    collector = AuthdCollector(
        stats,
        lambda: facts,
        lambda: {
            "queries.udp": 3,
            "rcode.NOERROR": 2,
            "tcp.open_connections": 4,
            "udp.sent": 9,
            "ede.20": 5,
            "cookie.bad": 6,
        },
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
        check = (("remote", "provider"), ("result", "timeout"), ("zone", "example.test"))
        assert samples[("authd_xfr_soa_checks_total", check)] == 3
        remote = (("remote", "provider"),)
        assert samples[("authd_remote_last_success_timestamp_seconds", remote)] == 1500
        assert samples[("authd_remote_last_failure_timestamp_seconds", remote)] == 1550
        assert samples[("authd_xfr_tsig_failures_total", (("reason", "BADTIME"),))] == 1
        assert samples[("authd_queries_total", (("transport", "udp"),))] == 3
        assert samples[("authd_responses_total", (("rcode", "NOERROR"),))] == 2
        assert samples[("authd_udp_events_total", (("event", "sent"),))] == 9
        assert samples[("authd_tcp_open_connections", ())] == 4
        assert samples[("authd_responses_ede_total", (("code", "20"),))] == 5
        assert samples[("authd_cookies_total", (("result", "bad"),))] == 6
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


def _scrape(collector: AuthdCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    return _samples(generate_latest(make_registry(collector)).decode())


def test_series_of_a_removed_zone_disappear() -> None:
    """Issue 12: after `authd reload` removed two.test, its series stayed."""
    stats = ControlPlaneStats()
    stats.transfers[("two.test", "AXFR", "updated")] += 1
    stats.notifies[("two.test", "accepted")] += 1
    stats.rejections[("one.test", "rrsig-invalid")] += 1
    stats.tsig_failures["BADSIG"] += 1
    zones = [
        ZoneFacts("one.test", "ok", 1, None, 0.0, None, None),
        ZoneFacts("two.test", "ok", 2, None, 0.0, None, None),
    ]
    workers = {"zone.one.test": 5, "zone.two.test": 7, "queries.udp": 12}
    collector = AuthdCollector(stats, lambda: zones, lambda: workers, now=lambda: 10.0)
    two = (("zone", "two.test"),)
    before = _scrape(collector)
    assert before[("authd_zone_queries_total", two)] == 7
    assert before[("authd_xfr_notifies_total", (("result", "accepted"), *two))] == 1

    zones.pop()  # the reload removed two.test
    after = _scrape(collector)
    assert not [key for key in after if ("zone", "two.test") in key[1]]
    assert after[("authd_zone_queries_total", (("zone", "one.test"),))] == 5
    assert after[("authd_queries_total", (("transport", "udp"),))] == 12
    assert after[("authd_xfr_tsig_failures_total", (("reason", "BADSIG"),))] == 1
    key = (("reason", "rrsig-invalid"), ("zone", "one.test"))
    assert after[("authd_zone_rejections_total", key)] == 1


def test_validity_horizon_gauges() -> None:
    """Issue 13: valid_until = min(expire deadline if servfail on expire, earliest RRSIG)."""
    facts = [
        # signed, serve-stale: the expire deadline does not limit
        ZoneFacts("stale.test", "ok", 1, 1, 0.0, 5000.0, 9000.0),
        # signed, servfail on expire: the earlier of the two
        ZoneFacts("strict.test", "ok", 1, 1, 0.0, 5000.0, 9000.0, servfail_on_expire=True),
        # unsigned, servfail: the expire deadline alone
        ZoneFacts("plain.test", "ok", 1, 1, 0.0, 5000.0, None, servfail_on_expire=True),
        # unsigned, serve-stale: nothing limits; never loaded: nothing served
        ZoneFacts("free.test", "ok", 1, 1, 0.0, 5000.0, None),
        ZoneFacts("new.test", "never-loaded", None, None, None, None, None, None, True),
    ]
    collector = AuthdCollector(ControlPlaneStats(), lambda: facts, dict, now=lambda: 10.0)
    samples = _scrape(collector)
    valid = {
        dict(labels)["zone"]: value
        for (name, labels), value in samples.items()
        if name == "authd_zone_valid_until_timestamp_seconds"
    }
    signatures = {
        dict(labels)["zone"]: value
        for (name, labels), value in samples.items()
        if name == "authd_zone_signatures_valid_until_timestamp_seconds"
    }
    assert valid == {"stale.test": 9000.0, "strict.test": 5000.0, "plain.test": 5000.0}
    assert signatures == {"stale.test": 9000.0, "strict.test": 9000.0}


def test_drift_and_delegation_series() -> None:
    """The periodic checks' series: a peer's serial and check time, ahead-since only while
    ahead, 1 for current drift kinds and 0 for the others, delegation findings counted by
    kind; zones not configured (a reload removed them) have none."""
    from authd.assure import watch as w
    from authd.zone.delegation import DelegationFinding
    from authd.zone.drift import DriftFinding

    ahead = w.peers_checked(
        w.Watch(), [("192.0.2.53@53", 9, [DriftFinding("serial-ahead", "9 > 8")])], 500.0
    )
    agreed = w.peers_checked(w.Watch(), [("192.0.2.53@53", 8, [])], 400.0)
    agreed = w.delegation_checked(
        agreed,
        [DelegationFinding("glue-differs", "a"), DelegationFinding("glue-differs", "b")],
        400.0,
        "parent 192.0.2.1@53",
    )
    facts = [
        ZoneFacts("stuck.test", "ok", 8, 9, 0.0, None, None, 3600, retry_interval=600),
        ZoneFacts("fine.test", "ok", 8, 8, 0.0, None, None, 3600, retry_interval=600),
    ]
    watches = [("stuck.test", ahead), ("fine.test", agreed), ("gone.test", ahead)]
    collector = AuthdCollector(
        ControlPlaneStats(), lambda: facts, dict, now=lambda: 1000.0, watches=lambda: watches
    )
    samples = _scrape(collector)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    stuck = {"zone": "stuck.test", "peer": "192.0.2.53@53"}
    fine = {"zone": "fine.test", "peer": "192.0.2.53@53"}
    assert value("authd_peer_serial", **stuck) == 9 and value("authd_peer_serial", **fine) == 8
    assert value("authd_peer_ahead_since_timestamp_seconds", **stuck) == 500.0
    assert value("authd_peer_ahead_since_timestamp_seconds", **fine) is None
    assert value("authd_peer_last_checked_timestamp_seconds", **fine) == 400.0
    assert value("authd_zone_drift", kind="serial-ahead", **stuck) == 1
    assert value("authd_zone_drift", kind="unreachable", **stuck) == 0
    assert value("authd_zone_drift", kind="serial-ahead", **fine) == 0
    assert value("authd_zone_delegation_findings", zone="fine.test", kind="glue-differs") == 2
    assert value("authd_zone_delegation_findings", zone="fine.test", kind="ds-mismatch") == 0
    assert value("authd_zone_delegation_findings", zone="stuck.test", kind="ds-mismatch") is None
    assert value("authd_zone_retry_interval_seconds", zone="stuck.test") == 600
    assert not any(dict(labels).get("zone") == "gone.test" for _, labels in samples)
