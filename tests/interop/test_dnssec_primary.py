"""A real signing primary (issue 4): knotd with `dnssec-signing: on` signs zones itself with
algorithms 8, 13 and 15, NSEC and NSEC3, and authd, its TSIG secondary, validates them against a
trust anchor taken from `keymgr <zone> ds`; first by AXFR, then by IXFR after a change that
knotd re-signs and announces with NOTIFY.

One knotd serves one zone per case and one authd is secondary for all of them, so the whole
module pays for two server starts. Answers from authd are compared with knotd's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from authd import control
from authd.bench.primaries import (
    KEY,
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    knot_preamble,
    wait_for,
    write_zone,
)
from authd.bench.servers import HOST
from authd.horizon import rfc3339
from tests.support.system import free_port, require_binary

# --- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One signed zone: knotd's algorithm, key scheme and denial of existence."""

    algorithm: int  # DNSSEC algorithm number, checked on the served DNSKEYs
    knot_algorithm: str  # how knotd's `policy` spells it
    nsec3: bool
    single_type: bool  # one CSK instead of KSK + ZSK
    salt_length: int = 0  # NSEC3 only
    label: str = ""  # the zone's first label; "" = the case id

    @property
    def id(self) -> str:
        return self.label or f"alg{self.algorithm}-{'nsec3' if self.nsec3 else 'nsec'}"

    @property
    def zone(self) -> str:
        return f"{self.id}.signed.test"

    @property
    def denial_name(self) -> str:
        return "NSEC3" if self.nsec3 else "NSEC"

    @property
    def denial_type(self) -> int:
        return dns.rdatatype.from_text(self.denial_name)

    def policy(self) -> str:
        """knotd's `policy` entry for this case (small RSA keys keep start-up quick)."""
        lines = [
            f"  - id: {self.id}",
            f"    algorithm: {self.knot_algorithm}",
            f"    single-type-signing: {'on' if self.single_type else 'off'}",
            f"    nsec3: {'on' if self.nsec3 else 'off'}",
        ]
        if self.knot_algorithm == "rsasha256":
            lines += ["    ksk-size: 1024", "    zsk-size: 1024"]
        if self.nsec3:
            lines += [
                "    nsec3-iterations: 0",
                "    nsec3-opt-out: off",
                f"    nsec3-salt-length: {self.salt_length}",
            ]
        return "\n".join(lines) + "\n"


CASES = (
    Case(8, "rsasha256", nsec3=False, single_type=False),
    Case(8, "rsasha256", nsec3=True, single_type=False, salt_length=8),
    Case(13, "ecdsap256sha256", nsec3=False, single_type=True),
    Case(13, "ecdsap256sha256", nsec3=True, single_type=False),
    Case(15, "ed25519", nsec3=False, single_type=False),
    Case(15, "ed25519", nsec3=True, single_type=True),
)
CASE_PARAMS = [pytest.param(case, id=case.id) for case in CASES]

# A control zone, signed like the others, whose trust anchor is another zone's DS moved to its
# name: authd must refuse it, which shows that the anchors above are really enforced.
WRONG_ANCHOR = Case(13, "ecdsap256sha256", nsec3=False, single_type=True, label="wrong-anchor")


# --- knotd signing its zones ----------------------------------------------------------------


@dataclass
class SigningKnotPrimary(KnotPrimary):
    """KnotPrimary whose zones knotd signs itself, each with its case's policy."""

    cases: dict[str, Case] = field(default_factory=dict)  # zone -> case

    def config_text(self) -> str:
        remotes = "".join(
            f"  - id: authd{i}\n    address: {h}@{p}\n    key: {KEY.name}\n"
            for i, (h, p) in enumerate(self.notify)
        )
        notify = ", ".join(f"authd{i}" for i in range(len(self.notify)))
        zones = "".join(
            f'  - domain: "{z}."\n    file: "{p}"\n    acl: xfr\n    notify: [{notify}]\n'
            f"    dnssec-signing: on\n    dnssec-policy: {self.cases[z].id}\n"
            for z, p in self.zones.items()
        )
        policies = "".join(self.cases[z].policy() for z in self.zones)
        return (
            knot_preamble(self.workdir, self.port)
            + f"""remote:
{remotes}
acl:
  - id: xfr
    key: {KEY.name}
    action: transfer
policy:
{policies}
template:
  - id: default
    storage: "{self.workdir}/db"
    zonefile-sync: -1
    zonefile-load: difference-no-serial
    journal-content: all
zone:
{zones}"""
        )

    def ds_records(self, keymgr: str, zone: str) -> str:
        """The DS records of the zone's KSK (or CSK), as `keymgr <zone> ds` prints them."""
        done = subprocess.run(
            [keymgr, "-c", str(self.conf), zone, "ds"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if done.returncode != 0 or " DS " not in done.stdout:
            raise RuntimeError(f"keymgr {zone} ds: {done.stdout}{done.stderr}")
        return done.stdout


@dataclass
class Pair:
    knot: SigningKnotPrimary
    authd: AuthdSecondary
    kdig: str


def anchor_file(knot: SigningKnotPrimary, keymgr: str, case: Case, directory: Path) -> Path:
    """The zone's trust anchor from keymgr; WRONG_ANCHOR gets the first case's DS instead."""
    if case is WRONG_ANCHOR:
        source = CASES[0].zone
        text = knot.ds_records(keymgr, source).replace(f"{source}.", f"{case.zone}.")
    else:
        text = knot.ds_records(keymgr, case.zone)
    path = directory / f"{case.zone}.ds"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """knotd signing every case's zone, authd validating each against keymgr's DS; every
    zone's first refresh is under way (each test waits for its own zone)."""
    knotd, knotc, keymgr, kdig = (require_binary(b) for b in ("knotd", "knotc", "keymgr", "kdig"))
    root = tmp_path_factory.mktemp("dnssec-primary")
    cases = (*CASES, WRONG_ANCHOR)
    zones = {c.zone: write_zone(root / "knot" / f"{c.zone}.zone", c.zone, 1) for c in cases}
    authd_port = free_port(HOST)
    knot = SigningKnotPrimary(
        knotd,
        knotc,
        root / "knot",
        zones,
        free_port(HOST),
        [(HOST, authd_port)],
        cases={c.zone: c for c in cases},
    )
    authd: AuthdSecondary | None = None
    try:
        knot.start()
        secondaries = []
        for case in cases:
            anchor = anchor_file(knot, keymgr, case, root / "anchors")
            settings: dict[str, str | int] = {
                "dnssec-validation": "required",
                "trust-anchor": str(anchor),
            }
            secondaries.append(SecondaryZone(case.zone, [knot.address], settings))
        authd = AuthdSecondary(root / "authd", secondaries, port=authd_port).start()
        for case in cases:
            authd.refresh(case.zone)
        yield Pair(knot, authd, kdig)
    finally:
        if authd is not None:
            authd.stop()
        knot.stop()


def loaded(pair: Pair, case: Case) -> int:
    """Wait until authd serves the serial knotd serves for the case's zone; that serial."""
    serial = pair.knot.serial(case.zone)
    assert serial is not None, pair.knot.log()
    served = pair.authd.wait_serial(case.zone, serial, 15)
    assert served, f"{case.zone}: {pair.authd.status(case.zone)}\n{pair.authd.log()}"
    return serial


# --- comparing answers ----------------------------------------------------------------------


def ask(port: int, name: str, rtype: str) -> dns.message.Message:
    """The query `kdig +dnssec +norec` sends, over UDP: DO set, 1232-byte EDNS buffer."""
    message = dns.message.make_query(name, rtype, want_dnssec=True, payload=1232)
    message.flags &= ~dns.flags.RD
    return dns.query.udp(message, HOST, port=port, timeout=2.0)


def rrsets(section: list[dns.rrset.RRset]) -> list[str]:
    """A section as sorted master-file lines, so that order does not matter but TTLs do."""
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


def sig_covers(section: list[dns.rrset.RRset]) -> set[int]:
    """The types that RRSIGs in a section cover."""
    return {int(r.covers) for r in section if r.rdtype == dns.rdatatype.RRSIG}


def types_in(section: list[dns.rrset.RRset]) -> set[int]:
    return {int(r.rdtype) for r in section}


def same_answer(case: Case, name: str, rtype: str, pair: Pair) -> dns.message.Message:
    """Ask both servers; authd must match knotd's rcode, AA and answer section exactly."""
    ours = ask(pair.authd.port, name, rtype)
    theirs = ask(pair.knot.port, name, rtype)
    context = f"{case.zone} {name}/{rtype}\nauthd:\n{ours}\nknotd:\n{theirs}"
    assert ours.rcode() == theirs.rcode(), context
    assert ours.flags & dns.flags.AA and theirs.flags & dns.flags.AA, context
    assert rrsets(ours.answer) == rrsets(theirs.answer), context
    return ours


def same_denial(case: Case, name: str, rtype: str, pair: Pair, rcode: int) -> None:
    """A negative answer: same rcode and authority as knotd, SOA and NSEC(3) proof signed."""
    ours = same_answer(case, name, rtype, pair)
    theirs = ask(pair.knot.port, name, rtype)
    context = f"{case.zone} {name}/{rtype}\nauthd:\n{ours}\nknotd:\n{theirs}"
    assert ours.rcode() == rcode and not ours.answer, context
    want = {dns.rdatatype.SOA, case.denial_type}
    assert want <= types_in(ours.authority) and want <= sig_covers(ours.authority), context
    assert rrsets(ours.authority) == rrsets(theirs.authority), context


def kdig_lines(pair: Pair, port: int, name: str, rtype: str) -> list[str]:
    """The answer and authority records `kdig +dnssec +norec` prints, sorted."""
    args = [pair.kdig, f"@{HOST}", "-p", str(port), "+dnssec", "+norec", "+noall"]
    done = subprocess.run(
        [*args, "+answer", "+authority", name, rtype],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(line for line in done.stdout.splitlines() if line.strip())


def authd_cli(pair: Pair, *args: str) -> Any:
    """`authd <args> --json -c <config>` as an operator runs it; the parsed JSON output."""
    conf = pair.authd.workdir / "authd.toml"
    done = subprocess.run(
        [sys.executable, "-m", "authd.cli", *args, "--json", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def ixfr_updates(pair: Pair, zone: str) -> float:
    return pair.authd.metric("authd_xfr_transfers_total", zone=zone, type="IXFR", result="updated")


# --- 1. the signed zone arrives by AXFR and answers like knotd ------------------------------


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_signed_zone_loads_by_axfr(pair: Pair, case: Case) -> None:
    zone = case.zone
    serial = loaded(pair, case)
    [status] = authd_cli(pair, "zone", "status", zone)
    assert status["serial"] == serial and status["primary_serial"] == serial, status
    assert status["state"] == "ok" and status["transfer"] == "AXFR", status
    assert status["last_rejection"] is None and status["last_error"] is None, status
    assert status["signature_horizon"] is not None, status  # authd saw it as signed
    # The validity horizon (issue 13): the earliest RRSIG expiration; serve-stale, so the
    # expire deadline does not limit it.
    assert status["signatures_valid_until"] == rfc3339(status["signature_horizon"]), status
    assert status["valid_until"] == status["signatures_valid_until"], status
    gauge = pair.authd.metric("authd_zone_signatures_valid_until_timestamp_seconds", zone=zone)
    assert gauge == status["signature_horizon"]
    assert pair.authd.metric("authd_zone_valid_until_timestamp_seconds", zone=zone) == gauge

    dnskeys = same_answer(case, f"{zone}.", "DNSKEY", pair)
    keys = [r for rrset in dnskeys.answer if rrset.rdtype == dns.rdatatype.DNSKEY for r in rrset]
    assert keys and {r.algorithm for r in keys} == {case.algorithm}, dnskeys
    answer = same_answer(case, f"ns1.{zone}.", "A", pair)
    assert types_in(answer.answer) == {dns.rdatatype.A, dns.rdatatype.RRSIG}, answer
    assert sig_covers(answer.answer) == {dns.rdatatype.A}, answer
    same_denial(case, f"nx.{zone}.", "A", pair, dns.rcode.NXDOMAIN)
    same_denial(case, f"h3.{zone}.", "TXT", pair, dns.rcode.NOERROR)  # NODATA

    # the same, as an operator would look with kdig: identical records from both servers
    for name, rtype, proof in (("ns1", "A", "RRSIG"), ("nx", "A", case.denial_name)):
        ours = kdig_lines(pair, pair.authd.port, f"{name}.{zone}.", rtype)
        assert ours == kdig_lines(pair, pair.knot.port, f"{name}.{zone}.", rtype), ours
        assert any(f"\t{proof}\t" in line for line in ours), ours


# --- 2. a change on the primary arrives by IXFR, re-signed ----------------------------------


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_resigned_change_arrives_by_ixfr(pair: Pair, case: Case) -> None:
    zone, knot, authd = case.zone, pair.knot, pair.authd
    before = loaded(pair, case)
    ixfr_before = ixfr_updates(pair, zone)

    knot.set_record(zone, f"added.{zone}.", "A", "192.0.2.77")  # knotd signs, then NOTIFY
    assert wait_for(lambda: (knot.serial(zone) or 0) > before, 5), knot.log()
    after = knot.serial(zone)
    assert after is not None
    assert authd.wait_serial(zone, after, 10), f"{authd.status(zone)}\n{authd.log()}"

    # knotd announced the new serial to authd and served it as an IXFR
    notified = f"[{zone}.] notify, outgoing, remote {HOST}@{authd.port}, serial {after}"
    ixfr = f"[{zone}.] IXFR, outgoing, remote {HOST}@"
    assert wait_for(lambda: notified in knot.log() and ixfr in knot.log(), 2), knot.log()
    assert f"started, serial {before} -> {after}" in knot.log().split(ixfr, 1)[1], knot.log()
    status = authd.status(zone)
    assert status["state"] == "ok" and status["transfer"] == "IXFR", status
    assert status["last_rejection"] is None, status
    assert ixfr_updates(pair, zone) == ixfr_before + 1
    answer = same_answer(case, f"added.{zone}.", "A", pair)
    addresses = [
        r.to_text() for rrset in answer.answer if rrset.rdtype == dns.rdatatype.A for r in rrset
    ]
    assert addresses == ["192.0.2.77"], answer
    assert sig_covers(answer.answer) == {dns.rdatatype.A}, answer
    # the denial chain was re-linked around the new name, and the result passes a full check
    same_denial(case, f"added2.{zone}.", "A", pair, dns.rcode.NXDOMAIN)
    same_denial(case, f"added.{zone}.", "TXT", pair, dns.rcode.NOERROR)
    verdict = control.call(authd.socket, "verify", zone=zone)
    assert verdict["ok"] and verdict["signed"] and verdict["serial"] == after, verdict


# --- 3. control: a trust anchor that matches no key of the zone rejects it -------------------


def test_wrong_trust_anchor_rejects_zone(pair: Pair) -> None:
    zone = WRONG_ANCHOR.zone
    assert pair.knot.serial(zone) is not None  # knotd signed and serves it
    assert wait_for(lambda: pair.authd.status(zone)["last_rejection"], 15), pair.authd.log()
    status = pair.authd.status(zone)
    print(f"{zone}: rejected with: {status['last_rejection']}")
    assert "dnskey-anchor-mismatch" in status["last_rejection"], status
    assert status["serial"] is None, status
    answer = ask(pair.authd.port, f"{zone}.", "SOA")
    assert answer.rcode() != dns.rcode.NOERROR or not answer.answer, answer
