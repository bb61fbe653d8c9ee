"""`authd zone drill` against a live `authd serve` with the default config (unsigned
example.test on 127.0.0.1 and ::1): every listening address answers over UDP and TCP."""

from __future__ import annotations

import json

from tests.ops.conftest import LiveServer


def test_drill_asks_every_listening_address(shared_server: LiveServer) -> None:
    result = shared_server.authd("zone", "drill", "example.test", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    drill = json.loads(result.stdout)
    assert drill["ok"] and drill["zone"] == "example.test"
    names = [c["name"] for c in drill["checks"]]
    for host in ("127.0.0.1", "::1"):
        for transport in ("udp", "tcp"):
            for rtype in ("SOA", "NS"):
                name = f"{transport} {host}@{shared_server.port} example.test {rtype}"
                assert name in names, names
    assert names[0] == "verify" and names[-1] == "horizon"
    assert drill["valid_until"] is None  # unsigned, a file zone: nothing limits it
    assert 0 < drill["queries"] <= 96


def test_drill_and_report_of_an_unknown_zone_exit_1(shared_server: LiveServer) -> None:
    for command in ("drill", "report"):
        result = shared_server.authd("zone", command, "nope.test")
        assert result.returncode == 1, result
        assert "unknown zone nope.test" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
