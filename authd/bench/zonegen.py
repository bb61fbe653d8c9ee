"""The benchmark zone: a synthetic zone of N names, and its NSEC / NSEC3 signed copies.

The issue's reference table was measured on a 1000-name zone; generating it keeps every
server on the same data without shipping a large file. Signing shells out to ldns-signzone
(Debian package ldnsutils), the same signer the unit-test zones use.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DEFAULT_ORIGIN = "bench.test."
DEFAULT_NAMES = 1000


class SigningError(RuntimeError):
    """The zone could not be signed (signer missing or failing); the message says why."""


def zone_text(origin: str = DEFAULT_ORIGIN, names: int = DEFAULT_NAMES, serial: int = 1) -> str:
    """A zone with `names` owner names below the apex, a realistic spread of types, a wildcard.

    Every name has an A record; every second one an AAAA, every fifth a TXT, every tenth an MX,
    so NODATA queries have types to miss and hits exercise answers of different sizes.
    """
    if not origin.endswith("."):
        origin += "."
    lines = [
        f"$ORIGIN {origin}",
        "$TTL 3600",
        f"@ IN SOA ns1 hostmaster {serial} 3600 900 1209600 300",
        "@ IN NS ns1",
        "@ IN NS ns2",
        "@ IN A 192.0.2.1",
        "ns1 IN A 192.0.2.53",
        "ns2 IN A 192.0.2.54",
        "*.wild IN A 192.0.2.99",
        '*.wild IN TXT "wildcard"',
    ]
    for index in range(names):
        owner = f"host{index:06d}"
        lines.append(f"{owner} IN A 10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}")
        if index % 2 == 0:
            lines.append(f"{owner} IN AAAA 2001:db8::{index >> 16:x}:{index & 0xFFFF:x}")
        if index % 5 == 0:
            lines.append(f'{owner} IN TXT "benchmark record {index}"')
        if index % 10 == 0:
            lines.append(f"{owner} IN MX 10 mail.{owner}")
    return "\n".join(lines) + "\n"


def write_zone(path: Path, origin: str = DEFAULT_ORIGIN, names: int = DEFAULT_NAMES) -> Path:
    path.write_text(zone_text(origin, names))
    return path


def sign_zone(unsigned: Path, origin: str, nsec3: bool, workdir: Path) -> Path:
    """Sign `unsigned` with a fresh ECDSA P-256 key; returns the path of the signed file.

    NSEC3 uses 0 extra iterations and no salt (RFC 9276's recommendation), so the proof cost
    measured is the server's, not an artificially expensive hash chain.
    """
    keygen = shutil.which("ldns-keygen")
    signer = shutil.which("ldns-signzone")
    if keygen is None or signer is None:
        raise SigningError("ldns-keygen / ldns-signzone not found (Debian package ldnsutils)")
    keydir = workdir / ("keys-nsec3" if nsec3 else "keys-nsec")
    keydir.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        [keygen, "-a", "ECDSAP256SHA256", "-k", origin],
        cwd=keydir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if made.returncode != 0:
        raise SigningError(f"ldns-keygen failed: {made.stderr.strip()}")
    key_base = keydir / made.stdout.strip()
    signed = workdir / (unsigned.name + (".nsec3.signed" if nsec3 else ".nsec.signed"))
    argv = [signer, "-e", "20400101000000", "-f", str(signed)]
    if nsec3:
        argv += ["-n", "-t", "0"]  # ldns-signzone uses no salt unless -s is given
    argv += [str(unsigned), str(key_base)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SigningError(f"ldns-signzone failed: {done.stderr.strip()}")
    return signed
