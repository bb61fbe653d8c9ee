"""`authd bench zones`: the zone generator, the three secondaries' configs, the reply parser,
the paced SOA sampling against an in-process responder, the report, and a short real run."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import dns.zone
import pytest

from authd.bench import mix, peers
from authd.bench import zones as bench_zones
from authd.bench import zones_config as zc
from authd.bench import zones_probe as probe
from authd.bench import zones_report as report
from authd.bench.zones_procs import parse_query_types
from authd.config import load_config
from tests.conftest import require_binary

HOST = "127.0.0.1"


# --- zones ----------------------------------------------------------------------------------


def test_zone_names_are_numbered_and_distinct() -> None:
    names = zc.zone_names(3, start=998)
    assert names == ["z000998.zones.test", "z000999.zones.test", "z001000.zones.test"]
    assert len(set(zc.zone_names(10_000))) == 10_000
    with pytest.raises(ValueError):
        zc.zone_names(-1)


def test_zone_has_thirty_records_and_the_serial() -> None:
    zone = dns.zone.from_text(zc.zone_text("z000042.zones.test", 7), relativize=False)
    records = sum(len(rdataset) for _, rdataset in zone.iterate_rdatasets())
    assert records == 30
    soa = zone.get_soa()
    assert soa.serial == 7
    assert (soa.refresh, soa.retry, soa.expire) == (zc.REFRESH, zc.RETRY, zc.EXPIRE)


def test_zones_differ_in_their_data() -> None:
    assert zc.zone_text("z000001.zones.test", 1) != zc.zone_text("z000002.zones.test", 1)


def test_inventory_matches_what_mix_derives_from_the_parsed_zone() -> None:
    zone = "z000123.zones.test"
    built = zc.inventory(zone)
    parsed = mix.inventory_from_text(zc.zone_text(zone, 1))
    assert built.origin == parsed.origin
    assert sorted(built.hits) == sorted(parsed.hits)
    assert sorted(built.nodata) == sorted(parsed.nodata)
    assert not built.wildcard_parents and not built.apex_wildcard


def test_write_zones_writes_one_file_per_zone(tmp_path: Path) -> None:
    names = zc.zone_names(4)
    zc.write_zones(tmp_path, names, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{n}.zone" for n in names]
    assert " 3 7200 " in zc.zone_file(tmp_path, names[2]).read_text()


def test_zone_mix_spreads_queries_over_every_zone_in_the_mixed_proportions() -> None:
    names = zc.zone_names(50)
    queries = bench_zones.zone_mix(names, 5000)
    assert len(queries) == 5000
    zones_asked = Counter(re.search(r"(z\d{6}\.zones\.test)\.$", q.name).group(1) for q in queries)  # type: ignore[union-attr]
    assert zones_asked == dict.fromkeys(names, 100)
    kinds = Counter(q.kind for q in queries)
    assert kinds == {"hits": 3500, "nxdomain": 1000, "nodata": 500}
    assert bench_zones.zone_mix(names, 5000) == queries  # deterministic
    assert len(bench_zones.zone_mix(names, 10)) == 50  # at least one per zone


# --- configs --------------------------------------------------------------------------------


def _settings(tmp_path: Path) -> zc.SecondarySettings:
    return zc.SecondarySettings(tmp_path, zc.Address(HOST, 5301), zc.Address(HOST, 5399), workers=2)


def test_authd_config_is_valid_and_names_every_zone(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    names = zc.zone_names(25)
    (tmp_path / "xfr.key").write_text(zc.authd_key_file())
    conf = tmp_path / "authd.toml"
    conf.write_text(zc.secondary_config("authd", settings, names))
    config = load_config(conf)
    assert sorted(z.name.rstrip(".") for z in config.zones) == names
    assert config.server.workers == 2
    (remote,) = config.remotes
    assert remote.key is not None and remote.key.name == "xfr-key."
    assert "127.0.0.1@5399" in zc.secondary_config("authd", settings, names)


def test_knot_secondary_config_is_accepted_by_knotc(tmp_path: Path) -> None:
    names = zc.zone_names(12)
    text = zc.secondary_config("knot", _settings(tmp_path), names)
    assert text.count("  - domain: z") == 12
    assert "address: 127.0.0.1@5399" in text and "action: notify" in text
    assert "journal-content: all" in text  # stored copies to restart from
    knotc = require_binary("knotc")
    conf = tmp_path / "knot.conf"
    conf.write_text(text)
    done = subprocess.run(
        [knotc, "-c", str(conf), "conf-check"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_knot_primary_config_is_accepted_by_knotc(tmp_path: Path) -> None:
    names = zc.zone_names(5)
    text = zc.knot_primary_config(
        tmp_path, zc.Address(HOST, 5399), tmp_path / "zones", names, zc.Address(HOST, 5301)
    )
    assert "global-module: mod-stats/default" in text and "notify: secondary" in text
    assert text.count("  - domain: z") == 5
    knotc = require_binary("knotc")
    conf = tmp_path / "knot.conf"
    conf.write_text(text)
    done = subprocess.run(
        [knotc, "-c", str(conf), "conf-check"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_nsd_config_is_accepted_by_nsd_checkconf(tmp_path: Path) -> None:
    names = zc.zone_names(7)
    text = zc.secondary_config("nsd", _settings(tmp_path), names)
    assert "request-xfr: 127.0.0.1@5399 xfr-key" in text
    assert "allow-notify: 127.0.0.1 xfr-key" in text
    assert text.count("include-pattern: secondary") == 7
    checkconf = require_binary("nsd-checkconf")
    conf = tmp_path / "nsd.conf"
    conf.write_text(text)
    done = subprocess.run([checkconf, str(conf)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_commands_per_server(tmp_path: Path) -> None:
    conf = tmp_path / "c"
    assert zc.serve_command("nsd", "nsd", conf) == ["nsd", "-d", "-c", str(conf)]
    assert zc.reload_command("authd", "authd", conf) == ["authd", "reload", "-c", str(conf)]
    assert zc.reload_command("knot", "knotc", conf) == ["knotc", "-c", str(conf), "reload"]
    assert zc.reload_command("nsd", "nsd-control", conf)[-1] == "reconfig"
    with pytest.raises(ValueError, match="unknown server"):
        zc.secondary_config("bind", _settings(tmp_path), [])


def test_plan_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="count"):
        bench_zones.Plan(0, ("authd",), tmp_path)
    with pytest.raises(ValueError, match="unknown servers"):
        bench_zones.Plan(10, ("bind",), tmp_path)
    with pytest.raises(ValueError, match="unknown phases"):
        bench_zones.Plan(10, ("authd",), tmp_path, skip=frozenset({"load"}))
    with pytest.raises(ValueError, match="timeout"):
        bench_zones.Plan(10, ("authd",), tmp_path, timeout=0)


def test_query_types_from_knotc_stats() -> None:
    text = (  # what knotc 3.2 prints: transfers are operations, not query types
        "server.zone-count = 3\nmod-stats.server-operation[query] = 50\n"
        "mod-stats.server-operation[axfr] = 3\nmod-stats.server-operation[ixfr] = 2\n"
        "mod-stats.query-type[SOA] = 41\nmod-stats.query-type[A] = 9\n"
    )
    assert parse_query_types(text) == {"SOA": 41, "A": 9, "AXFR": 3, "IXFR": 2}


# --- replies --------------------------------------------------------------------------------


def _soa_reply(name: str, serial: int, rcode: int = 0, aa: bool = True) -> bytes:
    query = dns.message.make_query(name, "SOA")
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    if aa:
        response.flags |= dns.flags.AA
    if rcode == 0:
        rdata = f"ns1.{name} hostmaster.{name} {serial} 7200 900 1209600 300"
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "SOA", rdata))
    response.id = 4242
    return response.to_wire()


def test_parse_reply_reads_the_serial_through_name_compression() -> None:
    reply = probe.parse_reply(_soa_reply("z000001.zones.test.", 2026120801))
    assert reply is not None
    assert (reply.id, reply.rcode, reply.aa, reply.serial) == (4242, 0, True, 2026120801)
    assert reply.question == probe.question("Z000001.zones.test").question
    assert probe.serves_serial(2026120801)(reply) and probe.serves_any(reply)
    assert not probe.serves_serial(1)(reply) and not probe.not_served(reply)


def test_parse_reply_refused_and_non_authoritative() -> None:
    refused = probe.parse_reply(_soa_reply("z1.zones.test.", 0, rcode=5))
    assert refused is not None and refused.serial is None and refused.rcode == 5
    assert probe.not_served(refused) and not probe.serves_any(refused)
    stale = probe.parse_reply(_soa_reply("z1.zones.test.", 3, aa=False))
    assert stale is not None and probe.not_served(stale) and not probe.serves_serial(3)(stale)


def test_parse_reply_rejects_queries_and_garbage() -> None:
    query = dns.message.make_query("z1.zones.test.", "SOA").to_wire()
    assert probe.parse_reply(query) is None  # QR clear
    wire = _soa_reply("z1.zones.test.", 1)
    assert probe.parse_reply(wire[:11]) is None
    assert probe.parse_reply(wire[:20]) is None  # the question is cut
    truncated = probe.parse_reply(wire[:-3])  # the SOA rdata is cut: no serial, no crash
    assert truncated is None or truncated.serial is None


# --- sampling against an in-process responder -------------------------------------------------


class _Responder(asyncio.DatagramProtocol):
    """Answers SOA for the zones in `serials` (AA, that serial), REFUSED for the rest."""

    def __init__(self, serials: dict[str, int]) -> None:
        self.serials = serials
        self.queries = 0
        self.asked: Counter[str] = Counter()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text().rstrip(".")
        self.asked[name] += 1
        response = dns.message.make_response(query)
        if name in self.serials:
            response.flags |= dns.flags.AA
            rdata = f"ns1.{name}. h.{name}. {self.serials[name]} 7200 900 1209600 300"
            response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "SOA", rdata))
        else:
            response.set_rcode(dns.rcode.REFUSED)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
def port() -> Iterator[int]:
    yield peers.free_port(HOST)


async def _serve(port: int, serials: dict[str, int]) -> tuple[asyncio.BaseTransport, _Responder]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Responder(serials), local_addr=(HOST, port)
    )
    return transport, protocol


async def test_wait_until_every_zone_passes(port: int) -> None:
    names = zc.zone_names(300)
    transport, responder = await _serve(port, dict.fromkeys(names, 5))
    try:
        result = await probe.wait_until(HOST, port, names, probe.serves_serial(5), 30.0)
    finally:
        transport.close()
    assert result.complete and not result.timed_out and result.passed == 300
    # One pass: each zone asked once (twice if an answer came later than the query timeout).
    assert 300 <= result.queries <= 600 and responder.queries <= result.queries


async def test_wait_until_reports_how_many_passed_when_it_times_out(port: int) -> None:
    names = zc.zone_names(40)
    serials = {name: (2 if i < 30 else 1) for i, name in enumerate(names[:35])}
    transport, responder = await _serve(port, serials)
    try:
        result = await probe.wait_until(HOST, port, names, probe.serves_serial(2), 1.0)
    finally:
        transport.close()
    assert result.timed_out and not result.complete
    assert (result.passed, result.total) == (30, 40)
    assert result.missing == tuple(names[30:35])
    assert report.wait_cell(result).startswith("timed out: 30 of 40 served after")
    # A zone that passed is not asked again; the others are, again and again, until the end.
    assert max(responder.asked[name] for name in names[:30]) <= 2
    assert min(responder.asked[name] for name in names[30:35]) >= 5


async def test_wait_until_stops_when_the_server_is_gone(port: int) -> None:
    result = await probe.wait_until(
        HOST, port, zc.zone_names(3), probe.serves_any, 30.0, alive=lambda: False
    )
    assert result.stopped == "server exited" and result.passed == 0


async def test_query_loop_counts_ok_bad_and_lost(port: int) -> None:
    names = zc.zone_names(4)
    transport, _ = await _serve(port, {names[0]: 1, names[1]: 1})
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(probe.query_loop(HOST, port, names, 400.0, stop))
        await asyncio.sleep(0.3)
        stop.set()
        served = await task
    finally:
        transport.close()
    assert served.sent > 0 and served.lost == 0
    assert served.ok + served.bad == served.sent
    assert abs(served.ok - served.bad) <= 2  # two zones answered, two refused, round-robin
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((HOST, 0))  # bound, never answers: every query is lost
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(
            probe.query_loop(HOST, silent.getsockname()[1], names, 200.0, stop)
        )
        await asyncio.sleep(0.1)
        stop.set()
        lost = await task
    finally:
        silent.close()
    assert lost.sent > 0 and lost.lost == lost.sent and lost.ok == 0


# --- report ---------------------------------------------------------------------------------


def _wait(total: int, passed: int, seconds: float) -> probe.WaitResult:
    return probe.WaitResult(total, passed, seconds, passed < total, passed)


def _result(server: str, load: float, passed: int = 1000) -> report.ServerResult:
    r = report.ServerResult(server, 1000)
    r.load = _wait(1000, passed, load)
    r.load_cpu_seconds = load / 2
    r.idle_cpu_seconds = 0.5
    r.pss_bytes = 1000 * 10 * 1024
    r.qps_per_cpu_second = 100_000.0 if server == "knot" else 50_000.0
    r.qps = 40_000.0
    return r


def test_table_has_a_column_per_server_and_ratios_to_knot() -> None:
    results = [_result("authd", 10.0), _result("knot", 2.0), _result("nsd", 4.0)]
    text = report.table(results, 60.0, 100)
    header = text.splitlines()[0]
    assert header == "|  | authd | knot | nsd | authd/knot | nsd/knot |"
    load = next(line for line in text.splitlines() if line.startswith("| first load"))
    assert "| 10.00 s, 5.00 CPU-s |" in load and load.endswith("| 5.00x | 2.00x |")
    qps = next(line for line in text.splitlines() if line.startswith("| qps per"))
    assert qps.endswith("| 0.50x | 0.50x |")
    memory = next(line for line in text.splitlines() if line.startswith("| memory"))
    assert "10.0 KiB/zone" in memory and memory.endswith("| 1.00x | 1.00x |")


def test_queries_the_primary_received_per_phase() -> None:
    r = _result("authd", 1.0)
    r.primary_queries = {"load": {"SOA": 1200, "AXFR": 1000}, "restart": {"SOA": 3, "IXFR": 1}}
    assert report.primary_queries_cell(r) == "load 1,200 SOA / 1,000 XFR; restart 3 SOA / 1 XFR"
    assert report.primary_queries_cell(_result("knot", 1.0)) == "-"


def test_an_unfinished_phase_has_no_ratio_and_says_how_far_it_got() -> None:
    results = [_result("authd", 600.0, passed=332), _result("knot", 6.5)]
    results[0].skipped["storm"] = "first load incomplete (332 of 1000)"
    text = report.table(results, 60.0, None)
    load = next(line for line in text.splitlines() if line.startswith("| first load"))
    assert "timed out: 332 of 1,000 served after 600 s" in load
    assert load.endswith("| - |")
    assert "note: authd: storm skipped: first load incomplete (332 of 1000)" in text


def test_json_carries_every_figure_and_the_ratios() -> None:
    results = [_result("authd", 10.0), _result("knot", 2.0)]
    document = json.loads(report.as_json(results, {"idle_seconds": 60, "add": 100}, {}, "cmd"))
    assert document["command"] == "cmd"
    assert [s["server"] for s in document["servers"]] == ["authd", "knot"]
    assert document["servers"][0]["load"]["passed"] == 1000
    assert document["servers"][0]["pss_per_zone"] == 10 * 1024
    ratios = document["ratios"]["authd/knot"]
    assert ratios["first load of all zones (AXFR)"] == 5.0
    assert ratios["qps per server CPU-second, mix over all zones"] == 0.5


# --- a real, short run ----------------------------------------------------------------------


@pytest.mark.slow
def test_short_run_against_authd(tmp_path: Path) -> None:
    """20 zones, authd as the secondary of a real knotd: every phase ends with a figure."""
    require_binary("knotd")
    require_binary("knotc")
    plan = bench_zones.Plan(
        count=20,
        servers=("authd",),
        workdir=tmp_path,
        idle_seconds=1.0,
        timeout=60.0,
        add=5,
        qps_seconds=1.0,
        queries=2000,
        restart_window=2.0,
        grace=5.0,
        settle=0.2,
    )
    (result,) = bench_zones.run(plan, lambda _: None)
    assert result.load is not None and result.load.complete, result.notes
    assert result.load_cpu_seconds is not None and result.load_cpu_seconds > 0
    assert result.idle_cpu_seconds is not None and result.pss_bytes
    assert result.qps_per_cpu_second is not None and result.qps_per_cpu_second > 0
    assert result.storm is not None and result.storm.complete
    assert result.add is not None and result.add.wait.complete and result.add.reload_ok
    assert result.remove is not None and result.remove.wait.complete
    assert result.add.others.sent > 0
    assert result.restart_soa_queries is not None and result.restart_soa_queries >= 0
    # The primary's counters saw the first load: a transfer per zone at least.
    load = result.primary_queries["load"]
    assert load.get("AXFR", 0) + load.get("IXFR", 0) >= 20, load
    assert result.restart_down is not None and result.restart_down.complete
    assert len(result.stops) == 3
    text = report.table([result], 1.0, 5)
    assert "| authd |" in text.splitlines()[0]
