"""Short runs against real servers: the built-in generator against knotd (2 s), nsd (1 s).

Skipped when the server is missing; AUTHD_REQUIRE_INTEROP=1 turns the skip into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.bench import cpu, loadgen, mix, peers, zonegen
from tests.support.system import require_binary

pytestmark = pytest.mark.slow  # real knotd and NSD runs

ORIGIN = zonegen.DEFAULT_ORIGIN


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zonegen.write_zone(tmp_path_factory.mktemp("zone") / "bench.zone", ORIGIN, 200)


def _packets(inventory: mix.ZoneInventory, spec: mix.MixSpec, count: int) -> list[loadgen.Prepared]:
    return loadgen.prepare(mix.generate(inventory, spec, count))


def _cores() -> tuple[set[int], set[int]]:
    allowed = sorted(os.sched_getaffinity(0))
    return {allowed[-1]}, {allowed[0]}


@pytest.fixture
def knot(zone: Path, tmp_path: Path) -> Iterator[peers.RunningServer]:
    require_binary("knotd")
    server_cpus, _ = _cores()
    settings = peers.PeerSettings(
        ORIGIN, zone, "127.0.0.1", peers.free_port("127.0.0.1"), 1, tmp_path
    )
    server = peers.start("knot", settings, server_cpus)
    try:
        yield server
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_builtin_generator_against_knot(knot: peers.RunningServer, zone: Path) -> None:
    server_cpus, client_cpus = _cores()
    # Knot re-pins its UDP workers at start: every thread must be back on the server's core.
    assert peers.tree_affinity(knot.pid) == server_cpus
    queries = _packets(mix.inventory_from_file(zone), mix.PRESETS["mixed"].spec, 5000)
    before = cpu.tree_cpu_seconds(knot.pid)
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, client_cpus)
    try:
        result = loadgen.run_sync(queries, loadgen.GeneratorSettings("127.0.0.1", knot.port, 2.0))
    finally:
        os.sched_setaffinity(0, previous)
    used = cpu.tree_cpu_seconds(knot.pid) - before
    assert result.completed > 1000
    assert result.mismatched == 0
    assert result.lost <= result.sent * 0.01
    # The mix's kinds come back as the rcodes they should: ~20% NXDOMAIN, the rest NOERROR.
    share = result.rcodes.get("NXDOMAIN", 0) / result.completed
    assert 0.15 < share < 0.25
    assert set(result.rcodes) == {"NOERROR", "NXDOMAIN"}
    assert used > 0

    paced = loadgen.run_sync(
        queries, loadgen.GeneratorSettings("127.0.0.1", knot.port, 1.0, rate=2000.0)
    )
    assert paced.held_rate
    assert 1800 <= paced.sent <= 2100
    assert len(paced.latencies_ms) == paced.completed
    assert paced.p50_ms is not None and 0 < paced.p50_ms < 50


def test_tcp_pipelining_against_knot(knot: peers.RunningServer, zone: Path) -> None:
    queries = _packets(mix.inventory_from_file(zone), mix.PRESETS["tcp"].spec, 500)
    result = loadgen.run_sync(queries, loadgen.GeneratorSettings("127.0.0.1", knot.port, 0.5))
    assert result.completed > 100
    assert result.lost == 0 and result.mismatched == 0
    assert result.rcodes == {"NOERROR": result.completed}


def test_nsd_starts_answers_and_stops(zone: Path, tmp_path: Path) -> None:
    require_binary("nsd")
    server_cpus, _ = _cores()
    settings = peers.PeerSettings(
        ORIGIN, zone, "127.0.0.1", peers.free_port("127.0.0.1"), 1, tmp_path
    )
    server = peers.start("nsd", settings, server_cpus)
    try:
        pids = cpu.tree_pids(server.pid)
        assert len(pids) >= 2  # NSD forks xfrd and its server process
        assert peers.tree_affinity(server.pid) == server_cpus
        queries = _packets(mix.inventory_from_file(zone), mix.PRESETS["hits"].spec, 1000)
        result = loadgen.run_sync(queries, loadgen.GeneratorSettings("127.0.0.1", server.port, 1.0))
        # rrl-ratelimit: 0 in the generated config: nothing is dropped or truncated.
        assert result.lost == 0 and result.truncated == 0
        assert result.completed > 500
    finally:
        server.stop()
    assert not any(cpu.alive(pid) for pid in pids)
