"""Full and incremental DNSSEC validation cost on a signed zone, against Knot (issue 4).

    .venv/bin/python -m authd.bench.measure_validation --records 200000 [--with-load]
    .venv/bin/python -m authd.bench.measure_validation --records 1000000 --workdir /tmp/v1m

Makes a zone of N A records (plus apex), signs it with ldns-signzone (ECDSA P-256, NSEC;
--nsec3 for NSEC3; with --workdir a signed zone left there by an earlier run is reused), then
measures:
- authd: verify(snapshot) of the whole zone in this process (one core): wall and CPU seconds,
  RRsets per CPU-second;
- Knot: knotd loads the same file twice, with the zone option `dnssec-validation: on` and
  off, each timed from start until the log says the zone is loaded, with knotd's CPU time
  (utime+stime of all its threads, /proc) read at that moment. Knot's validation cost is
  (on) - (off), in wall and CPU seconds. knotd runs with `background-workers: 1`,
  `adjust-threads: 1` and the default single signing thread (which also does validation),
  one UDP and one TCP worker, so its validation uses one core like authd's. The ratio is
  authd CPU seconds / Knot CPU seconds for the same RRsets (target: at most 2). A copy of
  the zone with one broken signature must make knotd refuse the zone: a sanity line says
  whether it did, so the "on" figure is known to include a real validation;
- an incremental IXFR validation of a one-record change (re-signed with the ZSK):
  verify(new, touched=...) as the secondary runs it, next to needs_full_check();
- with --with-load: query p99 of authd serving a small zone at a fixed rate, idle and while
  the large zone is validated by ValidationPool (see authd/bench/measure_validation_load.py).

Pure parts (zone text, Knot config, Knot log, signature breaking, arithmetic) come first;
processes are started only below them. Every knotd run is bounded (--knot-timeout) and
stopped by its PID.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataset
from cryptography.hazmat.primitives.asymmetric import ec

from authd.bench import cpu, peers
from authd.zone import names
from authd.zone.loader import load_zone_file
from authd.zone.snapshot import Record, Snapshot, sig_type
from authd.zone.verify import Policy, needs_full_check, touched_owners, verify

ORIGIN = "bench.test."
T = TypeVar("T")
_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# -- pure: the zone, Knot's config and log, arithmetic ----------------------------------------


def zone_text(records: int, serial: int) -> str:
    lines = [
        f"$ORIGIN {ORIGIN}",
        "$TTL 3600",
        f"@ SOA ns1 hostmaster {serial} 3600 900 1209600 300",
        "@ NS ns1",
        "ns1 A 192.0.2.53",
    ]
    lines.extend(f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(records))
    return "\n".join(lines) + "\n"


def knot_config(workdir: Path, zone_file: Path, port: int, validation: bool) -> str:
    """knotd loading one zone file, everything that could add threads set to one.

    No semantic checks (they would add work to both runs), no journal, no zone file sync.
    """
    return f"""server:
    rundir: "{workdir}"
    pidfile: "{workdir}/knot.pid"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: "{workdir}/knot.sock"
log:
  - target: stderr
    any: info
database:
    storage: "{workdir}/db"
template:
  - id: default
    storage: "{workdir}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
    adjust-threads: 1
zone:
  - domain: {ORIGIN}
    file: "{zone_file}"
    dnssec-validation: {"on" if validation else "off"}
"""


@dataclass(frozen=True)
class KnotLog:
    """What knotd's log says so far about loading the zone."""

    parsed: bool = False  # "zone file parsed"
    validated: bool = False  # "DNSSEC, validation successful"
    loaded: bool = False  # "loaded, serial none -> N"
    failure: str = ""  # the message of "DNSSEC, validation failed (...)" or a failed load
    hint: str = ""  # "DNSSEC, validation hint: OWNER TYPE"

    @property
    def done(self) -> bool:
        return self.loaded or bool(self.failure)


def parse_knot_log(text: str) -> KnotLog:
    state = KnotLog()
    for line in text.splitlines():
        if "zone file parsed" in line:
            state = replace(state, parsed=True)
        elif "DNSSEC, validation successful" in line:
            state = replace(state, validated=True)
        elif "DNSSEC, validation failed" in line:
            state = replace(state, failure=line.split("validation failed", 1)[1].strip(" ()"))
        elif "DNSSEC, validation hint:" in line:
            state = replace(state, hint=line.split("validation hint:", 1)[1].strip())
        elif "zone event 'load' failed" in line and not state.failure:
            state = replace(state, failure=line.split("failed", 1)[1].strip(" ()"))
        elif "] loaded, serial" in line:
            state = replace(state, loaded=True)
    return state


def is_rrsig_of(line: str, owner: str, covered: str) -> bool:
    """True for a zone-file line (ldns-signzone's layout) of owner's RRSIG over `covered`."""
    fields = line.split()
    return len(fields) > 5 and fields[0] == owner and fields[3] == "RRSIG" and fields[4] == covered


def last_owner(records: int) -> str:
    """The zone's last data owner in canonical order (h9, h99, ...: not h{records - 1}), so a
    validator that walks the zone in order meets a signature broken there last."""
    return max((f"h{i}" for i in range(records)), key=lambda label: label.encode()) + "." + ORIGIN


def break_signature(line: str) -> str:
    """The RRSIG line with one base64 character of its signature changed (same length)."""
    text = line.rstrip("\n")
    start = max(text.rfind(" "), text.rfind("\t")) + 1  # the signature is the last field
    middle = start + (len(text) - start) // 2
    old = text[middle]
    new = _BASE64[(_BASE64.index(old) + 1) % 64] if old in _BASE64 else "A"
    return text[:middle] + new + text[middle + 1 :] + "\n"


@dataclass(frozen=True)
class KnotLoad:
    """One knotd start: from exec to the zone loaded (or refused)."""

    validation: bool
    wall: float  # seconds from start until the log says loaded / failed
    cpu: float  # knotd's CPU seconds at that moment
    parsed_wall: float  # the same two at "zone file parsed"
    parsed_cpu: float
    log: KnotLog


def validation_cost(on: KnotLoad, off: KnotLoad) -> tuple[float, float]:
    """(wall, CPU) seconds Knot spends on validation: the run with it minus the run without."""
    return on.wall - off.wall, on.cpu - off.cpu


def per_second(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def knot_ratio(authd_cpu: float, knot_cpu: float) -> float | None:
    """How many times Knot's CPU time authd needs for the same zone (the target is <= 2)."""
    return authd_cpu / knot_cpu if knot_cpu > 0 else None


# -- signing ---------------------------------------------------------------------------------


def sign(tmp: Path, records: int, nsec3: bool) -> tuple[Path, str]:
    """(signed zone, ZSK base name); reused when tmp already holds them for these records."""
    signed, zsk_name = tmp / f"signed-{records}{'-nsec3' if nsec3 else ''}", tmp / "zsk-name"
    if signed.exists() and zsk_name.exists():
        print(f"reusing {signed}")
        return signed, zsk_name.read_text().strip()

    def keygen(*flags: str) -> str:
        return subprocess.run(
            ["ldns-keygen", "-a", "ECDSAP256SHA256", *flags, "bench.test"],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    ksk, zsk = keygen("-k"), keygen()
    (tmp / "zone").write_text(zone_text(records, 1))
    extra = ["-n", "-s", "beef", "-t", "0"] if nsec3 else []
    started = time.monotonic()
    subprocess.run(
        ["ldns-signzone", *extra, "-e", "20360101000000", "-f", str(signed), "zone", ksk, zsk],
        cwd=tmp,
        check=True,
        capture_output=True,
    )
    print(f"ldns-signzone: {time.monotonic() - started:.1f} s")
    zsk_name.write_text(zsk + "\n")
    return signed, zsk


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
    origin = dns.name.from_text(ORIGIN)
    deleted: list[Record] = []
    added: list[Record] = []
    now = time.time()

    def resign(owner_text: str, rtype: int, new_rdata: dns.rdata.Rdata) -> None:
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
    resign(ORIGIN, 6, soa)
    resign("h0.bench.test.", 1, dns.rdata.from_text("IN", "A", "198.51.100.1"))
    return snapshot.apply_diff(deleted, added), deleted, added


# -- knotd ----------------------------------------------------------------------------------


class KnotError(RuntimeError):
    """knotd exited or did not finish loading in time; the message has its log tail."""


def break_copy(signed: Path, out: Path, owner: str) -> bool:
    """Copy `signed` to `out` with owner's RRSIG over A broken; False if none was found."""
    broken = False
    with signed.open() as source, out.open("w") as target:
        for line in source:
            if not broken and is_rrsig_of(line, owner, "A"):
                line, broken = break_signature(line), True
            target.write(line)
    return broken


def time_knot_load(zone_file: Path, workdir: Path, validation: bool, timeout: float) -> KnotLoad:
    """Start knotd on zone_file and time it until the zone is loaded or refused."""
    knotd = peers.find_program("knot")
    if knotd is None:
        raise KnotError("knotd not found (Debian package knot)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "db").mkdir(exist_ok=True)
    config = workdir / "knot.conf"
    config.write_text(knot_config(workdir, zone_file, peers.free_port("127.0.0.1"), validation))
    log_path = workdir / "stderr.log"
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [knotd, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    server = peers.RunningServer("knot", "127.0.0.1", 0, process, workdir, set())
    try:
        return _wait_loaded(server, log_path, started, validation, timeout)
    finally:
        server.stop()


def _wait_loaded(
    server: peers.RunningServer, log_path: Path, started: float, validation: bool, timeout: float
) -> KnotLoad:
    # knotd writes its log to an unbuffered stderr: a line is in the file when it happens.
    parsed: tuple[float, float] | None = None
    while time.monotonic() - started < timeout:
        state = parse_knot_log(log_path.read_text(errors="replace"))
        now = time.monotonic() - started
        if state.parsed and parsed is None:
            parsed = (now, cpu.tree_cpu_seconds(server.pid))
        if state.done:
            used = cpu.tree_cpu_seconds(server.pid)
            parsed = parsed or (now, used)
            return KnotLoad(validation, now, used, parsed[0], parsed[1], state)
        if server.process.poll() is not None:
            raise KnotError(f"knotd exited {server.process.returncode}:\n{server.log_tail()}")
        time.sleep(0.01)
    raise KnotError(f"knotd did not load the zone within {timeout:.0f} s:\n{server.log_tail()}")


def _knot_line(run: KnotLoad) -> str:
    verdict = "validated" if run.log.validated else "loaded" if run.log.loaded else "refused"
    return (
        f"knotd dnssec-validation {'on ' if run.validation else 'off'}: start to {verdict} "
        f"{run.wall:.2f} s wall, {run.cpu:.2f} s CPU (after the parse: "
        f"{run.wall - run.parsed_wall:.2f} s wall, {run.cpu - run.parsed_cpu:.2f} s CPU)"
    )


def measure_knot(
    signed: Path, tmp: Path, records: int, rrsets: int, authd_cpu: float, timeout: float
) -> None:
    """Knot's validation cost on the signed zone, its sanity check, and the ratio to authd."""
    off = time_knot_load(signed, tmp / "knot-off", False, timeout)
    print(_knot_line(off))
    on = time_knot_load(signed, tmp / "knot-on", True, timeout)
    print(_knot_line(on))
    wall, cpu_seconds = validation_cost(on, off)
    knot_rate = per_second(rrsets, cpu_seconds)
    authd_rate = per_second(rrsets, authd_cpu)
    ratio = knot_ratio(authd_cpu, cpu_seconds)
    print(
        f"Knot validation cost (on - off): {wall:.2f} s wall, {cpu_seconds:.2f} s CPU, "
        + (f"{knot_rate:,.0f} RRsets per CPU-second" if knot_rate else "not measurable")
    )
    if authd_rate and ratio:
        print(
            f"authd {authd_rate:,.0f} vs Knot {knot_rate:,.0f} RRsets per CPU-second: "
            f"authd needs {ratio:.2f}x Knot's CPU time (target <= 2x per core)"
        )
    owner = last_owner(records)
    broken = tmp / "signed-broken"
    if not break_copy(signed, broken, owner):
        print(f"knotd sanity: no RRSIG over {owner} A found to break")
        return
    refused = time_knot_load(broken, tmp / "knot-broken", True, timeout)
    broken.unlink()
    ok = bool(refused.log.failure) and not refused.log.loaded and owner in refused.log.hint
    print(
        f"knotd sanity ({'OK' if ok else 'FAILED'}): one broken signature at {owner} A -> "
        f"{'refused' if refused.log.failure else 'loaded'} after {refused.wall:.2f} s: "
        f"{refused.log.failure!r}, hint {refused.log.hint!r}"
    )


# -- main ----------------------------------------------------------------------------------


def _timed(work: Callable[[], T]) -> tuple[T, float, float]:
    """work's result, its wall seconds and this process's CPU seconds while it ran."""
    wall, used = time.monotonic(), time.process_time()
    result = work()
    return result, time.monotonic() - wall, time.process_time() - used


def run(args: argparse.Namespace, tmp: Path) -> None:
    signed, zsk = sign(tmp, args.records, args.nsec3)
    started = time.monotonic()
    snapshot = _load(signed)
    print(f"load: {time.monotonic() - started:.1f} s, {snapshot.record_count} records")
    now = time.time()
    verdict, wall, used = _timed(lambda: verify(snapshot, Policy(), now))
    assert verdict.ok, verdict.reason
    print(
        f"authd full validation: {wall:.2f} s wall, {used:.2f} s CPU, "
        f"{verdict.rrsets_checked} RRsets, {verdict.rrsets_checked / used:,.0f} RRsets per CPU-s"
    )
    if args.knot and peers.find_program("knot"):
        measure_knot(signed, tmp, args.records, verdict.rrsets_checked, used, args.knot_timeout)
    elif args.knot:
        print("knotd: not installed")
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
    if args.with_load:
        from authd.bench import measure_validation_load as load

        load.report(load.measure(snapshot, tmp / "load", load.plan_from(args), print))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--nsec3", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the signed zone here")
    parser.add_argument("--no-knot", dest="knot", action="store_false")
    parser.add_argument("--knot-timeout", type=float, default=900.0, help="per knotd run")
    parser.add_argument("--with-load", action="store_true", help="query p99 during validation")
    from authd.bench.measure_validation_load import add_arguments

    add_arguments(parser)
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args, args.workdir)
        return
    with tempfile.TemporaryDirectory(prefix="authd-validation-") as directory:
        run(args, Path(directory))


if __name__ == "__main__":
    main()
