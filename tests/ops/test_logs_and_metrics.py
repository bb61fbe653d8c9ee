"""Issue 12, defects 7 and 8 against a live `authd serve`: one log line per event with
time, level and (under systemd) its syslog priority; no series of a removed zone."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests.ops.conftest import LiveServer, start_server, stop_server

# <priority>time level logger: message
LINE = re.compile(r"<[0-7]>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warning|error) \S+: ")
BROKEN = '\n[[zone]]\nname = "x.test"\nprimaries = ["none"]\n'


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_every_line_is_one_event_with_time_level_and_priority(tmp_path: Path) -> None:
    server = start_server(tmp_path / "journal", journal=True)
    try:
        original = server.config.read_text()
        server.config.write_text(original + BROKEN)
        server.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "not reloaded" in server.stderr())
        result = server.authd("reload")
        assert result.returncode == 1 and "no [[remote]]" in result.stderr
        assert wait_for(lambda: server.stderr().count("not reloaded") == 2)
        server.config.write_text(original)
    finally:
        stop_server(server)
    lines = server.stderr().splitlines()
    assert lines and all(LINE.match(line) for line in lines), "\n".join(
        line for line in lines if not LINE.match(line)
    )
    refused = [line for line in lines if "not reloaded" in line]
    assert len(refused) == 2  # the SIGHUP and the control socket, once each
    assert all(line.startswith("<3>") and "no [[remote]] with id" in line for line in refused)
    assert any(re.search(r"\(UDP and TCP, 1 worker\)$", line) for line in lines)
    assert any("authd ready: 1 zone," in line for line in lines)


def zone_series(server: LiveServer, zone: str) -> list[str]:
    code, text = server.get("/metrics")
    assert code == 200
    return [line for line in text.splitlines() if f'zone="{zone}"' in line]


def test_series_of_a_removed_zone_disappear(live_server: LiveServer) -> None:
    (live_server.directory / "zones" / "two.test.zone").write_text(
        "$ORIGIN two.test.\n$TTL 300\n"
        "@ IN SOA ns.two.test. admin.two.test. 7 3600 900 86400 300\n"
        "@ IN NS ns.two.test.\nns IN A 192.0.2.7\n"
    )
    original = live_server.config.read_text()
    live_server.config.write_text(
        original + '\n[[zone]]\nname = "two.test"\nfile = "zones/two.test.zone"\n'
    )
    assert live_server.authd("reload").returncode == 0
    reply = dns.query.udp(
        dns.message.make_query("two.test", "SOA"), "127.0.0.1", port=live_server.port, timeout=3
    )
    assert reply.rcode() == dns.rcode.NOERROR
    assert wait_for(
        lambda: any(
            line.startswith("authd_zone_queries_total")
            for line in zone_series(live_server, "two.test")
        )
    )
    live_server.config.write_text(original)
    assert live_server.authd("reload").returncode == 0
    assert zone_series(live_server, "two.test") == []
    assert zone_series(live_server, "example.test")  # the other zone keeps its series


def test_status_has_the_validity_horizon_keys(live_server: LiveServer) -> None:
    """An unsigned file zone: nothing limits its copy (no RRSIG, no expire)."""
    result = live_server.authd("zone", "status", "--json")
    assert result.returncode == 0, result.stderr
    [status] = json.loads(result.stdout)
    assert status["valid_until"] is None and status["signatures_valid_until"] is None
