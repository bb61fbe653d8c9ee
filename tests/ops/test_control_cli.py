"""The control commands of the `authd` CLI against a live `authd serve` subprocess."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest

from tests.ops.conftest import VENV_BIN, LiveServer

EXAMPLE_SERIAL = 2026112201


def query(server: LiveServer, name: str, rdtype: str) -> dns.message.Message:
    request = dns.message.make_query(name, rdtype)
    return dns.query.udp(request, "127.0.0.1", port=server.port, timeout=3)


def served_serial(server: LiveServer, zone: str = "example.test") -> int:
    reply = query(server, zone, "SOA")
    assert reply.rcode() == dns.rcode.NOERROR, reply
    return int(reply.answer[0][0].serial)


def skip_if_not_implemented(result: subprocess.CompletedProcess[str], command: str) -> None:
    """verify and dump arrive with the daemon's side; until then it says so and we skip."""
    if result.returncode == 1 and f"unknown command {command}" in result.stderr:
        pytest.skip(f"this daemon does not implement `{command}` yet")


def test_status_text_shows_each_zone(shared_server: LiveServer) -> None:
    result = shared_server.authd("zone", "status", "-c", "authd.toml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"example.test: OK, serial {EXAMPLE_SERIAL} (file zone)"
    fields = {line.split()[0] for line in lines[1:]}
    assert {"source", "loaded", "records", "last", "rejection"} <= fields
    assert "zones/example.test.zone via file\n" in result.stdout  # the file, as asked
    assert "last error    none" in result.stdout


def test_status_json_is_the_daemon_list(shared_server: LiveServer) -> None:
    result = shared_server.authd("zone", "status", "EXAMPLE.test.", "--json")
    assert result.returncode == 0, result.stderr
    [zone] = json.loads(result.stdout)
    assert (zone["zone"], zone["state"], zone["serial"]) == ("example.test", "ok", EXAMPLE_SERIAL)
    assert zone["kind"] == "file" and zone["records"] > 10
    _, body = shared_server.get("/status")
    assert json.loads(body)["zones"][0]["serial"] == EXAMPLE_SERIAL


def test_unknown_zone_exits_1_with_one_line(shared_server: LiveServer) -> None:
    for command in ("status", "refresh", "retransfer"):
        result = shared_server.authd("zone", command, "nope.test")
        assert result.returncode == 1, (command, result)
        assert result.stdout == ""
        assert "unknown zone nope.test" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_missing_zone_argument_is_a_usage_error(shared_server: LiveServer) -> None:
    result = shared_server.authd("zone", "refresh")
    assert result.returncode == 2 and "Missing argument 'ZONE'" in result.stderr


def test_refresh_of_a_file_zone_serves_the_edited_file(live_server: LiveServer) -> None:
    assert served_serial(live_server) == EXAMPLE_SERIAL
    assert query(live_server, "added.example.test", "A").rcode() == dns.rcode.NXDOMAIN
    text = live_server.zone_file.read_text()
    text = text.replace(str(EXAMPLE_SERIAL), str(EXAMPLE_SERIAL + 1), 1)
    live_server.zone_file.write_text(text + "added IN A 192.0.2.99\n")

    result = live_server.authd("zone", "refresh", "example.test")
    assert result.returncode == 0, result.stderr
    assert "example.test" in result.stdout

    assert served_serial(live_server) == EXAMPLE_SERIAL + 1
    reply = query(live_server, "added.example.test", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rdata.to_text() for rdata in reply.answer[0]] == ["192.0.2.99"]
    status = json.loads(live_server.authd("zone", "status", "--json").stdout)
    assert status[0]["serial"] == EXAMPLE_SERIAL + 1


def test_refresh_with_a_broken_file_keeps_the_old_version(live_server: LiveServer) -> None:
    live_server.zone_file.write_text("$ORIGIN example.test.\n@ IN SOA broken\n")
    result = live_server.authd("zone", "refresh", "example.test")
    assert result.returncode == 1 and result.stderr.startswith("Error: zone example.test:")
    assert served_serial(live_server) == EXAMPLE_SERIAL
    status = json.loads(live_server.authd("zone", "status", "--json").stdout)
    assert status[0]["last_error"]


def test_reload_adds_and_removes_a_zone(live_server: LiveServer) -> None:
    other = live_server.directory / "zones" / "other.test.zone"
    other.write_text(
        "$ORIGIN other.test.\n$TTL 300\n"
        "@ IN SOA ns.other.test. admin.other.test. 7 3600 900 86400 300\n"
        "@ IN NS ns.other.test.\nns IN A 192.0.2.7\n"
    )
    assert query(live_server, "other.test", "SOA").rcode() == dns.rcode.REFUSED
    original = live_server.config.read_text()
    live_server.config.write_text(
        original + '\n[[zone]]\nname = "other.test"\nfile = "zones/other.test.zone"\n'
    )

    result = live_server.authd("reload")
    assert result.returncode == 0, result.stderr
    assert "1 added" in result.stdout
    assert served_serial(live_server, "other.test") == 7
    assert served_serial(live_server) == EXAMPLE_SERIAL
    listed = json.loads(live_server.authd("zone", "status", "--json").stdout)
    assert sorted(zone["zone"] for zone in listed) == ["example.test", "other.test"]

    live_server.config.write_text(original)
    result = live_server.authd("reload", "-c", str(live_server.config))
    assert result.returncode == 0 and "1 removed" in result.stdout
    assert query(live_server, "other.test", "SOA").rcode() == dns.rcode.REFUSED
    assert served_serial(live_server) == EXAMPLE_SERIAL


def test_reload_of_a_broken_config_is_refused_and_serving_goes_on(
    live_server: LiveServer,
) -> None:
    original = live_server.config.read_text()
    # The CLI reads the config too (for the socket path): break only what the daemon checks.
    live_server.config.write_text(original + '\n[[zone]]\nname = "x.test"\nprimaries = ["none"]\n')
    result = live_server.authd("reload")
    assert result.returncode == 1
    assert "no [[remote]] with id" in result.stderr
    assert served_serial(live_server) == EXAMPLE_SERIAL


def test_verify_the_served_version(shared_server: LiveServer) -> None:
    result = shared_server.authd("zone", "verify", "example.test")
    skip_if_not_implemented(result, "verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("example.test")
    assert ": ok (unsigned" in result.stdout.splitlines()[0]


def test_dump_prints_the_served_zone(shared_server: LiveServer, tmp_path: Path) -> None:
    result = shared_server.authd("zone", "dump", "example.test")
    skip_if_not_implemented(result, "dump")
    assert result.returncode == 0, result.stderr
    dumped = dns.zone.from_text(result.stdout, origin="example.test.", relativize=False)
    original = dns.zone.from_file(
        str(shared_server.zone_file), origin="example.test.", relativize=False
    )
    assert dumped == original  # same names, types, TTLs and data
    output = tmp_path / "dump.zone"
    result = shared_server.authd("zone", "dump", "example.test", "-o", str(output))
    assert result.returncode == 0 and result.stdout == ""
    assert dns.zone.from_file(str(output), origin="example.test.", relativize=False) == original


def test_daemon_down_exits_3_with_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "authd.toml"
    config.write_text(
        '[server]\ncontrol-socket = "authd.sock"\n[[zone]]\nname = "a.test"\nfile = "a.zone"\n'
    )
    for args in (["zone", "status"], ["zone", "refresh", "a.test"], ["reload"]):
        result = subprocess.run(
            [str(VENV_BIN / "authd"), *args, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 3, (args, result)
        assert "is the daemon running?" in result.stderr
        assert f"authd serve -c {config}" in result.stderr


def test_each_server_is_separate(server_factory: Callable[[str], LiveServer]) -> None:
    """Two daemons side by side: the CLI reaches the one its -c names."""
    first, second = server_factory("one"), server_factory("two")
    first.zone_file.write_text(first.zone_file.read_text().replace(str(EXAMPLE_SERIAL), "1", 1))
    assert first.authd("zone", "refresh", "example.test").returncode == 0
    assert served_serial(first) == 1 and served_serial(second) == EXAMPLE_SERIAL
    second_status = json.loads(second.authd("zone", "status", "--json").stdout)
    assert second_status[0]["serial"] == EXAMPLE_SERIAL
