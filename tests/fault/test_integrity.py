"""Never publish a bad transfer (issue 4), end to end: a live `authd serve` fed by the test primary.

The zone is signed by ldns-signzone (ECDSA P-256, NSEC) at serials 1 and 2. authd loads
serial 1, then the primary serves a corrupted serial 2, over IXFR (the diff against 1) and
over AXFR (the whole version). Each corruption must be rejected with its own check, the
old serial keeps serving, `last_rejection` names the owner/type/check, and
authd_zone_rejections_total{reason} counts it. When the primary serves the good serial 2
again, authd picks it up by itself (retry timer, no command).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authd.control import ControlUnreachable, call
from tests.support.primary import Behaviour, Fault, Rec, TestPrimary
from tests.support.system import free_port, require_binary

REPO = Path(__file__).resolve().parents[2]
ZONE_FILE = REPO / "zones" / "example.test.zone"
ORIGIN = dns.name.from_text("example.test.")
START_TIMEOUT = 20.0
WAIT = 10.0


# -- signed versions ---------------------------------------------------------------------


@dataclass
class Keys:
    ksk: str
    zsk: str
    zsk_private: ec.EllipticCurvePrivateKey
    zsk_dnskey: dns.rdata.Rdata


def _zone_text(serial: int) -> str:
    text = ZONE_FILE.read_text()
    text = re.sub(r"\d+ ; serial", f"{serial} ; serial", text)
    # Short timers so a fixed primary is picked up within seconds (raised by *-min).
    text = re.sub(r"3600 +; refresh", "2 ; refresh", text)
    return re.sub(r"900 +; retry", "1 ; retry", text)


def _keygen(tmp: Path) -> Keys:
    def gen(*flags: str) -> str:
        return subprocess.run(
            ["ldns-keygen", "-a", "ECDSAP256SHA256", *flags, "example.test"],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    ksk, zsk = gen("-k"), gen()
    scalar = next(
        line.split(":", 1)[1].strip()
        for line in (tmp / f"{zsk}.private").read_text().splitlines()
        if line.startswith("PrivateKey:")
    )
    private = ec.derive_private_key(int.from_bytes(base64.b64decode(scalar), "big"), ec.SECP256R1())
    dnskey_line = (tmp / f"{zsk}.key").read_text().split()
    dnskey = dns.rdata.from_text(
        "IN", "DNSKEY", " ".join(dnskey_line[dnskey_line.index("DNSKEY") + 1 :])
    )
    return Keys(ksk, zsk, private, dnskey)


def _signzone(tmp: Path, keys: Keys, serial: int, *extra: str) -> str:
    name = f"zone-{serial}-{'-'.join(extra) or 'nsec'}"
    (tmp / name).write_text(_zone_text(serial))
    subprocess.run(
        [
            "ldns-signzone",
            *extra,
            "-e",
            "20360101000000",
            "-f",
            f"{name}.signed",
            name,
            keys.ksk,
            keys.zsk,
        ],
        cwd=tmp,
        check=True,
        capture_output=True,
    )
    return (tmp / f"{name}.signed").read_text()


@dataclass
class Signed:
    v1: str
    v2: str
    v2_nsec3: str
    v2_zonemd: str
    keys: Keys
    ds_file: Path


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    require_binary("ldns-signzone")
    require_binary("ldns-keygen")
    tmp = tmp_path_factory.mktemp("signed")
    keys = _keygen(tmp)
    return Signed(
        v1=_signzone(tmp, keys, 1),
        v2=_signzone(tmp, keys, 2),
        v2_nsec3=_signzone(tmp, keys, 2, "-n", "-s", "beef", "-t", "2"),
        v2_zonemd=_signzone(tmp, keys, 2, "-z", "1:1"),
        keys=keys,
        ds_file=tmp / f"{keys.ksk}.ds",
    )


def _parse(text: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, origin=ORIGIN, relativize=False)


def _name(relative: str) -> dns.name.Name:
    return dns.name.from_text(relative, ORIGIN)


def _resign(
    zone: dns.zone.Zone,
    keys: Keys,
    owner: str,
    rdtype: str,
    *,
    inception: float | None = None,
    expiration: float | None = None,
    private: ec.EllipticCurvePrivateKey | None = None,
    dnskey: dns.rdata.Rdata | None = None,
) -> None:
    """Replace the RRSIG over owner/rdtype with a fresh one (by the ZSK unless told otherwise)."""
    name = _name(owner)
    rdataset = zone.find_rdataset(name, rdtype)
    now = time.time()
    sig = dns.dnssec.sign(
        (name, rdataset),
        private or keys.zsk_private,
        ORIGIN,
        dnskey or keys.zsk_dnskey,  # type: ignore[arg-type]
        inception=inception if inception is not None else now - 3600,
        expiration=expiration if expiration is not None else now + 30 * 86400,
    )
    zone.replace_rdataset(name, dns.rdataset.from_rdata(rdataset.ttl, sig))


def _covered(zone: dns.zone.Zone, owner: str, rdtype: str) -> dns.rdataset.Rdataset:
    return zone.find_rdataset(_name(owner), "RRSIG", covers=rdtype)


def _replace_nsec(zone: dns.zone.Zone, owner: str, change: Callable[[Any], Any]) -> None:
    rdataset = zone.find_rdataset(_name(owner), "NSEC")
    zone.replace_rdataset(_name(owner), dns.rdataset.from_rdata(rdataset.ttl, change(rdataset[0])))


# -- the corruptions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Corruption:
    id: str
    check: str  # the rule id in last_rejection and in the metric label
    where: str  # what last_rejection must name (owner/type), "" when the check says it all
    make: Callable[[Signed], dns.zone.Zone]
    ixfr: bool = True  # also served as an IXFR diff against serial 1
    extra: tuple[Rec, ...] = ()  # records the primary adds to the version it serves


def _flip_signature(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2)
    rrsig = _covered(zone, "web", "A")
    old = rrsig[0]
    flipped = bytearray(old.signature)
    flipped[-1] ^= 0x01
    rrsig.clear()  # type: ignore[no-untyped-call]
    rrsig.add(old.replace(signature=bytes(flipped)))
    return zone


def _expired(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2)
    now = time.time()
    _resign(zone, s.keys, "web", "A", inception=now - 7 * 86400, expiration=now - 86400)
    return zone


def _not_yet_valid(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2)
    now = time.time()
    _resign(zone, s.keys, "web", "A", inception=now + 86400, expiration=now + 7 * 86400)
    return zone


def _missing_rrsig(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2)
    zone.delete_rdataset(_name("web"), "RRSIG", covers="A")
    return zone


def _foreign_key(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2)
    other = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(other.public_key(), 13, flags=256)
    _resign(zone, s.keys, "web", "A", private=other, dnskey=dnskey)
    return zone


def _nsec_gap(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2)
    # mail's successor in canonical order is ns1; point it past ns1, to ns2.
    _replace_nsec(zone, "mail", lambda r: r.replace(next=_name("ns2")))
    _resign(zone, s.keys, "mail", "NSEC")
    return zone


def _nsec_bitmap(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2)
    wrong = dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes([dns.rdatatype.A, dns.rdatatype.MX])
    _replace_nsec(zone, "mail", lambda r: r.replace(windows=wrong))
    _resign(zone, s.keys, "mail", "NSEC")
    return zone


def _nsec3_order(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2_nsec3)
    nsec3_owners = sorted(
        name
        for name, node in zone.nodes.items()
        if node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC3)
    )
    first, second = nsec3_owners[0], nsec3_owners[1]
    one = zone.find_rdataset(first, "NSEC3")
    two = zone.find_rdataset(second, "NSEC3")
    a, b = one[0], two[0]
    # Swap the next-hashed-owner fields: the chain no longer follows hash order.
    zone.replace_rdataset(first, dns.rdataset.from_rdata(one.ttl, a.replace(next=b.next)))
    zone.replace_rdataset(second, dns.rdataset.from_rdata(two.ttl, b.replace(next=a.next)))
    for owner in (first, second):
        _resign(zone, s.keys, owner.relativize(ORIGIN).to_text(), "NSEC3")
    return zone


def _zonemd_mismatch(s: Signed) -> dns.zone.Zone:
    zone = _parse(s.v2_zonemd)
    rdataset = zone.find_rdataset(ORIGIN, "ZONEMD")
    old = rdataset[0]
    digest = bytearray(old.digest)
    digest[0] ^= 0xFF
    zone.replace_rdataset(
        ORIGIN, dns.rdataset.from_rdata(rdataset.ttl, old.replace(digest=bytes(digest)))
    )
    _resign(zone, s.keys, "@", "ZONEMD")
    return zone


def _cname_and_a(s: Signed) -> dns.zone.Zone:
    return _parse(s.v2)  # the A beside the CNAME is added by the primary (see Injecting)


CNAME_COMPANION: Rec = (_name("www"), 3600, dns.rdata.from_text("IN", "A", "192.0.2.99"))


class Injecting(TestPrimary):
    """Serves `extra` records with the current version, as a primary with a broken zone would.

    dnspython's zone refuses CNAME and other data at one node, so the record that
    breaks that rule cannot live in the Zone object.
    """

    extra: list[Rec]

    def _axfr_records(self) -> list[Rec]:
        records = super()._axfr_records()
        return [*records[:-1], *self.extra, records[-1]]

    def _ixfr_records(self, query: dns.message.Message) -> list[Rec]:
        records = super()._ixfr_records(query)
        if len(records) == 1:
            return records
        return [*records[:-1], *self.extra, records[-1]]


def _many_keys(s: Signed) -> dns.zone.Zone:
    """KeyTrap-style: 40 DNSKEYs at the apex (every validator would try them all)."""
    zone = _parse(s.v2)
    dnskeys = zone.find_rdataset(ORIGIN, "DNSKEY")
    for _ in range(40):
        key = ec.generate_private_key(ec.SECP256R1())
        dnskeys.add(dns.dnssec.make_dnskey(key.public_key(), 13, flags=256))
    return zone


def _many_signatures(s: Signed) -> dns.zone.Zone:
    """KeyTrap-style: 30 RRSIGs over one RRset, none of which verifies."""
    zone = _parse(s.v2)
    rrsig = _covered(zone, "web", "A")
    template = rrsig[0]
    for index in range(30):
        signature = bytes([index]) * len(template.signature)
        rrsig.add(template.replace(signature=signature))
    return zone


# Two groups, one live server each, so each test stays well under 20 s.
SIGNATURES = [
    Corruption("signature-byte-flipped", "rrsig-invalid", "web.example.test/A", _flip_signature),
    Corruption("rrsig-expired", "rrsig-expired", "web.example.test/A", _expired),
    Corruption("rrsig-not-yet-valid", "rrsig-not-yet-valid", "web.example.test/A", _not_yet_valid),
    Corruption("rrsig-missing", "rrsig-missing", "web.example.test/A", _missing_rrsig),
    Corruption("rrsig-unknown-key", "rrsig-unknown-key", "web.example.test/A", _foreign_key),
]
CHAIN_STRUCTURE_BUDGET = [
    Corruption("nsec-gap", "nsec-chain-gap", "mail.example.test/NSEC", _nsec_gap),
    Corruption("nsec-bitmap", "nsec-bitmap", "mail.example.test/NSEC", _nsec_bitmap),
    Corruption("nsec3-order", "nsec3-chain", "/NSEC3", _nsec3_order, ixfr=False),
    Corruption(
        "zonemd-mismatch", "zonemd-mismatch", "example.test/ZONEMD", _zonemd_mismatch, ixfr=False
    ),
    Corruption(
        "cname-and-a",
        "cname-other-data",
        "www.example.test/CNAME",
        _cname_and_a,
        extra=(CNAME_COMPANION,),
    ),
    Corruption("keytrap-dnskeys", "budget-dnskeys", "example.test/DNSKEY", _many_keys),
    Corruption("keytrap-signatures", "budget-signatures", "web.example.test/A", _many_signatures),
]


# -- the live server ---------------------------------------------------------------------


@dataclass
class Live:
    directory: Path
    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    @property
    def socket(self) -> Path:
        return self.directory / "authd.sock"

    def status(self) -> dict[str, Any]:
        result = call(self.socket, "status", zone="example.test", timeout=5)
        return dict(result[0])

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    def rejections(self, reason: str) -> float:
        pattern = re.compile(
            r'^authd_zone_rejections_total\{(?=[^}]*zone="example\.test\.?")(?=[^}]*reason="'
            + re.escape(reason)
            + r'")[^}]*\} (\S+)$',
            re.M,
        )
        match = pattern.search(self.metrics())
        return float(match.group(1)) if match else 0.0


def _config(
    directory: Path, primary_port: int, dns_port: int, metrics_port: int, extra: str
) -> Path:
    config = directory / "authd.toml"
    config.write_text(
        f"""
[server]
listen = ["127.0.0.1@{dns_port}"]
workers = 1
state-dir = "state"
control-socket = "authd.sock"
metrics = "127.0.0.1@{metrics_port}"

[[remote]]
id = "primary"
addresses = ["127.0.0.1@{primary_port}"]

[[zone]]
name = "example.test"
primaries = ["primary"]
dnssec-validation = "auto"
refresh-min = 1
retry-min = 1
{extra}
"""
    )
    return config


def _start(directory: Path, primary_port: int, extra: str = "") -> Live:
    directory.mkdir(parents=True, exist_ok=True)
    dns_port, metrics_port = free_port(), free_port()
    config = _config(directory, primary_port, dns_port, metrics_port, extra)
    log = directory / "authd.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "authd.cli", "serve", "-c", str(config)],
            cwd=directory,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    return Live(directory, process, metrics_port, log)


def _stop(live: Live) -> None:
    if live.process.poll() is None:
        live.process.send_signal(signal.SIGTERM)
        try:
            live.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            live.process.kill()
            live.process.wait(timeout=5)


async def _until(
    what: str, live: Live, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if live.process.poll() is not None:
            raise AssertionError(f"authd exited {live.process.returncode}:\n{live.log.read_text()}")
        try:
            status = await asyncio.to_thread(live.status)
        except (OSError, ControlUnreachable):
            status = {}  # not listening yet
        if status and predicate(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"timed out waiting for {what}; last status {status}\n{live.log.read_text()[-3000:]}"
    )


@pytest.fixture
async def primary(signed: Signed) -> AsyncIterator[Injecting]:
    server = Injecting([_parse(signed.v1)])
    server.extra = []
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def live_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "authd"


# -- the tests ---------------------------------------------------------------------------


async def _refresh(live: Live) -> None:
    await asyncio.to_thread(call, live.socket, "refresh", zone="example.test", timeout=5)


@pytest.mark.parametrize(
    "corruptions",
    [SIGNATURES, CHAIN_STRUCTURE_BUDGET],
    ids=["signatures", "chain-structure-budget"],
)
async def test_each_corruption_is_rejected_and_the_old_serial_keeps_serving(
    signed: Signed, primary: Injecting, live_dir: Path, corruptions: list[Corruption]
) -> None:
    live = _start(live_dir, primary.port)
    try:
        await _until("serial 1", live, lambda s: s.get("serial") == 1, timeout=START_TIMEOUT)
        assert (await asyncio.to_thread(live.status))["signature_horizon"]
        for corruption in corruptions:
            bad = corruption.make(signed)
            modes = [("IXFR", Fault.NONE), ("AXFR", Fault.IXFR_AXFR_STYLE)]
            for kind, fault in modes if corruption.ixfr else modes[1:]:
                before = await asyncio.to_thread(live.rejections, corruption.check)
                primary.versions = [_parse(signed.v1), bad]
                primary.behaviour = Behaviour(fault=fault)
                primary.extra = list(corruption.extra)
                started = time.monotonic()
                await _refresh(live)
                label = f"{corruption.id} over {kind}"
                deadline = started + WAIT
                after = before
                while after == before and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    after = await asyncio.to_thread(live.rejections, corruption.check)
                elapsed = time.monotonic() - started
                status = await asyncio.to_thread(live.status)
                rejection = status.get("last_rejection") or ""
                assert after == before + 1, (label, before, after, rejection)
                assert status["serial"] == 1, label
                assert "rejected serial 2 from 127.0.0.1" in rejection, (label, rejection)
                # checks.py writes owners without the final dot, dnssec.py with it.
                named = rejection.replace("./", "/")
                assert corruption.check in rejection and corruption.where in named, (
                    label,
                    rejection,
                )
                assert elapsed < 5, (label, elapsed)  # KeyTrap zones included: within the budget
        # The primary is fixed: authd takes serial 2 by itself (retry/refresh timers).
        primary.behaviour = Behaviour()
        primary.extra = []
        primary.versions = [_parse(signed.v1), _parse(signed.v2)]
        await _until("good serial 2 picked up", live, lambda s: s.get("serial") == 2)
    finally:
        _stop(live)


async def test_trust_anchor_mismatch_is_rejected_until_the_anchor_matches(
    signed: Signed, primary: Injecting, live_dir: Path
) -> None:
    """A KSK the parent's DS does not match: every validating resolver would fail."""
    live_dir.mkdir(parents=True)
    stranger = ec.generate_private_key(ec.SECP256R1())
    wrong_ds = dns.dnssec.make_ds(
        ORIGIN, dns.dnssec.make_dnskey(stranger.public_key(), 13, flags=257), "SHA256"
    )
    anchor = live_dir / "example.test.ds"
    anchor.write_text(f"example.test. 3600 IN DS {wrong_ds.to_text()}\n")
    live = _start(live_dir, primary.port, extra=f'trust-anchor = "{anchor.name}"')
    try:
        status = await _until(
            "anchor mismatch",
            live,
            lambda s: "dnskey-anchor-mismatch" in (s.get("last_rejection") or ""),
            timeout=START_TIMEOUT,
        )
        assert status["serial"] is None
        assert "example.test/DNSKEY" in status["last_rejection"].replace("./", "/")
        assert await asyncio.to_thread(live.rejections, "dnskey-anchor-mismatch") >= 1
        # The operator installs the parent's real DS: the same version is now accepted.
        shutil.copy(signed.ds_file, anchor)
        await asyncio.to_thread(call, live.socket, "reload", timeout=10)
        await _refresh(live)
        await _until("serial 1 under the right anchor", live, lambda s: s.get("serial") == 1)
    finally:
        _stop(live)
