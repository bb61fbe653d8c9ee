"""Delegation and DS checks: would the parent send resolvers to authd, and would they
validate what authd serves? Pure: the parent's answers and the served version in, findings out.

Findings (`kind`):
  own-ns-not-delegated  one of authd's own NS names is missing from the parent's NS set:
                        resolvers never ask authd, the extra NS set carries nothing
  own-ns-not-in-zone    one of authd's own NS names is missing from the zone's apex NS set
  glue-differs          the parent's glue for one of authd's names is not an address authd
                        listens on (checked only where both are known)
  ds-mismatch           no DS at the parent matches a SEP DNSKEY whose signature over the
                        DNSKEY RRset is valid now: validating resolvers would SERVFAIL
  ds-without-keys       the parent has DS records but the served version has no DNSKEY
  cds-disagrees         a CDS or CDNSKEY record names no key of the DNSKEY set (a delete
                        request, algorithm 0, is not a disagreement)
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.RRSIG import RRSIG

from authd.zone import names
from authd.zone.dnssec import Anchor, key_tag
from authd.zone.snapshot import DNSKEY, NS, Node, Snapshot, sig_type

CDS, CDNSKEY = 59, 60
_SEP = 0x0001
_DIGESTS = {1: hashlib.sha1, 2: hashlib.sha256, 4: hashlib.sha384}


@dataclass(frozen=True, slots=True)
class ParentView:
    """What the parent's servers said; None where a question got no answer."""

    ns_names: frozenset[bytes] | None = None
    glue: Mapping[bytes, frozenset[str]] = field(default_factory=dict)
    ds: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class DelegationFinding:
    kind: str
    detail: str


def check(
    snapshot: Snapshot,
    parent: ParentView,
    now: float,
    *,
    own_ns: frozenset[bytes] = frozenset(),
    own_addresses: frozenset[str] = frozenset(),
) -> list[DelegationFinding]:
    apex = snapshot.node(snapshot.origin) or {}
    findings = _ns_findings(apex, parent, own_ns, own_addresses)
    if parent.ds is not None:
        findings.extend(_ds_findings(snapshot.origin, apex, parent.ds, now))
    findings.extend(_cds_findings(snapshot.origin, apex))
    return findings


def _ns_findings(
    apex: Node, parent: ParentView, own_ns: frozenset[bytes], own_addresses: frozenset[str]
) -> list[DelegationFinding]:
    findings = []
    zone_ns = {names.lower(r) for r in apex[NS][1]} if NS in apex else set()
    for name in sorted(own_ns):
        shown = names.display(name)
        if parent.ns_names is not None and name not in parent.ns_names:
            findings.append(
                DelegationFinding(
                    "own-ns-not-delegated",
                    f"{shown} is not in the parent's NS set: resolvers never ask it",
                )
            )
        if name not in zone_ns:
            findings.append(
                DelegationFinding("own-ns-not-in-zone", f"{shown} is not in the zone's apex NS set")
            )
        glue = parent.glue.get(name)
        if glue and own_addresses and not glue <= own_addresses:
            stray = ", ".join(sorted(glue - own_addresses))
            findings.append(
                DelegationFinding(
                    "glue-differs", f"the parent's glue for {shown} lists {stray}, not ours"
                )
            )
    return findings


def _ds_findings(
    origin: bytes, apex: Node, ds_set: tuple[bytes, ...], now: float
) -> list[DelegationFinding]:
    if not ds_set:
        return []
    keys = apex[DNSKEY][1] if DNSKEY in apex else ()
    if not keys:
        return [
            DelegationFinding(
                "ds-without-keys",
                f"the parent has {len(ds_set)} DS record(s) but the zone has no DNSKEY",
            )
        ]
    anchors = [Anchor.from_ds(ds) for ds in ds_set if len(ds) > 4]
    matching = [
        k
        for k in keys
        if int.from_bytes(k[:2], "big") & _SEP and any(a.matches(origin, k) for a in anchors)
    ]
    signers = _valid_dnskey_signers(origin, apex, now)
    if any(key_tag(k) in signers for k in matching):
        return []
    tags = ", ".join(str(a.key_tag) for a in anchors)
    why = (
        "no SEP DNSKEY matches them"
        if not matching
        else "the matching key does not sign the DNSKEY RRset validly now"
    )
    return [
        DelegationFinding(
            "ds-mismatch", f"the parent's DS (key tags {tags}) fail the served keys: {why}"
        )
    ]


def _valid_dnskey_signers(origin: bytes, apex: Node, now: float) -> set[int]:
    """Key tags of the keys whose RRSIG over the DNSKEY RRset verifies at `now`."""
    ttl, keys = apex[DNSKEY]
    sigs = apex.get(sig_type(DNSKEY))
    if not sigs:
        return set()
    name = names.to_name(origin)
    rrset = _rrset(name, dns.rdatatype.DNSKEY, ttl, keys)
    good = set()
    for sig in sigs[1]:
        (tag,) = struct.unpack_from(">H", sig, 16)
        rrsig = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RRSIG, sig, 0, len(sig))
        assert isinstance(rrsig, RRSIG)
        try:
            dns.dnssec.validate_rrsig(rrset, rrsig, {name: rrset}, now=now)
        except dns.exception.DNSException:  # ValidationFailure is one
            continue
        good.add(tag)
    return good


def _rrset(
    name: dns.name.Name, rtype: dns.rdatatype.RdataType, ttl: int, rdatas: tuple[bytes, ...]
) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rtype)
    for data in rdatas:
        rrset.add(dns.rdata.from_wire(dns.rdataclass.IN, rtype, data, 0, len(data)), ttl)
    return rrset


def _cds_findings(origin: bytes, apex: Node) -> list[DelegationFinding]:
    keys = apex[DNSKEY][1] if DNSKEY in apex else ()
    findings = []
    for rdata in apex[CDS][1] if CDS in apex else ():
        if len(rdata) > 4 and rdata[2] == 0:
            continue  # RFC 8078 delete request
        if not any(Anchor.from_ds(rdata).matches(origin, k) for k in keys):
            (tag,) = struct.unpack_from(">H", rdata)
            findings.append(
                DelegationFinding("cds-disagrees", f"CDS for key tag {tag} matches no DNSKEY")
            )
    for rdata in apex[CDNSKEY][1] if CDNSKEY in apex else ():
        if len(rdata) > 3 and rdata[3] == 0:
            continue
        if rdata not in keys:
            findings.append(
                DelegationFinding(
                    "cds-disagrees",
                    f"CDNSKEY for key tag {key_tag(rdata)} is not in the DNSKEY set",
                )
            )
    return findings
