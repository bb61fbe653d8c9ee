"""Structural checks on a candidate zone version, before it may be served.

Run on every version a master file or a transfer produces. One pass over the
nodes (O(zone)); each rule is a small function in one of two registries:

- ZONE_CHECKS look at the snapshot as a whole (apex SOA, apex NS);
- NODE_CHECKS look at one owner and its RRsets at a time.

To add a rule (a limit, say), write a function of the matching shape and append
it to its registry; check_structure runs them all and returns every problem, so
an operator sees the whole list at once. Severity REJECT refuses the version,
WARN is logged and the version is served.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import dns.rdatatype

from authd.zone import names
from authd.zone.snapshot import (
    CNAME,
    DNAME,
    NS,
    NSEC,
    NSEC3,
    SOA,
    Node,
    Snapshot,
    is_sig_type,
    unpack_node,
)

A, AAAA = 1, 28


class Severity(enum.Enum):
    REJECT = "reject"
    WARN = "warn"


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    owner: bytes  # name key
    rtype: int | None  # the type concerned, None for a rule about the name itself
    rule: str  # short stable identifier, e.g. "cname-other-data" (for logs and metrics)
    message: str  # "www.example.com/CNAME: CNAME beside other data"

    def __str__(self) -> str:
        return self.message


def _subject(owner: bytes, rtype: int | None) -> str:
    text = names.display(owner)
    if rtype is None:
        return text
    return f"{text}/{dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rtype))}"


def problem(severity: Severity, owner: bytes, rtype: int | None, rule: str, what: str) -> Problem:
    return Problem(severity, owner, rtype, rule, f"{_subject(owner, rtype)}: {what}")


def reject(owner: bytes, rtype: int | None, rule: str, what: str) -> Problem:
    return problem(Severity.REJECT, owner, rtype, rule, what)


def warn(owner: bytes, rtype: int | None, rule: str, what: str) -> Problem:
    return problem(Severity.WARN, owner, rtype, rule, what)


ZoneCheck = Callable[[Snapshot], Iterable[Problem]]
NodeCheck = Callable[[Snapshot, bytes, Node], Iterable[Problem]]


# -- zone-wide rules ---------------------------------------------------------------------


def check_apex(snapshot: Snapshot) -> Iterator[Problem]:
    origin = snapshot.origin
    blob = snapshot.blob(origin)
    apex = unpack_node(blob) if blob is not None else {}
    soa = apex.get(SOA)
    if soa is None or len(soa[1]) != 1:
        count = 0 if soa is None else len(soa[1])
        yield reject(origin, SOA, "soa-count", f"the apex must hold exactly one SOA, not {count}")
    if NS not in apex:
        yield reject(origin, NS, "apex-ns", "the apex has no NS records")


ZONE_CHECKS: list[ZoneCheck] = [check_apex]


# -- per-owner rules ---------------------------------------------------------------------

# RFC 2181 10.1 and RFC 4035 2.5: only DNSSEC records may share an owner with a CNAME.
_CNAME_COMPANIONS = frozenset({CNAME, NSEC, NSEC3})


def check_inside_zone(snapshot: Snapshot, owner: bytes, node: Node) -> Iterator[Problem]:
    if not names.is_subdomain(owner, snapshot.origin):
        yield reject(
            owner, None, "out-of-zone", f"outside the zone {names.to_text(snapshot.origin)}"
        )


def check_cname(snapshot: Snapshot, owner: bytes, node: Node) -> Iterator[Problem]:
    if CNAME not in node:
        return
    others = [t for t in node if not is_sig_type(t) and t not in _CNAME_COMPANIONS]
    if others:
        yield reject(owner, CNAME, "cname-other-data", "CNAME beside other data")
    if len(node[CNAME][1]) > 1:
        yield reject(owner, CNAME, "cname-multiple", "more than one CNAME record")


def check_soa_placement(snapshot: Snapshot, owner: bytes, node: Node) -> Iterator[Problem]:
    if SOA in node and owner != snapshot.origin:
        yield reject(owner, SOA, "soa-not-apex", "SOA record below the zone apex")


def check_dname(snapshot: Snapshot, owner: bytes, node: Node) -> Iterator[Problem]:
    if DNAME in node and snapshot.has_descendants(owner):
        yield warn(owner, DNAME, "dname-descendants", "names below a DNAME are never reached")


def check_glue(snapshot: Snapshot, owner: bytes, node: Node) -> Iterator[Problem]:
    """Delegation NS targets below a cut of this zone need addresses (glue) here."""
    if NS not in node or owner == snapshot.origin:
        return
    for rdata in node[NS][1]:
        try:
            length = names.wire_name_length(rdata, 0)
        except IndexError:  # unterminated: only a corrupted version holds one
            yield reject(owner, NS, "malformed-rdata", "NS target is not a domain name")
            continue
        target = names.lower(rdata[:length])
        if not names.is_subdomain(target, snapshot.origin) or not _below_cut(snapshot, target):
            continue
        target_blob = snapshot.blob(target)
        target_node = unpack_node(target_blob) if target_blob is not None else {}
        if A not in target_node and AAAA not in target_node:
            yield warn(owner, NS, "missing-glue", f"no glue address for {names.to_text(target)}")


def _below_cut(snapshot: Snapshot, key: bytes) -> bool:
    if key in snapshot.cuts:
        return True
    return any(a in snapshot.cuts for a in names.ancestors(key, snapshot.origin))


NODE_CHECKS: list[NodeCheck] = [
    check_inside_zone,
    check_soa_placement,
    check_cname,
    check_dname,
    check_glue,
]


def check_structure(snapshot: Snapshot) -> list[Problem]:
    """Every problem found, zone-wide ones first, then by owner."""
    problems: list[Problem] = []
    for zone_check in ZONE_CHECKS:
        problems.extend(zone_check(snapshot))
    node_checks = NODE_CHECKS
    for owner, blob in snapshot.items():
        node = unpack_node(blob)
        for node_check in node_checks:
            problems.extend(node_check(snapshot, owner, node))
    return problems


def rejections(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.REJECT]
