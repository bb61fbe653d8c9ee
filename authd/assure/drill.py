"""The provider-loss drill's checks (`authd zone drill`): pure, answers in, checks out.

As if no primary existed: the served version must pass the full verification against the
DS (the parent's, else the trust anchor), and every listening address of authd must answer
SOA, NS, DNSKEY and a sample of names over UDP and TCP with AA set, the served data, and
RRSIGs that validate against the served DNSKEY set at `now`. Every check is listed; the drill
passes only when all do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from authd.horizon import rfc3339
from authd.zone import names
from authd.zone.snapshot import DNSKEY, NS, SOA, Snapshot, is_sig_type, sig_type, unpack_node

NSEC3 = 50
DAY = 86400

Question = tuple[bytes, int]  # (owner key, type)


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # "udp 127.0.0.1@53 www.example.com A", "verify", "horizon", ...
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}" + (
            f": {self.detail}" if self.detail else ""
        )


def questions(snapshot: Snapshot, sample: int) -> list[Question]:
    """SOA, NS and DNSKEY at the apex, then up to `sample` authoritative names spread evenly
    over the zone (one type each): no delegations, glue, NSEC3 owners or wildcards."""
    origin = snapshot.origin
    apex = snapshot.node(origin) or {}
    asked: list[Question] = [(origin, SOA), (origin, NS)]
    if DNSKEY in apex:
        asked.append((origin, DNSKEY))
    candidates = [key for key in _owners_in_order(snapshot) if _sampleable(snapshot, key)]
    if sample <= 0 or not candidates:
        return asked
    stride = max(1, len(candidates) // sample)
    for key in candidates[::stride][:sample]:
        node = snapshot.node(key) or {}
        types = sorted(t for t in node if not is_sig_type(t) and t != NSEC3)
        if types:
            asked.append((key, types[0]))
    return asked


def _owners_in_order(snapshot: Snapshot) -> list[bytes]:
    return [names.key_from_canonical(c) for c in snapshot.order]


def _sampleable(snapshot: Snapshot, key: bytes) -> bool:
    if key == snapshot.origin or not snapshot.has_data(key) or key in snapshot.cuts:
        return False
    if key.startswith(names.WILDCARD_LABEL):
        return False
    node = snapshot.node(key) or {}
    if all(is_sig_type(t) or t == NSEC3 for t in node):
        return False
    return not any(a in snapshot.cuts for a in names.ancestors(key, snapshot.origin))


def _type(value: int) -> dns.rdatatype.RdataType:
    return dns.rdatatype.RdataType(value)


def served_rrset(snapshot: Snapshot, owner: bytes, rtype: int) -> dns.rrset.RRset | None:
    blob = snapshot.blob(owner)
    entry = unpack_node(blob).get(rtype) if blob is not None else None
    if entry is None:
        return None
    return _rrset(owner, rtype, entry[0], entry[1])


def served_signatures(snapshot: Snapshot, owner: bytes, rtype: int) -> bool:
    blob = snapshot.blob(owner)
    return blob is not None and sig_type(rtype) in unpack_node(blob)


def _rrset(owner: bytes, rtype: int, ttl: int, rdatas: Sequence[bytes]) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(names.to_name(owner), dns.rdataclass.IN, _type(rtype))
    for data in rdatas:
        rrset.add(dns.rdata.from_wire(dns.rdataclass.IN, _type(rtype), data, 0, len(data)), ttl)
    return rrset


def check_answer(
    snapshot: Snapshot,
    question: Question,
    response: dns.message.Message | str,
    now: float,
    *,
    udp: bool,
) -> tuple[bool, str]:
    """(ok, why) for one answer from authd's own address. `response` is the message, or
    the reason there was none."""
    owner, rtype = question
    if isinstance(response, str):
        return False, response
    if udp and response.flags & dns.flags.TC:
        return True, "truncated over UDP (TC set); TCP carries the answer"
    if response.rcode() != dns.rcode.NOERROR:
        return False, f"rcode {dns.rcode.to_text(response.rcode())}"
    if not response.flags & dns.flags.AA:
        return False, "AA not set: authd does not answer as authoritative"
    name = names.to_name(owner)
    got = response.get_rrset(response.answer, name, dns.rdataclass.IN, _type(rtype))
    want = served_rrset(snapshot, owner, rtype)
    if want is None:
        return False, "not in the served version"
    if got is None:
        return False, "no answer records"
    if set(got) != set(want):
        return False, f"answer differs from the served data ({len(got)} vs {len(want)} records)"
    if not served_signatures(snapshot, owner, rtype):
        return True, "unsigned"
    sigs = response.get_rrset(
        response.answer,
        name,
        dns.rdataclass.IN,
        dns.rdatatype.RRSIG,
        dns.rdatatype.RdataType(rtype),
    )
    if sigs is None:
        return False, "no RRSIG in the answer"
    keys = served_rrset(snapshot, snapshot.origin, DNSKEY)
    if keys is None:
        return False, "the served version has no DNSKEY to validate with"
    try:
        dns.dnssec.validate(got, sigs, {keys.name: keys}, now=now)
    except dns.exception.DNSException as exc:  # ValidationFailure is one
        return False, f"RRSIG does not validate: {exc}"
    return True, "signed, valid"


def horizon_check(
    valid_until: float | None, signatures_valid_until: float | None, now: float, warning_days: int
) -> Check:
    """Until when the copy carries the domain; fails inside `warning_days` (0: only past it)."""
    if valid_until is None:
        return Check("horizon", True, "no limit: unsigned and served past expire")
    left = valid_until - now
    why = "signatures expire" if valid_until == signatures_valid_until else "the zone expires"
    detail = f"carries the domain until {rfc3339(valid_until)} ({left / DAY:.1f} days; {why})"
    return Check("horizon", left > warning_days * DAY and left > 0, detail)


def verdict(checks: Sequence[Check]) -> bool:
    return bool(checks) and all(c.ok for c in checks)
