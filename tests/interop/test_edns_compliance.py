"""ISC's EDNS compliance list (tests/interop/edns_compliance.py) run with dig against authd,
and against knotd 3.2 (with mod-cookies) for comparison: authd must pass every line, so
it is equal to or better than knotd on each (the README's table, section Answers)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.bench.servers import HOST, RunningServer, _start, authd_command, authd_config, running
from authd.serve import cookies
from tests.conftest import free_port, require_binary
from tests.interop.edns_compliance import CHECKS, Check, run

ZONE = "example.test."
# A TXT RRset too big for 512 octets, for the edns@512 line.
ZONE_TEXT = (
    "$ORIGIN example.test.\n$TTL 3600\n"
    "@ SOA ns1 hostmaster 2026120801 3600 900 1209600 300\n"
    "  NS ns1\nns1 A 127.0.0.1\nwww A 192.0.2.80\n"
    + "".join(f'big TXT "{i}{"x" * 180}"\n' for i in range(6))
)
SECRET = "000102030405060708090a0b0c0d0e0f"  # shared: each accepts the other's cookies
KNOT_COOKIES = f"""
mod-cookies:
  - id: default
    secret: 0x{SECRET}
"""


@pytest.fixture(scope="module")
def zone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ednscomp") / "example.test.zone"
    path.write_text(ZONE_TEXT)
    return path


@pytest.fixture(scope="module")
def dig() -> str:
    return require_binary("dig")


@pytest.fixture(scope="module")
def authd(zone_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("authd")
    (workdir / "state").mkdir()
    port = free_port(HOST)
    conf = workdir / "authd.toml"
    text = authd_config(workdir, port, {"example.test": zone_file})
    conf.write_text(text.replace("[[zone]]", f'[cookies]\nsecret = "{SECRET}"\n\n[[zone]]', 1))
    command = [*authd_command(), "serve", "-c", str(conf)]
    with running(_start("authd", command, workdir, port, ["example.test"])) as s:
        yield s


@pytest.fixture(scope="module")
def knotd(zone_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    binary = require_binary("knotd")
    workdir = tmp_path_factory.mktemp("knotd")
    for sub in ("run", "db"):
        (workdir / sub).mkdir()
    port = free_port(HOST)
    conf = workdir / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{workdir}/run"
    listen: {HOST}@{port}
    nsid: "interop-nsid"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{workdir}/db"
log:
  - target: stderr
    any: warning
{KNOT_COOKIES}
template:
  - id: default
    storage: "{workdir}/db"
    zonefile-sync: -1
    journal-content: none
    global-module: mod-cookies/default
zone:
  - domain: {ZONE}
    file: "{zone_file}"
"""
    )
    with running(_start("knotd", [binary, "-c", str(conf)], workdir, port, ["example.test"])) as s:
        yield s


@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
def test_authd_passes(authd: RunningServer, dig: str, check: Check) -> None:
    assert run(check, authd.host, authd.port, ZONE, dig) == "ok"


def test_authd_equal_or_better_than_knotd(
    authd: RunningServer, knotd: RunningServer, dig: str
) -> None:
    table = {
        check.name: (
            run(check, authd.host, authd.port, ZONE, dig),
            run(check, knotd.host, knotd.port, ZONE, dig),
        )
        for check in CHECKS
    }
    print("\n".join(f"{name:14} authd={a:10} knotd={k}" for name, (a, k) in table.items()))
    assert [name for name, (a, k) in table.items() if k == "ok" and a != "ok"] == []
    # What knotd 3.2 lacks (README, section Answers): if one of these starts passing, the
    # README's table is out of date.
    assert {name for name, (_, k) in table.items() if k != "ok"} == {
        "clientcookie",
        "zoneversion",
        "keepalive",
        "ede-opcode",
    }


def _server_cookie(dig: str, server: RunningServer, client_cookie: str) -> str:
    done = subprocess.run(
        [
            dig,
            f"@{server.host}",
            "-p",
            str(server.port),
            "+norec",
            f"+cookie={client_cookie}",
            "+nobadcookie",
            "+showbadcookie",
            ZONE,
            "SOA",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    found = re.search(r"; COOKIE: ([0-9a-f]{48})", done.stdout)
    assert found is not None, done.stdout
    return found.group(1)


def test_cookies_interoperate_with_knotd(
    authd: RunningServer, knotd: RunningServer, dig: str
) -> None:
    """RFC 9018: with the same secret, authd accepts knotd's cookies and knotd accepts
    authd's (dig reports "(good)" when the server echoes the cookie it was sent)."""
    made_by_knotd = _server_cookie(dig, knotd, "0102030405060708")
    made_by_authd = _server_cookie(dig, authd, "1112131415161718")
    ip = bytes((127, 0, 0, 1))
    for cookie in (made_by_knotd, made_by_authd):
        raw = bytes.fromhex(cookie)
        assert cookies.matches(bytes.fromhex(SECRET), raw[:8], raw[8:], ip)
    for server, cookie in ((authd, made_by_knotd), (knotd, made_by_authd)):
        done = subprocess.run(
            [
                dig,
                f"@{server.host}",
                "-p",
                str(server.port),
                "+norec",
                f"+cookie={cookie}",
                "+nobadcookie",
                ZONE,
                "SOA",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert "status: NOERROR" in done.stdout and "(good)" in done.stdout, done.stdout
