"""The zones both servers serve: one rich template under several origins, some signed.

Signing happens in the test session (keys are generated fresh each run); what the corpus
needs to know ahead of time (origins, NSEC3 salt and iterations) is fixed here.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

ZONES_DIR = Path(__file__).parent / "zones"
RICH_TEMPLATE = ZONES_DIR / "rich.zone"

# DNSSEC algorithm numbers (RFC 8624) and how each tool spells them.
ECDSAP256SHA256 = 13
RSASHA256 = 8
_LDNS_ALG = {ECDSAP256SHA256: "ECDSAP256SHA256", RSASHA256: "RSASHA256"}
_BIND_ALG = {ECDSAP256SHA256: "ECDSAP256SHA256", RSASHA256: "RSASHA256"}


@dataclass(frozen=True)
class ZoneSpec:
    """One served zone: its origin and how (whether) it is signed."""

    origin: str  # without the trailing dot
    signer: str = ""  # "" (unsigned), "ldns" (ldns-signzone) or "bind" (dnssec-signzone)
    algorithm: int = ECDSAP256SHA256
    nsec3: bool = False
    opt_out: bool = False
    salt: str = ""  # hex, "" = no salt (RFC 9276)
    iterations: int = 0

    @property
    def signed(self) -> bool:
        return self.signer != ""


ZONE_SPECS: tuple[ZoneSpec, ...] = (
    ZoneSpec("plain.test"),
    ZoneSpec("nsec.test", signer="ldns", algorithm=ECDSAP256SHA256),
    ZoneSpec("nsec3.test", signer="ldns", algorithm=ECDSAP256SHA256, nsec3=True, salt="cafe"),
    ZoneSpec("optout.test", signer="ldns", algorithm=RSASHA256, nsec3=True, opt_out=True),
    ZoneSpec("bind.test", signer="bind", algorithm=RSASHA256, nsec3=True, opt_out=True),
)

# The binaries the zone setup needs, per signer.
SIGNER_BINARIES = {
    "ldns": ("ldns-keygen", "ldns-signzone"),
    "bind": ("dnssec-keygen", "dnssec-signzone"),
}


def render_unsigned(spec: ZoneSpec, directory: Path) -> Path:
    """Write the template under spec's origin; returns the master file path."""
    path = directory / f"{spec.origin}.zone"
    path.write_text(f"$ORIGIN {spec.origin}.\n" + RICH_TEMPLATE.read_text())
    return path


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def _ldns_sign(spec: ZoneSpec, unsigned: Path, directory: Path) -> Path:
    alg = _LDNS_ALG[spec.algorithm]
    size = ["-b", "2048"] if spec.algorithm == RSASHA256 else []
    keygen = ["ldns-keygen", "-r", "/dev/urandom", "-a", alg, *size]
    ksk = _run([*keygen, "-k", spec.origin], directory)
    zsk = _run([*keygen, spec.origin], directory)
    signed = directory / f"{spec.origin}.signed"
    nsec3 = ["-n", "-t", str(spec.iterations)] if spec.nsec3 else []
    if spec.nsec3 and spec.salt:
        nsec3 += ["-s", spec.salt]
    if spec.opt_out:
        nsec3.append("-p")
    _run(
        ["ldns-signzone", *nsec3, "-o", spec.origin, "-f", str(signed), str(unsigned), ksk, zsk],
        directory,
    )
    return signed


def _bind_sign(spec: ZoneSpec, unsigned: Path, directory: Path) -> Path:
    alg = _BIND_ALG[spec.algorithm]
    size = ["-b", "2048"] if spec.algorithm == RSASHA256 else []
    keygen = ["dnssec-keygen", "-q", "-K", str(directory), "-a", alg, *size]
    _run([*keygen, "-f", "KSK", spec.origin], directory)
    _run([*keygen, spec.origin], directory)
    signed = directory / f"{spec.origin}.signed"
    nsec3: list[str] = []
    if spec.nsec3:
        nsec3 = ["-3", spec.salt or "-", "-H", str(spec.iterations)]
        if spec.opt_out:
            nsec3.append("-A")
    _run(
        [
            *("dnssec-signzone", "-S", "-K", str(directory), *nsec3),
            *("-o", spec.origin, "-f", str(signed), str(unsigned)),
        ],
        directory,
    )
    return signed


def build_zone(spec: ZoneSpec, directory: Path) -> Path:
    """The master file both servers load for spec (signed in `directory` when asked)."""
    directory.mkdir(parents=True, exist_ok=True)
    unsigned = render_unsigned(spec, directory)
    if spec.signer == "ldns":
        return _ldns_sign(spec, unsigned, directory)
    if spec.signer == "bind":
        return _bind_sign(spec, unsigned, directory)
    return unsigned
