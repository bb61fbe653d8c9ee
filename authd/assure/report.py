"""The provider-independence report (`authd zone report`): from answers already gathered to
findings and one verdict line per finding. Pure: run.py does the asking.

Every finding carries a verdict word:
  no       the extra NS set would not carry the domain without the provider
  at risk  it would, for now, but something erodes it (drift, a short signature horizon)
  unknown  a fact could not be checked (no resolver, a peer or the parent did not answer)
The report's own verdict is "no" when any finding says no, else "unknown" when any says
unknown, else "yes".

Finding kinds (stable, for scripts): shared-operator, shared-prefix, ns-inside-provider-zone,
ns-zone-unchecked, own-ns-unknown, signatures-depend-on-provider, signatures-expire-soon,
expired, never-refreshed, the peer kinds of drift.py (serial-behind, serial-ahead,
rrset-differs, ns-set-differs, dnskey-differs, unreachable), the kinds of delegation.py
(own-ns-not-delegated, own-ns-not-in-zone, glue-differs, ds-mismatch, ds-without-keys,
cds-disagrees), peers-unchecked and parent-unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from authd.assure.operators import NsServer, Provider, by_operator, by_prefix
from authd.horizon import rfc3339
from authd.xfr import serial as serials
from authd.zone.delegation import DelegationFinding
from authd.zone.drift import DriftFinding

NO, AT_RISK, UNKNOWN = "no", "at risk", "unknown"
DAY = 86400

_DRIFT_VERDICT = {"unreachable": UNKNOWN}  # every other drift kind: at risk
_DELEGATION_VERDICT = {"glue-differs": AT_RISK, "cds-disagrees": AT_RISK}  # others: no


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    verdict: str  # NO | AT_RISK | UNKNOWN
    detail: str

    @property
    def line(self) -> str:
        return f"independent: {self.verdict}: {self.detail}"


@dataclass(frozen=True, slots=True)
class NsZone:
    """The zone an NS name lives in, and that zone's NS names; None where unknown."""

    name: str
    zone: str | None
    ns: tuple[NsServer, ...] | None
    how: str  # "in the zone itself", "via resolver 192.0.2.1@53", or why it was not checked


@dataclass(frozen=True, slots=True)
class PeerState:
    address: str
    serial: int | None
    drift: tuple[DriftFinding, ...] = ()


@dataclass(frozen=True, slots=True)
class Signatures:
    signatures_valid_until: float | None  # earliest RRSIG expiration; None: unsigned
    valid_until: float | None
    expires_at: float | None  # the expire deadline (secondary zones)
    warning_days: int = 3


@dataclass(frozen=True, slots=True)
class Delegation:
    checked_with: str | None  # "parent 203.0.113.1@53", "trust-anchor", None: not checked
    findings: tuple[DelegationFinding, ...] = ()
    unchecked_reason: str = ""


@dataclass(frozen=True, slots=True)
class ReportInput:
    zone: str
    serial: int
    now: float
    servers: tuple[NsServer, ...]
    own_source: str  # where authd's own NS names came from
    ns_zones: tuple[NsZone, ...] = ()
    signatures: Signatures = field(default_factory=lambda: Signatures(None, None, None))
    peers: tuple[PeerState, ...] = ()
    state: str = "ok"
    last_success: float | None = None
    secondary: bool = True
    delegation: Delegation = field(default_factory=lambda: Delegation(None))
    peers_unchecked: str = ""  # why no peer was asked, when none was found to ask


def operator_findings(servers: Sequence[NsServer]) -> list[Finding]:
    own = [s for s in servers if s.own]
    theirs = [s for s in servers if not s.own]
    findings = []
    for server in own:
        same = [t.name for t in theirs if t.operator == server.operator]
        if same:
            findings.append(
                Finding(
                    "shared-operator",
                    NO,
                    f"{server.name} is run by {server.operator}, as {', '.join(same)}",
                )
            )
            continue
        shared = sorted({p for t in theirs for p in t.prefixes} & set(server.prefixes))
        if shared:
            near = [t.name for t in theirs if set(t.prefixes) & set(shared)]
            findings.append(
                Finding(
                    "shared-prefix",
                    AT_RISK,
                    f"{server.name} shares {', '.join(shared)} with {', '.join(near)}",
                )
            )
    return findings


def ns_zone_findings(
    zone: str, servers: Sequence[NsServer], ns_zones: Sequence[NsZone]
) -> list[Finding]:
    """An own NS name inside a zone whose every NS server is the provider's fails with it."""
    provider = Provider.of(servers)
    findings = []
    for entry in ns_zones:
        if entry.zone is None or entry.ns is None:
            findings.append(
                Finding("ns-zone-unchecked", UNKNOWN, f"{entry.name}: not checked: {entry.how}")
            )
            continue
        if entry.zone == zone:
            continue  # in-bailiwick: reached through the parent's glue, served by authd too
        if entry.ns and all(provider.holds(s) and not s.own for s in entry.ns):
            served_by = ", ".join(s.name for s in entry.ns)
            findings.append(
                Finding(
                    "ns-inside-provider-zone",
                    NO,
                    f"{entry.name} is inside {entry.zone}, served only by {served_by}",
                )
            )
    return findings


def signature_findings(sig: Signatures, now: float, secondary: bool = True) -> list[Finding]:
    until = sig.signatures_valid_until
    if until is None:
        return []
    if until - now < sig.warning_days * DAY:
        return [
            Finding(
                "signatures-expire-soon",
                NO,
                f"the copy's signatures expire at {rfc3339(until)}, in less than "
                f"{sig.warning_days} days: without the provider re-signing it goes bogus",
            )
        ]
    if secondary and (sig.expires_at is None or until < sig.expires_at):
        deadline = f", before expire at {rfc3339(sig.expires_at)}" if sig.expires_at else ""
        return [
            Finding(
                "signatures-depend-on-provider",
                AT_RISK,
                f"the copy's signatures end at {rfc3339(until)}{deadline}: it carries the "
                "domain only as long as the provider keeps re-signing",
            )
        ]
    return []


def refresh_findings(inp: ReportInput) -> list[Finding]:
    if not inp.secondary:
        return []
    if inp.state == "expired":
        return [Finding("expired", NO, f"{inp.zone} is past its expire deadline")]
    if inp.last_success is None:
        return [Finding("never-refreshed", AT_RISK, "no successful refresh since start")]
    return []


def peer_findings(peers: Sequence[PeerState]) -> list[Finding]:
    return [
        Finding(d.kind, _DRIFT_VERDICT.get(d.kind, AT_RISK), f"peer {p.address}: {d.detail}")
        for p in peers
        for d in p.drift
    ]


def delegation_findings(delegation: Delegation) -> list[Finding]:
    if delegation.checked_with is None:
        return [Finding("parent-unchecked", UNKNOWN, delegation.unchecked_reason)]
    return [
        Finding(f.kind, _DELEGATION_VERDICT.get(f.kind, NO), f.detail) for f in delegation.findings
    ]


def findings_of(inp: ReportInput) -> list[Finding]:
    findings: list[Finding] = []
    if not any(s.own for s in inp.servers):
        findings.append(
            Finding(
                "own-ns-unknown",
                UNKNOWN if inp.own_source == "unknown" else NO,
                "none of the zone's NS names is authd's own "
                + (
                    "(set server.ns-names)"
                    if inp.own_source == "unknown"
                    else f"(from {inp.own_source})"
                ),
            )
        )
    findings += operator_findings(inp.servers)
    findings += ns_zone_findings(inp.zone, inp.servers, inp.ns_zones)
    findings += signature_findings(inp.signatures, inp.now, inp.secondary)
    findings += refresh_findings(inp)
    findings += peer_findings(inp.peers)
    if inp.peers_unchecked:
        findings.append(Finding("peers-unchecked", UNKNOWN, inp.peers_unchecked))
    findings += delegation_findings(inp.delegation)
    return findings


def overall(findings: Sequence[Finding]) -> str:
    verdicts = {f.verdict for f in findings}
    return NO if NO in verdicts else UNKNOWN if UNKNOWN in verdicts else "yes"


def lag(served: int, peer: int | None) -> int | None:
    """How many serials the peer is ahead of authd (negative: behind), RFC 1982."""
    if peer is None:
        return None
    order = serials.compare(peer, served)
    distance = (peer - served) % (1 << 32)
    if order is serials.Order.EQUAL:
        return 0
    return distance if order is serials.Order.NEWER else distance - (1 << 32)


def build(inp: ReportInput) -> dict[str, Any]:
    """The report as JSON-ready data; `verdicts` holds the lines the text form prints."""
    findings = findings_of(inp)
    verdict = overall(findings)
    lines = [f.line for f in findings if f.verdict != AT_RISK or verdict == "yes"]
    lines += [f.line for f in findings if f.verdict == AT_RISK and verdict != "yes"]
    sig = inp.signatures
    return {
        "zone": inp.zone,
        "serial": inp.serial,
        "checked_at": rfc3339(inp.now),
        "independent": verdict,
        "verdicts": [f"independent: {verdict}", *lines],
        "own_ns_from": inp.own_source,
        "ns": [_server(s) for s in inp.servers],
        "operators": by_operator(inp.servers),
        "prefixes": by_prefix(inp.servers),
        "ns_zones": [_ns_zone(z) for z in inp.ns_zones],
        "signatures": {
            "signed": sig.signatures_valid_until is not None,
            "signatures_valid_until": rfc3339(sig.signatures_valid_until),
            "valid_until": rfc3339(sig.valid_until),
            "expires_at": rfc3339(sig.expires_at),
            "depends_on_resigning": sig.signatures_valid_until is not None
            and (sig.expires_at is None or sig.signatures_valid_until < sig.expires_at),
        },
        "state": inp.state,
        "last_success": rfc3339(inp.last_success),
        "peers": [
            {
                "address": p.address,
                "serial": p.serial,
                "lag": lag(inp.serial, p.serial),
                "drift": [{"kind": d.kind, "detail": d.detail} for d in p.drift],
            }
            for p in inp.peers
        ],
        "delegation": {
            "checked_with": inp.delegation.checked_with,
            "findings": [{"kind": f.kind, "detail": f.detail} for f in inp.delegation.findings],
        },
        "findings": [{"kind": f.kind, "verdict": f.verdict, "detail": f.detail} for f in findings],
    }


def _server(server: NsServer) -> dict[str, Any]:
    return {
        "name": server.name,
        "own": server.own,
        "addresses": list(server.addresses),
        "operator": server.operator,
        "domain": server.domain,
        "prefixes": list(server.prefixes),
        "label": server.label,
    }


def _ns_zone(entry: NsZone) -> dict[str, Any]:
    return {
        "name": entry.name,
        "zone": entry.zone,
        "ns": [s.name for s in entry.ns] if entry.ns is not None else None,
        "how": entry.how,
    }
