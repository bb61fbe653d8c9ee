"""Version history, ledger, export and promote with a real knotd primary (issue 14).

knotd commits changes (knotc zone-begin/set/unset/commit, each bumping the serial and sending
NOTIFY); an `authd serve` subprocess is its secondary. The CLI is run as an operator would
(`python -m authd.cli zone ...`), and digests are checked against dnspython's ZONEMD digest
of the zone as knotd serves it over AXFR. Each test starts its own servers on free ports and
stops them by PID. These are the steps of the README's "When the provider pushes a bad
zone" runbook (history, diff, export, promote).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.query
import dns.zone
import dns.zonetypes
import pytest

from authd.bench.primaries import (
    KEY,
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    keyring,
    knot_primary,
    query,
    wait_for,
    write_zone,
)
from authd.bench.servers import HOST
from tests.support.system import free_port, require_binary

ZONE = "hist.test"
pytestmark = [pytest.mark.interop, pytest.mark.slow]


@pytest.fixture
def knot_bins() -> tuple[str, str]:
    return require_binary("knotd"), require_binary("knotc")


@pytest.fixture
def cleanup() -> Iterator[list[KnotPrimary | AuthdSecondary]]:
    started: list[KnotPrimary | AuthdSecondary] = []
    try:
        yield started
    finally:
        for thing in reversed(started):
            thing.stop()


def start_pair(
    tmp_path: Path, bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> tuple[KnotPrimary, AuthdSecondary]:
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1, names=20)
    port = free_port(HOST)
    knot = knot_primary(*bins, tmp_path / "knot", {ZONE: zone_file}, [(HOST, port)])
    cleanup.append(knot)
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(ZONE, [knot.address])], port=port)
    cleanup.append(authd.start())
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 1, 10), authd.log()
    return knot, authd


def cli(authd: AuthdSecondary, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "authd.cli", *args, "-c", str(authd.workdir / "authd.toml")]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def ok(authd: AuthdSecondary, *args: str) -> str:
    done = cli(authd, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def primary_digest(knot: KnotPrimary) -> tuple[int, str]:
    """(serial, ZONEMD SHA-384 digest) of the zone as knotd serves it, by dnspython alone."""
    transfer = dns.query.xfr(
        HOST, ZONE, port=knot.port, keyring=keyring(), keyname=KEY.name, relativize=False
    )
    zone = dns.zone.from_xfr(transfer, relativize=False)
    soa = zone.get_soa()
    digest = zone.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384).digest.hex()
    return int(soa.serial), digest


def commit(knot: KnotPrimary, *changes: tuple[str, ...]) -> None:
    """One knotc transaction: ("set", owner, ttl, type, rdata) or ("unset", owner, type)."""
    knot.control("zone-begin", ZONE)
    for kind, *rest in changes:
        knot.control(f"zone-{kind}", ZONE, *rest)
    knot.control("zone-commit", ZONE)


CHANGES: list[tuple[tuple[str, ...], ...]] = [
    (("set", f"www.{ZONE}.", "300", "A", "192.0.2.80"),),
    (("set", f"www.{ZONE}.", "300", "AAAA", "2001:db8::80"), ("unset", f"h3.{ZONE}.", "A")),
    (("set", f"{ZONE}.", "300", "MX", f"10 mail.{ZONE}."),),
    (("unset", f"h4.{ZONE}.", "A"), ("unset", f"h5.{ZONE}.", "A")),
    (("set", f"txt.{ZONE}.", "60", "TXT", '"five"'),),
]


def test_history_diff_and_ledger_after_five_changes(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    knot, authd = start_pair(tmp_path, knot_bins, cleanup)
    expected = dict([primary_digest(knot)])
    for number, changes in enumerate(CHANGES, start=2):
        commit(knot, *changes)
        assert authd.wait_serial(ZONE, number, 10), authd.log()
        serial, digest = primary_digest(knot)
        assert serial == number
        expected[serial] = digest

    history = json.loads(ok(authd, "zone", "history", ZONE, "--json"))
    versions = history["versions"]
    assert [v["serial"] for v in versions] == [1, 2, 3, 4, 5, 6], versions
    assert {v["serial"]: v["digest"] for v in versions} == expected
    assert versions[0]["source"].startswith("AXFR from ")
    assert all(v["source"].startswith("IXFR from ") for v in versions[1:])
    assert versions[-1]["records"] == 20 + 3 + 2 - 3 + 1 + 1  # hosts + SOA/NS/ns1 + changes
    text = ok(authd, "zone", "history", ZONE)
    assert "6 versions kept" in text and expected[6] in text and "(served)" in text

    # diff 2 -> 4: the AAAA and MX added, h3 removed; the SOA serial line on both sides
    diff = ok(authd, "zone", "diff", ZONE, "2", "4").splitlines()
    assert diff[0] == f"--- {ZONE} serial 2" and diff[1] == f"+++ {ZONE} serial 4"
    removed = {line[1:] for line in diff[2:] if line.startswith("-")}
    added = {line[1:] for line in diff[2:] if line.startswith("+")}
    assert f"h3.{ZONE}. 300 IN A 10.0.0.3" in removed
    assert f"www.{ZONE}. 300 IN AAAA 2001:db8::80" in added
    assert f"{ZONE}. 300 IN MX 10 mail.{ZONE}." in added
    assert any(" SOA " in r and " 2 " in r for r in removed)
    assert any(" SOA " in a and " 4 " in a for a in added)
    assert len(removed) == 2 and len(added) == 3, diff
    # SERIAL_B defaults to the served version (6)
    latest = ok(authd, "zone", "diff", ZONE, "5")
    assert f"+++ {ZONE} serial 6" in latest and f'+txt.{ZONE}. 60 IN TXT "five"' in latest

    # bad input: one line, exit 1
    for args, message in [
        (("zone", "diff", ZONE, "999"), "serial 999 is not in the history"),
        (("zone", "diff", ZONE, "two"), "not a serial"),
        (("zone", "history", "nosuch.test"), "unknown zone nosuch.test"),
    ]:
        done = cli(authd, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr

    # the ledger: one published entry per version, the chain verifies
    ledger_text = ok(authd, "zone", "ledger", ZONE, "--verify")
    assert "chain verified, 6 entries" in ledger_text
    assert len(re.findall(r"\bpublished\b", ledger_text)) == 6

    # kill -9 and restart: the history survives and the reloaded version is not listed twice
    authd.stop(signal.SIGKILL)
    authd.start()
    assert authd.wait_serial(ZONE, 6, 10)
    again = json.loads(ok(authd, "zone", "history", ZONE, "--json"))["versions"]
    assert [v["serial"] for v in again] == [1, 2, 3, 4, 5, 6]
    assert "chain verified, 6 entries" in ok(authd, "zone", "ledger", ZONE, "--verify")

    # one byte flipped in entry 3 (a digit of its digest): verify fails and names it
    ledger_file = authd.workdir / "state" / f"{ZONE}.ledger"
    data = bytearray(ledger_file.read_bytes())
    line_start = [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    third = data.index(b'"digest":"', line_start[2]) + len('"digest":"')
    data[third] = ord("0") if data[third] != ord("0") else ord("1")
    ledger_file.write_bytes(bytes(data))
    broken = cli(authd, "zone", "ledger", ZONE, "--verify")
    assert broken.returncode == 1, broken.stdout
    assert "BROKEN" in broken.stdout and "entry 3 was changed" in broken.stdout, broken.stdout


def test_export_and_promote_with_the_primary_gone(
    tmp_path: Path, knot_bins: tuple[str, str], cleanup: list[KnotPrimary | AuthdSecondary]
) -> None:
    exports = tmp_path / "exports"
    knot, authd = start_pair_with_exports(tmp_path, knot_bins, cleanup, exports)
    commit(knot, ("set", f"new.{ZONE}.", "300", "A", "192.0.2.77"))
    assert authd.wait_serial(ZONE, 2, 10), authd.log()
    serial, digest = primary_digest(knot)

    # [export] dir with interval 1s: the periodic export catches up with serial 2
    periodic = exports / f"{ZONE}.zone.sha384"
    assert wait_for(lambda: periodic.exists() and " serial 2" in periodic.read_text(), 10)
    assert periodic.read_text() == f"{digest} {ZONE}. serial 2\n"

    # on demand, into another directory
    out = tmp_path / "manual"
    text = ok(authd, "zone", "export", ZONE, "--dir", str(out))
    assert f"serial 2 written to {out / (ZONE + '.zone')}" in text and digest in text
    exported = dns.zone.from_file(str(out / f"{ZONE}.zone"), ZONE, relativize=False)
    assert exported.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384).digest.hex() == digest
    assert (out / f"{ZONE}.zone.sha384").read_text().split()[0] == digest

    # the provider is gone for good: promote, apply the printed change, reload
    knot.stop()
    promoted = ok(authd, "zone", "promote", ZONE)
    path = authd.workdir / "state" / "promoted" / f"{ZONE}.zone"
    assert f"serial 2 written to {path}" in promoted and digest in promoted
    assert f'file = "{path}"' in promoted and "primaries" in promoted
    conf = authd.workdir / "authd.toml"
    edited = re.sub(r"primaries = \[[^\]]*\]", f'file = "{path}"', conf.read_text())
    assert edited != conf.read_text()
    conf.write_text(edited)
    assert "1 changed" in ok(authd, "reload")
    status = authd.status(ZONE)
    assert (status["kind"], status["serial"]) == ("file", 2), status
    assert_serves_new_record(authd)

    # and after a restart (the config as edited), the file zone is served, same serial
    authd.stop()
    authd.config_text = lambda: edited  # type: ignore[method-assign]
    authd.start()
    assert authd.wait_serial(ZONE, 2, 10), authd.log()
    assert authd.status(ZONE)["kind"] == "file"
    assert_serves_new_record(authd)
    # the same version read from the file is not a new version in the history
    versions = json.loads(ok(authd, "zone", "history", ZONE, "--json"))["versions"]
    assert [(v["serial"], v["digest"]) for v in versions][-1] == (serial, digest)
    assert sum(1 for v in versions if v["serial"] == 2) == 1
    # a file zone cannot be promoted again
    done = cli(authd, "zone", "promote", ZONE)
    assert done.returncode == 1 and "already a file zone" in done.stderr


def start_pair_with_exports(
    tmp_path: Path,
    bins: tuple[str, str],
    cleanup: list[KnotPrimary | AuthdSecondary],
    exports: Path,
) -> tuple[KnotPrimary, AuthdSecondary]:
    zone_file = write_zone(tmp_path / "knot" / f"{ZONE}.zone", ZONE, 1, names=20)
    port = free_port(HOST)
    knot = knot_primary(*bins, tmp_path / "knot", {ZONE: zone_file}, [(HOST, port)])
    cleanup.append(knot)
    authd = AuthdSecondary(tmp_path / "authd", [SecondaryZone(ZONE, [knot.address])], port=port)
    base = authd.config_text
    extra = f'\n[export]\ndir = "{exports}"\ninterval = "1s"\n'
    authd.config_text = lambda: base() + extra  # type: ignore[method-assign]
    cleanup.append(authd.start())
    authd.refresh(ZONE)
    assert authd.wait_serial(ZONE, 1, 10), authd.log()
    return knot, authd


def assert_serves_new_record(authd: AuthdSecondary) -> None:
    answer: Any = query(HOST, authd.port, f"new.{ZONE}.", "A")
    assert answer is not None and [r.to_text() for r in answer.answer[0]] == ["192.0.2.77"]
