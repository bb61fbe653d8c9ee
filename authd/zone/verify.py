"""Verify a candidate version before it is stored or served (issue 4).

Order of checks, cheapest first, first rejection wins: structure (checks.py), limits,
DNSSEC (dnssec.py: signatures, NSEC/NSEC3 chain, trust anchor) and ZONEMD. The result is
a Verdict value; nothing here stores or publishes.

Full verification of a large zone is CPU-heavy, so it runs in a separate process at
lowered priority (ValidationPool), handed the candidate as a file in the store's format
rather than pickled. An IXFR is verified incrementally in the caller's process: only the
owners the diff touches, their signatures and the chain links around them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authd.zone import checks, names
from authd.zone.dnssec import Anchor, Budget, Report, ZoneValidator, zonemd_digest
from authd.zone.snapshot import Record, Snapshot, is_sig_type, unpack_node

DS_TYPE, DNSKEY_TYPE, ZONEMD_TYPE = 43, 48, 63


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


def check_limits(snapshot: Snapshot, owners: Iterable[bytes], limits: Limits) -> Verdict | None:
    """A rejection for the first limit crossed among `owners` (and zone totals), or None."""
    started = time.monotonic()
    if snapshot.record_count > limits.max_records:
        return _reject(
            "limit-records",
            f"{snapshot.record_count} records, more than max-records {limits.max_records}",
            started,
        )
    total = 0
    for owner in owners:
        blob = snapshot.blob(owner)
        if blob is None:
            continue
        total += len(owner) + len(blob)
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
    if total > limits.max_bytes:
        return _reject(
            "limit-bytes", f"{total} bytes, more than max-bytes {limits.max_bytes}", started
        )
    return None


def _structure(snapshot: Snapshot, owners: Iterable[bytes] | None) -> checks.Problem | None:
    problems: list[checks.Problem] = []
    for zone_check in checks.ZONE_CHECKS:
        problems.extend(zone_check(snapshot))
    selected = snapshot.owners() if owners is None else owners
    for owner in selected:
        blob = snapshot.blob(owner)
        if blob is None:
            continue
        node = unpack_node(blob)
        for node_check in checks.NODE_CHECKS:
            problems.extend(node_check(snapshot, owner, node))
    return next((p for p in problems if p.severity is checks.Severity.REJECT), None)


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
    problem = _structure(snapshot, touched)
    if problem is not None:
        return _reject(problem.rule, problem.message, started)
    owners = snapshot.owners() if touched is None else touched
    over = check_limits(snapshot, owners, policy.limits)
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
    """An IXFR that changes the keys, ZONEMD or an NSEC3 zone is re-verified whole.

    Key changes reach every signature; ZONEMD covers the whole zone anyway; the NSEC3
    chain links cannot be checked from the touched owners alone. Every IXFR touches the
    apex (its SOA), so with the `previous` version at hand only a change of the apex
    DNSKEY or ZONEMD RRset forces the full pass; without it, any signed apex does.
    """
    if snapshot.nsec3_params is not None:
        return True
    origin = snapshot.origin
    if origin not in touched:
        return False
    apex = snapshot.node(origin) or {}
    if previous is None:
        return DNSKEY_TYPE in apex or ZONEMD_TYPE in apex
    before = previous.node(origin) or {}
    return any(
        apex.get(rtype, (0, ()))[1] != before.get(rtype, (0, ()))[1]
        for rtype in (DNSKEY_TYPE, ZONEMD_TYPE)
    ) or (ZONEMD_TYPE in apex)


# -- the pool (the I/O edge) ---------------------------------------------------------------


def _lower_priority(nice: int) -> None:
    if nice:
        os.nice(nice)


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

    def __init__(self, processes: int = 1, nice: int = 10) -> None:
        context = multiprocessing.get_context("spawn")
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=max(1, processes),
            mp_context=context,
            initializer=_lower_priority,
            initargs=(nice,),
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
