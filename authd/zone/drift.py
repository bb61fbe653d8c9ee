"""Drift: does the provider's public copy match the version authd serves? Pure.

Every drift interval the shell asks each peer (the provider's public servers) for the SOA
and a few RRsets, and hands the answers here. Findings are of a fixed set of kinds, the
`kind` label of `authd_zone_drift{zone,peer,kind}`:

  serial-behind    the peer serves an older serial than authd (it lags, or authd is ahead)
  serial-ahead     the peer serves a newer serial: authd has not caught up (a peer ahead
                   for longer than refresh + retry means authd silently stopped refreshing)
  rrset-differs    a sampled RRset differs at the same serial
  ns-set-differs   the apex NS RRset differs at the same serial
  dnskey-differs   the apex DNSKEY RRset differs at the same serial
  unreachable      the peer did not answer (reported, never fatal)

RRSIGs are never compared (providers sign on the fly); types a provider does not transfer
(e.g. CAA at some providers) are left out by `ignore_types`. Contents are compared only
when the serials are equal: a different serial explains any difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from authd.xfr import serial as serials
from authd.zone import names
from authd.zone.snapshot import DNSKEY, NS, Snapshot, is_sig_type, unpack_node

KINDS = (
    "serial-behind",
    "serial-ahead",
    "rrset-differs",
    "ns-set-differs",
    "dnskey-differs",
    "unreachable",
)
CDS, CDNSKEY = 59, 60
ALWAYS_SAMPLED = (NS, DNSKEY, CDS, CDNSKEY)  # at the apex, every round

RRsetKey = tuple[bytes, int]  # (owner key, type)


@dataclass(frozen=True, slots=True)
class PeerAnswers:
    """What one peer said. `serial` None: it did not answer the SOA query at all.

    `rrsets` maps each asked (owner, type) to the set of RDATAs it answered (empty: NODATA
    or NXDOMAIN), or None where that one question got no answer.
    """

    serial: int | None
    rrsets: Mapping[RRsetKey, frozenset[bytes] | None]


@dataclass(frozen=True, slots=True)
class DriftFinding:
    kind: str  # one of KINDS
    detail: str


def questions(snapshot: Snapshot, round_: int, sample: int) -> list[RRsetKey]:
    """The RRsets to ask a peer this round: the apex set, then `sample` others, rotating.

    Over successive rounds the sample walks the whole zone (canonical order, a stride of
    `sample` per round), so every RRset is compared eventually at a bounded cost per round.
    """
    asked: list[RRsetKey] = [(snapshot.origin, rtype) for rtype in ALWAYS_SAMPLED]
    if sample <= 0:
        return asked
    order = snapshot.order
    if not order:
        return asked
    start = (round_ * sample) % len(order)
    for step in range(min(sample, len(order))):
        owner = names.key_from_canonical(order[(start + step) % len(order)])
        node = snapshot.node(owner)
        if not node:
            continue  # an empty non-terminal
        for rtype in sorted(t for t in node if not is_sig_type(t)):
            if owner == snapshot.origin and rtype in ALWAYS_SAMPLED:
                continue
            asked.append((owner, rtype))
    return asked


def served_rrset(snapshot: Snapshot, key: RRsetKey) -> frozenset[bytes]:
    blob = snapshot.blob(key[0])
    if blob is None:
        return frozenset()
    rrset = unpack_node(blob).get(key[1])
    return (
        frozenset(names.lower(r) if key[1] == NS else r for r in rrset[1]) if rrset else frozenset()
    )


def compare(
    snapshot: Snapshot, answers: PeerAnswers, ignore_types: frozenset[int] = frozenset()
) -> list[DriftFinding]:
    """The findings for one peer against the served version."""
    if answers.serial is None:
        return [DriftFinding("unreachable", "no answer to the SOA query")]
    order = serials.compare(answers.serial, snapshot.serial)
    if order is serials.Order.NEWER:
        return [
            DriftFinding(
                "serial-ahead", f"peer serves serial {answers.serial}, authd {snapshot.serial}"
            )
        ]
    if order is not serials.Order.EQUAL:
        return [
            DriftFinding(
                "serial-behind", f"peer serves serial {answers.serial}, authd {snapshot.serial}"
            )
        ]
    findings: list[DriftFinding] = []
    for key, theirs in answers.rrsets.items():
        owner, rtype = key
        if theirs is None or rtype in ignore_types or is_sig_type(rtype):
            continue
        if rtype == NS:
            theirs = frozenset(names.lower(r) for r in theirs)
        ours = served_rrset(snapshot, key)
        if ours == theirs:
            continue
        kind = _kind(snapshot, key)
        findings.append(
            DriftFinding(
                kind,
                f"{names.display(owner)} type {rtype}: authd has {len(ours)} record(s), "
                f"the peer {len(theirs)}, {len(ours ^ theirs)} differ",
            )
        )
    return findings


def _kind(snapshot: Snapshot, key: RRsetKey) -> str:
    if key[0] == snapshot.origin and key[1] == NS:
        return "ns-set-differs"
    if key[0] == snapshot.origin and key[1] == DNSKEY:
        return "dnskey-differs"
    return "rrset-differs"


def lagging_since(
    history: Sequence[tuple[float, bool]], now: float, refresh: float, retry: float
) -> bool:
    """True when a peer has been ahead of authd for longer than refresh + retry.

    `history`: (time, peer was ahead) per drift round for one peer, oldest first.
    """
    since: float | None = None
    for at, ahead in history:
        since = (at if since is None else since) if ahead else None
    return since is not None and now - since > refresh + retry
