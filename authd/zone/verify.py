"""Verify a candidate version before it is stored or served (issue 4).

Order of checks, cheapest first, first rejection wins: structure (checks.py), limits,
DNSSEC (dnssec.py: signatures, NSEC/NSEC3 chain, trust anchor) and ZONEMD. The result is
a Verdict value; nothing here stores or publishes.

Full verification of a large zone is CPU-heavy, so it runs in a separate process at
lowered priority (ValidationPool), handed the candidate as a file in the store's format
rather than pickled. An IXFR is verified incrementally in the caller's process: only the
owners the diff touches, their signatures and the chain links around them (NSEC, or NSEC3
through the hash order), unless needs_full_check() says the change reaches further.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authd.zone import checks, names
from authd.zone.dnssec import (
    Anchor,
    Budget,
    Report,
    ZoneValidator,
    nsec3_diff_is_local,
    zonemd_digest,
)
from authd.zone.snapshot import (
    CNAME,
    DNAME,
    NODE_ENTRY,
    NS,
    SOA,
    Record,
    Snapshot,
    is_sig_type,
    sig_type,
    unpack_node,
)

DS_TYPE, DNSKEY_TYPE, NSEC3PARAM_TYPE, ZONEMD_TYPE = 43, 48, 51, 63
# An IXFR touching more owners than this, and more than 1/LARGE_DIFF_SHARE of the zone, is
# verified whole: owner by owner it costs about 1.2x a full pass per owner (50k-owner NSEC3
# zone, every owner touched: 12.1 s against 10.1 s), and the full pass runs in the pool.
LARGE_DIFF_OWNERS = 1024
LARGE_DIFF_SHARE = 8


@dataclass(frozen=True)
class Limits:
    max_records: int = 10_000_000
    max_bytes: int = 2**30
    max_rrset_records: int = 10_000
    max_types_per_name: int = 100


@dataclass(frozen=True)
class Policy:
    """How one zone is verified; picklable, built from its ZoneConfig."""

    dnssec: str = "auto"  # auto | required | off
    zonemd: str = "auto"  # auto | required | off
    anchors: tuple[tuple[int, bytes], ...] = ()  # (DS or DNSKEY type, rdata)
    clock_skew: int = 300
    unknown_algorithm: str = "reject"  # reject | warn
    limits: Limits = field(default_factory=Limits)
    budget: Budget = field(default_factory=Budget)

    def trust_anchors(self) -> list[Anchor]:
        return [
            Anchor.from_ds(rdata) if rtype == DS_TYPE else Anchor.from_dnskey(rdata)
            for rtype, rdata in self.anchors
        ]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    check: str = ""  # stable rule id for the metric label, e.g. "rrsig-invalid"
    reason: str = ""  # "www.example.com/A: RRSIG by key 12345 does not verify"
    warnings: tuple[str, ...] = ()
    signed: bool = False
    horizon: int | None = None  # earliest RRSIG expiration (unix time)
    seconds: float = 0.0
    rrsets_checked: int = 0


def _reject(check: str, reason: str, started: float, **extra: object) -> Verdict:
    return Verdict(False, check, reason, seconds=time.monotonic() - started, **extra)  # type: ignore[arg-type]


def _owner_limit(owner: bytes, blob: bytes, limits: Limits, started: float) -> Verdict | None:
    node = unpack_node(blob)
    data_types = [t for t in node if not is_sig_type(t)]
    if len(data_types) > limits.max_types_per_name:
        return _reject(
            "limit-types-per-name",
            f"{names.to_text(owner)}: {len(data_types)} types, more than "
            f"max-types-per-name {limits.max_types_per_name}",
            started,
        )
    for rtype, (_, rdatas) in node.items():
        if len(rdatas) > limits.max_rrset_records:
            return _reject(
                "limit-rrset-records",
                f"{names.to_text(owner)}: {len(rdatas)} records in one RRset (type "
                f"{rtype & 0xFFFF}), more than max-rrset-records {limits.max_rrset_records}",
                started,
            )
    return None


def _records_limit(snapshot: Snapshot, limits: Limits, started: float) -> Verdict | None:
    if snapshot.record_count > limits.max_records:
        return _reject(
            "limit-records",
            f"{snapshot.record_count} records, more than max-records {limits.max_records}",
            started,
        )
    return None


def _bytes_limit(total: int, limits: Limits, started: float) -> Verdict | None:
    if total > limits.max_bytes:
        return _reject(
            "limit-bytes", f"{total} bytes, more than max-bytes {limits.max_bytes}", started
        )
    return None


def check_limits(snapshot: Snapshot, owners: Iterable[bytes], limits: Limits) -> Verdict | None:
    """A rejection for the first limit crossed among `owners` (and zone totals), or None."""
    started = time.monotonic()
    over = _records_limit(snapshot, limits, started)
    if over is not None:
        return over
    total = 0
    for owner in owners:
        blob = snapshot.blob(owner)
        if blob is None:
            continue
        total += len(owner) + len(blob)
        over = _owner_limit(owner, blob, limits, started)
        if over is not None:
            return over
    return _bytes_limit(total, limits, started)


# The node rules shipped in checks.py look only at nodes holding one of these types, or at
# the owner name itself (check_inside_zone); every other node needs no unpacking.
_BUILTIN_NODE_CHECKS = (
    checks.check_inside_zone,
    checks.check_soa_placement,
    checks.check_cname,
    checks.check_dname,
    checks.check_glue,
)
_NODE_RULE_TYPES = frozenset({CNAME, SOA, DNAME, NS})
SIG_FLAG = sig_type(0)  # node types from here on hold RRSIGs


def _node_rejection(snapshot: Snapshot, owner: bytes, blob: bytes) -> checks.Problem | None:
    node = unpack_node(blob)
    for node_check in checks.NODE_CHECKS:
        for found in node_check(snapshot, owner, node):
            if found.severity is checks.Severity.REJECT:
                return found
    return None


def _structure_and_limits(
    snapshot: Snapshot, owners: Iterable[bytes], limits: Limits, started: float
) -> Verdict | None:
    """_structure then check_limits, in one pass over the owners, with the same verdict.

    A structure rejection anywhere outranks every limit, so the first limit crossed is
    remembered and the walk goes on for structure problems. The node blobs are walked
    by their entry headers; only nodes some rule looks at are unpacked.
    """
    for zone_check in checks.ZONE_CHECKS:
        for zone_problem in zone_check(snapshot):
            if zone_problem.severity is checks.Severity.REJECT:
                return _reject(zone_problem.rule, zone_problem.message, started)
    every_node = tuple(checks.NODE_CHECKS) != _BUILTIN_NODE_CHECKS
    origin = snapshot.origin
    is_subdomain = names.is_subdomain
    rule_types = _NODE_RULE_TYPES
    unpack_entry = NODE_ENTRY.unpack_from
    max_types = limits.max_types_per_name
    max_rrset = limits.max_rrset_records
    blobs = snapshot.blob
    limit: Verdict | None = None
    total = 0
    for owner in owners:
        blob = blobs(owner)
        if blob is None:
            continue
        end = len(blob)
        total += len(owner) + end
        pos = 0
        data_types = 0
        ruled = every_node
        big = False
        while pos < end:
            rtype, _, count = unpack_entry(blob, pos)
            pos += 10
            if rtype < SIG_FLAG:
                data_types += 1
                if rtype in rule_types:
                    ruled = True
            if count > max_rrset:
                big = True
            for _ in range(count):
                pos += 2 + ((blob[pos] << 8) | blob[pos + 1])
        if ruled or not is_subdomain(owner, origin):
            found = _node_rejection(snapshot, owner, blob)
            if found is not None:
                return _reject(found.rule, found.message, started)
        if limit is None and (big or data_types > max_types):
            limit = _owner_limit(owner, blob, limits, started)
    over = _records_limit(snapshot, limits, started)
    if over is not None:
        return over
    return limit if limit is not None else _bytes_limit(total, limits, started)


def _zonemd_only(snapshot: Snapshot, required: bool) -> tuple[str, str] | None:
    apex = snapshot.node(snapshot.origin) or {}
    entry = apex.get(ZONEMD_TYPE)
    if entry is None:
        return ("zonemd-missing", "ZONEMD is required but absent") if required else None
    for rdata in entry[1]:
        supported = len(rdata) > 6 and rdata[4] == 1 and rdata[5] in (1, 2)
        serial = int.from_bytes(rdata[:4], "big")
        if (
            supported
            and serial == snapshot.serial
            and rdata[6:] == zonemd_digest(snapshot, rdata[5])
        ):
            return None
    return ("zonemd-mismatch", "ZONEMD digest does not match the zone content")


def verify(
    snapshot: Snapshot,
    policy: Policy,
    now: float,
    *,
    was_signed: bool = False,
    forced: bool = False,
    touched: Sequence[bytes] | None = None,
) -> Verdict:
    """Verify a version; `touched` limits the per-owner work to an IXFR's owners."""
    started = time.monotonic()
    owners = snapshot.owners() if touched is None else touched
    over = _structure_and_limits(snapshot, owners, policy.limits, started)
    if over is not None:
        return over
    if policy.dnssec == "off":
        zonemd = (
            _zonemd_only(snapshot, policy.zonemd == "required") if policy.zonemd != "off" else None
        )
        if zonemd is not None:
            return _reject(
                zonemd[0], f"{names.to_text(snapshot.origin)}/ZONEMD: {zonemd[1]}", started
            )
        return Verdict(True, seconds=time.monotonic() - started)
    validator = ZoneValidator(
        snapshot,
        now=now,
        anchors=policy.trust_anchors(),
        skew=policy.clock_skew,
        budget=policy.budget,
        zonemd_required=policy.zonemd == "required",
        reject_unknown_algorithm=policy.unknown_algorithm == "reject",
    )
    report: Report = validator.validate() if touched is None else validator.validate_owners(touched)
    warnings = tuple(str(w) for w in report.warnings)
    if report.errors:
        first = report.errors[0]
        return _reject(
            first.check,
            str(first),
            started,
            warnings=warnings,
            signed=report.signed,
            rrsets_checked=report.rrsets_checked,
        )
    if not report.signed:
        must_be_signed = policy.dnssec == "required" or bool(policy.anchors)
        if must_be_signed or (was_signed and not forced):
            why = (
                "dnssec-validation is required"
                if must_be_signed
                else "the zone was published signed; an unsigned version would make every "
                "validating resolver fail (retransfer to force it)"
            )
            return _reject(
                "unsigned",
                f"{names.to_text(snapshot.origin)}/DNSKEY: the version is not signed, but {why}",
                started,
            )
    return Verdict(
        True,
        warnings=warnings,
        signed=report.signed,
        horizon=report.horizon,
        seconds=time.monotonic() - started,
        rrsets_checked=report.rrsets_checked,
    )


def touched_owners(steps: Iterable[tuple[Sequence[Record], Sequence[Record]]]) -> list[bytes]:
    """Every owner an IXFR's (deleted, added) steps change."""
    seen: dict[bytes, None] = {}
    for deleted, added in steps:
        for record in (*deleted, *added):
            seen[record[0]] = None
    return list(seen)


def needs_full_check(
    snapshot: Snapshot, touched: Iterable[bytes], previous: Snapshot | None = None
) -> bool:
    """Whether an IXFR must be re-verified whole rather than around its touched owners.

    Key changes reach every signature; ZONEMD covers the whole zone anyway; a change of
    NSEC3PARAM rehashes the whole chain. Every IXFR touches the apex (its SOA), so with
    the `previous` version at hand only a change of the apex DNSKEY, ZONEMD or NSEC3PARAM
    RRset forces the full pass, or, for NSEC3, a changed NSEC3 that the touched owners
    cannot account for (dnssec.nsec3_diff_is_local). Without it, any signed apex does,
    and so does any NSEC3 zone. A diff that touches a large share of the zone does too.
    """
    touched = list(touched)
    if len(touched) > max(LARGE_DIFF_OWNERS, len(snapshot) // LARGE_DIFF_SHARE):
        return True  # checking so many owners one by one costs about a full pass
    origin = snapshot.origin
    apex = snapshot.node(origin) or {}
    nsec3 = snapshot.nsec3_params is not None or NSEC3PARAM_TYPE in apex
    if previous is None:
        if nsec3:
            return True
        return origin in touched and (DNSKEY_TYPE in apex or ZONEMD_TYPE in apex)
    if origin in touched:
        before = previous.node(origin) or {}
        if ZONEMD_TYPE in apex or any(
            apex.get(rtype, (0, ()))[1] != before.get(rtype, (0, ()))[1]
            for rtype in (DNSKEY_TYPE, ZONEMD_TYPE, NSEC3PARAM_TYPE)
        ):
            return True
    return nsec3 and DNSKEY_TYPE in apex and not nsec3_diff_is_local(previous, snapshot, touched)


# -- the pool (the I/O edge) ---------------------------------------------------------------


def _lower_priority(nice: int, idle: bool) -> None:
    if nice:
        os.nice(nice)
    if idle:
        # Nice alone let a validation sharing a worker's core lift query p99 up to 3x under
        # load; SCHED_IDLE kept it at 1x (bench.measure_validation --with-load).
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _verify_file(
    path: str, origin: bytes, policy: Policy, now: float, was_signed: bool, forced: bool
) -> Verdict:
    from authd.zone.store import FullCopyError, decode_full

    data = Path(path).read_bytes()
    try:
        snapshot, _, _ = decode_full(data, origin)
    except FullCopyError as exc:
        return Verdict(False, "internal", f"candidate file unreadable: {exc}")
    return verify(snapshot, policy, now, was_signed=was_signed, forced=forced)


class ValidationPool:
    """Full verifications in separate, lower-priority processes (never the serving ones)."""

    def __init__(self, processes: int = 1, nice: int = 10, idle: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=max(1, processes),
            mp_context=context,
            initializer=_lower_priority,
            initargs=(nice, idle),
        )

    async def verify_file(
        self, path: Path, origin: bytes, policy: Policy, now: float, was_signed: bool, forced: bool
    ) -> Verdict:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, _verify_file, str(path), origin, policy, now, was_signed, forced
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
