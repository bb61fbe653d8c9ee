"""Signed test zones on one fixed clock.

Every signature a test makes (ldns-signzone, dns.dnssec.sign, sign_zone) takes its
inception and expiration from NOW, and every validation in those tests runs at NOW: a
fixed moment, never the wall clock read twice. So a test gives the same verdict however
long after collection it runs (a loaded machine once took more than the 300 s clock-skew
allowance between importing NOW = time.time() and signing, and failed with
rrsig-not-yet-valid), and on any date until the expirations below.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import dns.name
import dns.zone

from authd.zone import names
from authd.zone.snapshot import Record, Snapshot, SnapshotBuilder
from tests.support.system import require_binary

NOW = 1_900_000_000
"""2030-03-17 17:46:40 UTC: the moment of every signing and validation in the DNSSEC tests."""
INCEPTION = NOW - 3600
EXPIRATION = NOW + 30 * 86400
LDNS_EXPIRATION = 2082758400
"""2036-01-01: the expiration ldns-signed zones get (their validity horizon)."""

EXAMPLE_ZONE = Path(__file__).parents[2] / "zones" / "example.test.zone"


def signer_time(moment: int) -> str:
    """YYYYMMDDHHmmSS in UTC, the form ldns-signzone and dnssec-signzone take."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y%m%d%H%M%S")


def snapshot_of(zone: dns.zone.Zone) -> Snapshot:
    builder = SnapshotBuilder(names.key_from_name(zone.origin))
    for name, rdataset in zone.iterate_rdatasets():
        for rdata in rdataset:
            builder.add(names.key_from_name(name), rdataset.rdtype, rdataset.ttl, rdata.to_wire())
    return builder.build()


def snapshot_from_records(origin: dns.name.Name, records: Iterable[Record]) -> Snapshot:
    builder = SnapshotBuilder(names.key_from_name(origin))
    builder.add_records(records)
    return builder.build()


def sign_example_zone(tmp: Path, algorithm: str, *extra: str) -> tuple[Path, Path, Path]:
    """zones/example.test.zone signed by ldns-signzone in `tmp` with a new KSK and ZSK,
    valid from INCEPTION to LDNS_EXPIRATION: (signed zone file, KSK's DS file, ZSK's
    private key file). `extra` are more ldns-signzone options (NSEC3)."""
    require_binary("ldns-signzone")
    require_binary("ldns-keygen")
    shutil.copy(EXAMPLE_ZONE, tmp / "zone")
    ksk = _keygen(tmp, algorithm, "-k")
    zsk = _keygen(tmp, algorithm)
    window = ["-i", signer_time(INCEPTION), "-e", signer_time(LDNS_EXPIRATION)]
    subprocess.run(
        ["ldns-signzone", *extra, *window, "-f", "signed", "zone", ksk, zsk],
        cwd=tmp,
        check=True,
        capture_output=True,
    )
    return tmp / "signed", tmp / f"{ksk}.ds", tmp / f"{zsk}.private"


def _keygen(tmp: Path, algorithm: str, *flags: str) -> str:
    return subprocess.run(
        ["ldns-keygen", "-a", algorithm, *flags, "example.test"],
        cwd=tmp,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
