"""The change guard: is a verified new version an accident the operator should look at first?

Pure: two versions (or the served version and the owners an IXFR touched) in, findings out.
A version with findings is *held* by the zone lifecycle: stored as a candidate, not
published, until it is approved, rejected, or a newer version from the primary passes.

The defaults catch pipeline accidents only, never ordinary edits:
  rrsets-removed       more than `max-removed-share` (50%) of the served RRsets disappear,
                       for zones of more than `min-rrsets` (20) RRsets
  ns-replaced          the apex NS set is replaced entirely (no old NS name remains)
  own-ns-removed       the apex NS set loses one of authd's own NS names
  apex-missing         the apex NS or DNSKEY RRset disappears (SOA cannot: it is required)
  dnskey-replaced      no key of the old DS-matching set (the SEP keys, or the keys the
                       trust anchor names) remains: resolvers validating against the DS in
                       the parent would fail the new version
  delegations-removed  more than `max-delegations-removed` (25) delegations disappear

Cost: a full comparison walks both versions once (AXFR); for an IXFR pass the owners the
diff touched and the served version's RRset count, so a one-record change costs O(1) in
the size of the zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from authd.zone import names
from authd.zone.snapshot import DNSKEY, NS, Node, Snapshot, is_sig_type, unpack_node

RULES = (
    "rrsets-removed",
    "ns-replaced",
    "own-ns-removed",
    "apex-missing",
    "dnskey-replaced",
    "delegations-removed",
)
_SEP = 0x0001


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Each limit can be turned off: a share or count of None, or a rule flag False."""

    enabled: bool = True
    max_removed_share: float | None = 0.5
    min_rrsets: int = 20
    ns_replaced: bool = True
    own_ns_removed: bool = True
    apex_missing: bool = True
    dnskey_replaced: bool = True
    max_delegations_removed: int | None = 25
    hold_timeout: float | None = None  # seconds after which a held version is published


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str  # one of RULES
    detail: str


@dataclass(frozen=True, slots=True)
class ChangeSummary:
    """What changed between two versions, in RRsets (owner and type; signatures not counted)."""

    rrsets_before: int
    rrsets_after: int
    rrsets_removed: int
    rrsets_added: int
    delegations_removed: int


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    summary: ChangeSummary
    findings: tuple[Finding, ...]

    @property
    def held(self) -> bool:
        return bool(self.findings)

    def describe(self) -> str:
        """One line for logs and status: the rules and the counts."""
        s = self.summary
        counts = (
            f"{s.rrsets_removed} of {s.rrsets_before} RRsets removed, {s.rrsets_added} added, "
            f"{s.delegations_removed} delegations removed"
        )
        if not self.findings:
            return f"passed the change guard ({counts})"
        rules = "; ".join(f"{f.rule}: {f.detail}" for f in self.findings)
        return f"held by the change guard: {rules} ({counts})"


def count_rrsets(snapshot: Snapshot) -> int:
    """RRsets in a version (signatures not counted): once per version, O(size)."""
    return sum(_rrset_count(unpack_node(blob)) for _, blob in snapshot.items())


def _rrset_count(node: Node | None) -> int:
    if not node:
        return 0
    return sum(1 for rtype in node if not is_sig_type(rtype))


def _types(node: Node | None) -> set[int]:
    return {rtype for rtype in node if not is_sig_type(rtype)} if node else set()


def summarize(
    old: Snapshot,
    new: Snapshot,
    *,
    touched: Iterable[bytes] | None = None,
    rrsets_before: int | None = None,
) -> ChangeSummary:
    """Compare two versions over `touched` owners (None: every owner of either version).

    With `touched`, the diff must account for every changed owner (an IXFR's steps do)
    and `rrsets_before` should be the old version's count (else it is counted here).
    """
    if touched is None:
        owners: Iterable[bytes] = set(old.owners()) | set(new.owners())
    else:
        owners = set(touched)
    before = count_rrsets(old) if rrsets_before is None else rrsets_before
    removed = added = delegations = 0
    for owner in owners:
        old_types, new_types = _types(old.node(owner)), _types(new.node(owner))
        removed += len(old_types - new_types)
        added += len(new_types - old_types)
        if owner in old.cuts and owner not in new.cuts:
            delegations += 1
    return ChangeSummary(before, before - removed + added, removed, added, delegations)


def check(
    old: Snapshot,
    new: Snapshot,
    policy: GuardPolicy,
    *,
    own_ns: frozenset[bytes] = frozenset(),
    anchor_keys: frozenset[bytes] = frozenset(),
    touched: Iterable[bytes] | None = None,
    rrsets_before: int | None = None,
) -> GuardVerdict:
    """The guard's verdict on replacing `old` (served) by `new` (verified).

    `own_ns`: authd's own NS names as name keys. `anchor_keys`: DNSKEY RDATAs the trust
    anchor (or the parent's DS) matches; empty means "the old SEP keys".
    """
    summary = summarize(old, new, touched=touched, rrsets_before=rrsets_before)
    if not policy.enabled:
        return GuardVerdict(summary, ())
    findings: list[Finding] = []
    share = policy.max_removed_share
    if (
        share is not None
        and summary.rrsets_before > policy.min_rrsets
        and summary.rrsets_removed > share * summary.rrsets_before
    ):
        findings.append(
            Finding(
                "rrsets-removed",
                f"{summary.rrsets_removed} of {summary.rrsets_before} RRsets "
                f"({100 * summary.rrsets_removed / summary.rrsets_before:.0f}%) would disappear "
                f"(limit {100 * share:.0f}%)",
            )
        )
    limit = policy.max_delegations_removed
    if limit is not None and summary.delegations_removed > limit:
        findings.append(
            Finding(
                "delegations-removed",
                f"{summary.delegations_removed} delegations would disappear (limit {limit})",
            )
        )
    old_apex = old.node(old.origin) or {}
    new_apex = new.node(new.origin) or {}
    findings.extend(_apex_findings(old_apex, new_apex, policy, own_ns))
    if policy.dnskey_replaced:
        findings.extend(_dnskey_findings(old_apex, new_apex, anchor_keys))
    return GuardVerdict(summary, tuple(findings))


def _ns_names(apex: Node) -> set[bytes]:
    rrset = apex.get(NS)
    return {names.lower(rdata) for rdata in rrset[1]} if rrset else set()


def _apex_findings(
    old_apex: Node, new_apex: Node, policy: GuardPolicy, own_ns: frozenset[bytes]
) -> list[Finding]:
    findings = []
    if policy.apex_missing:
        for rtype, label in ((NS, "NS"), (DNSKEY, "DNSKEY")):
            if rtype in old_apex and rtype not in new_apex:
                findings.append(Finding("apex-missing", f"the apex {label} RRset would vanish"))
    old_ns, new_ns = _ns_names(old_apex), _ns_names(new_apex)
    if policy.ns_replaced and old_ns and new_ns and not old_ns & new_ns:
        findings.append(
            Finding(
                "ns-replaced",
                f"the apex NS set would be replaced entirely (new: {_show(new_ns)})",
            )
        )
    if policy.own_ns_removed and new_ns:
        lost = (own_ns & old_ns) - new_ns
        if lost:
            findings.append(
                Finding("own-ns-removed", f"authd's own NS name(s) would go: {_show(lost)}")
            )
    return findings


def _key_identity(rdata: bytes) -> bytes:
    """A DNSKEY without its flags: the same key revoked or re-flagged is still the key."""
    return rdata[3:4] + rdata[4:]


def _dnskey_findings(
    old_apex: Node, new_apex: Node, anchor_keys: frozenset[bytes]
) -> list[Finding]:
    old_keys = old_apex.get(DNSKEY)
    new_keys = new_apex.get(DNSKEY)
    if not old_keys or not new_keys:
        return []  # a signed zone going unsigned is apex-missing's business
    if anchor_keys:
        trusted = {_key_identity(k) for k in old_keys[1] if k in anchor_keys}
    else:
        trusted = {
            _key_identity(k) for k in old_keys[1] if len(k) >= 4 and int.from_bytes(k[:2]) & _SEP
        }
    if not trusted:
        return []
    remaining = {_key_identity(k) for k in new_keys[1]}
    if trusted & remaining:
        return []
    return [
        Finding(
            "dnskey-replaced",
            f"none of the {len(trusted)} DS-matching key(s) of the served DNSKEY set remains",
        )
    ]


def _show(keys: set[bytes] | frozenset[bytes]) -> str:
    return ", ".join(sorted(names.display(k) for k in keys))
