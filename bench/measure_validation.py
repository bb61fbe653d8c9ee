"""Full and incremental DNSSEC validation cost on a signed zone (issue 4).

    .venv/bin/python -m bench.measure_validation --records 100000

Makes a zone of N A records (plus apex), signs it with ldns-signzone (ECDSA P-256,
NSEC; --nsec3 for NSEC3), then measures:
- full validation: verify(snapshot) wall time and RRsets/s, one core;
- the same zone checked by Knot's kzonecheck (`-d on`, DNSSEC checks), when installed;
- an incremental IXFR validation of a one-record change (re-signed with the ZSK):
  verify(new, touched=...) as the secondary runs it, next to needs_full_check().
Query p99 during validation is not measured here (see bench/loadgen.py).
"""

from __future__ import annotations

import argparse
import base64
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataset
from cryptography.hazmat.primitives.asymmetric import ec

from authd.zone import names
from authd.zone.loader import load_zone_file
from authd.zone.snapshot import Record, Snapshot, sig_type
from authd.zone.verify import Policy, needs_full_check, touched_owners, verify


def _zone_text(records: int, serial: int) -> str:
    lines = [
        "$ORIGIN bench.test.",
        "$TTL 3600",
        f"@ SOA ns1 hostmaster {serial} 3600 900 1209600 300",
        "@ NS ns1",
        "ns1 A 192.0.2.53",
    ]
    lines.extend(f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(records))
    return "\n".join(lines) + "\n"


def _sign(tmp: Path, records: int, nsec3: bool) -> tuple[Path, str]:
    def keygen(*flags: str) -> str:
        return subprocess.run(
            ["ldns-keygen", "-a", "ECDSAP256SHA256", *flags, "bench.test"],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    ksk, zsk = keygen("-k"), keygen()
    (tmp / "zone").write_text(_zone_text(records, 1))
    extra = ["-n", "-s", "beef", "-t", "0"] if nsec3 else []
    started = time.monotonic()
    subprocess.run(
        ["ldns-signzone", *extra, "-e", "20360101000000", "-f", "signed", "zone", ksk, zsk],
        cwd=tmp,
        check=True,
        capture_output=True,
    )
    print(f"ldns-signzone: {time.monotonic() - started:.1f} s")
    return tmp / "signed", zsk


def _load(path: Path) -> Snapshot:
    return load_zone_file(path, "bench.test")


def _one_record_change(
    snapshot: Snapshot, tmp: Path, zsk: str
) -> tuple[Snapshot, list[Record], list[Record]]:
    """h0's A record changed and re-signed with the ZSK; SOA serial bumped and re-signed."""
    scalar = next(
        line.split(":", 1)[1].strip()
        for line in (tmp / f"{zsk}.private").read_text().splitlines()
        if line.startswith("PrivateKey:")
    )
    private = ec.derive_private_key(int.from_bytes(base64.b64decode(scalar), "big"), ec.SECP256R1())
    fields = (tmp / f"{zsk}.key").read_text().split()
    dnskey = dns.rdata.from_text("IN", "DNSKEY", " ".join(fields[fields.index("DNSKEY") + 1 :]))
    origin = dns.name.from_text("bench.test.")
    deleted: list[Record] = []
    added: list[Record] = []
    now = time.time()

    def replace(owner_text: str, rtype: int, new_rdata: dns.rdata.Rdata) -> None:
        owner = names.key_from_text(owner_text)
        node = snapshot.node(owner) or {}
        ttl, rdatas = node[rtype]
        deleted.extend((owner, rtype, ttl, r) for r in rdatas)
        deleted.extend((owner, 46, ttl, r) for r in node[sig_type(rtype)][1])
        rdataset = dns.rdataset.from_rdata(ttl, new_rdata)
        sig = dns.dnssec.sign(
            (dns.name.from_text(owner_text), rdataset),
            private,
            origin,
            dnskey,  # type: ignore[arg-type]
            inception=now - 3600,
            expiration=now + 30 * 86400,
        )
        added.append((owner, rtype, ttl, bytes(new_rdata.to_wire() or b"")))
        added.append((owner, 46, ttl, bytes(sig.to_wire() or b"")))

    soa = dns.rdata.from_text(
        "IN", "SOA", "ns1.bench.test. hostmaster.bench.test. 2 3600 900 1209600 300"
    )
    replace("bench.test.", 6, soa)
    replace("h0.bench.test.", 1, dns.rdata.from_text("IN", "A", "198.51.100.1"))
    return snapshot.apply_diff(deleted, added), deleted, added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--nsec3", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authd-validation-") as directory:
        tmp = Path(directory)
        signed, zsk = _sign(tmp, args.records, args.nsec3)
        started = time.monotonic()
        snapshot = _load(signed)
        print(f"load: {time.monotonic() - started:.1f} s, {snapshot.record_count} records")
        now = time.time()
        verdict = verify(snapshot, Policy(), now)
        assert verdict.ok, verdict.reason
        rate = verdict.rrsets_checked / verdict.seconds
        print(
            f"authd full validation: {verdict.seconds:.2f} s, "
            f"{verdict.rrsets_checked} RRsets, {rate:,.0f} RRsets/s"
        )
        kzonecheck = shutil.which("kzonecheck")
        if kzonecheck:
            started = time.monotonic()
            result = subprocess.run(
                [kzonecheck, "-o", "bench.test", "-d", "on", str(signed)],
                capture_output=True,
                text=True,
                check=False,
            )
            print(
                f"kzonecheck -d on: {time.monotonic() - started:.2f} s "
                f"(exit {result.returncode}) {result.stdout.strip()[:200]}"
            )
        else:
            print("kzonecheck: not installed")
        new, deleted, added = _one_record_change(snapshot, tmp, zsk)
        touched = touched_owners([(deleted, added)])
        full_needed = needs_full_check(new, touched, previous=snapshot)
        started = time.monotonic()
        incremental = verify(new, Policy(), now, touched=touched)
        elapsed = time.monotonic() - started
        assert incremental.ok, incremental.reason
        print(
            f"incremental one-record IXFR: {elapsed * 1000:.1f} ms "
            f"({incremental.rrsets_checked} RRsets), full pass needed: {full_needed}"
        )


if __name__ == "__main__":
    main()
