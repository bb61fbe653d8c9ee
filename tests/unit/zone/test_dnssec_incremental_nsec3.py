"""Property: an IXFR of an NSEC3 zone verified incrementally gets the full verdict.

A small NSEC3 zone (Ed25519, so signatures are deterministic and unchanged RRsets keep
their RRSIG) is signed in-process by a signer written here: the NSEC3 chain over every
authoritative name and empty non-terminal (insecure delegations left out under
opt-out), hashed with dnspython's nsec3_hash. Random diffs (names added, removed,
delegated securely or not, types added) give the next version, which the same signer
signs whole; faults then break it: in the chain before signing (an NSEC3 dropped, a
name left out of the chain, a next hash changed, a wrong bitmap, an orphan NSEC3, the
opt-out flag cleared or set), or after (an unsigned record, a flipped byte, a record
dropped, an owner left as it was, a node removed).

The new version is built as an IXFR builds it, old.apply_diff(deleted, added), and
judged as the secondary judges it: needs_full_check(previous=old) picks the full pass,
else verify(touched=...) runs the incremental one. Its verdict must equal verify(new)'s,
ok or not, and the check when not. Valid diffs must never need the full pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from authd.zone import names
from authd.zone.snapshot import Record, Snapshot
from authd.zone.verify import Policy, Verdict, needs_full_check, touched_owners, verify
from tests.support.dnssec import EXPIRATION, INCEPTION, NOW, snapshot_from_records

pytestmark = pytest.mark.slow  # a long property test (NSEC3 re-signing)

ORIGIN_TEXT = "example.test."
ORIGIN = dns.name.from_text(ORIGIN_TEXT)
SALT = "ab"
ITERATIONS = 1
NSEC3_TYPE, RRSIG_TYPE, NS_TYPE, DS_TYPE = 50, 46, 2, 43

BASE = """
$TTL 300
@        SOA  ns1 hostmaster 1 3600 900 1209600 300
@        NS   ns1
@        A    192.0.2.1
ns1      A    192.0.2.53
www      A    192.0.2.80
*.wild   A    192.0.2.90
a.b.ent  TXT  "below an empty non-terminal"
sub      NS   ns.sub
ns.sub   A    192.0.2.100
sec      NS   ns.sec
sec      DS   12345 15 2 abababababababababababababababababababababababababababababababab
ns.sec   A    192.0.2.101
x.ins.deep NS ns.x.ins.deep
mail     MX   10 www
dept     A    192.0.2.7
host.dept A   192.0.2.8
"""

# Names the diffs draw from: existing ones, new ones, names below the cuts (glue), names
# that create or remove empty non-terminals, and a name below an ENT that holds only an
# insecure delegation (optional in the chain under opt-out until a name joins it).
NAMES = [
    "www", "mail", "ns1", "*.wild", "a.b.ent", "new", "x.new", "c.b.ent", "z.deep.ent",
    "ns.sub", "glue.sub", "zz", "aa", "*", "host.wild", "sub", "sec", "y.ins.deep",
    "x.ins.deep", "ns.x.ins.deep", "dept", "host.dept",
]  # fmt: skip

KSK = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ZSK = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
KSK_DNSKEY = dns.dnssec.make_dnskey(KSK.public_key(), 15, flags=257)
ZSK_DNSKEY = dns.dnssec.make_dnskey(ZSK.public_key(), 15, flags=256)
DS_TEXT = "12345 15 2 " + "cd" * 32


@dataclass(frozen=True)
class Change:
    op: str  # "add" | "txt" | "delete" | "delegate" | "secure"
    name: str
    value: int


@dataclass(frozen=True)
class Fault:
    kind: str
    pick: int  # odd: a name near the change, even: any name of the chain
    offset: int
    target: str | None = None  # the chain member to break, instead of a pick


CHAIN_FAULTS = [
    "drop-nsec3", "skip-name", "next-hash", "bitmap", "orphan", "opt-out-clear", "flags-one",
    "stale-link", "keep-gone", "params-one",
]  # fmt: skip
RECORD_FAULTS = ["unsigned-add", "flip", "drop", "stale-owner", "delete-node"]


def _key(name: dns.name.Name) -> bytes:
    return names.key_from_name(name)


def _apply(zone: dns.zone.Zone, change: Change) -> None:
    name = dns.name.from_text(change.name, ORIGIN)
    if change.op == "delete":
        if name != ORIGIN and zone.get_node(name) is not None:
            zone.delete_node(name)
        return
    if change.op in ("delegate", "secure"):
        if change.name.startswith("*"):
            return
        rdataset = zone.find_rdataset(name, "NS", create=True)
        rdataset.update_ttl(300)
        rdataset.add(dns.rdata.from_text("IN", "NS", f"ns.{change.name}.{ORIGIN_TEXT}"))
        if change.op == "secure":
            ds = zone.find_rdataset(name, "DS", create=True)
            ds.update_ttl(300)
            ds.add(dns.rdata.from_text("IN", "DS", DS_TEXT))
        return
    rtype, text = ("A", f"198.51.100.{change.value}")
    if change.op == "txt":
        rtype, text = "TXT", f'"t{change.value}"'
    rdataset = zone.find_rdataset(name, rtype, create=True)
    rdataset.update_ttl(300)
    rdataset.add(dns.rdata.from_text("IN", rtype, text))


def _unsigned(changes: Iterable[Change], serial: int) -> dns.zone.Zone:
    zone = dns.zone.from_text(BASE, origin=ORIGIN, relativize=False, check_origin=False)
    for change in changes:
        _apply(zone, change)
    soa = zone.find_rdataset(ORIGIN, "SOA")
    old = soa[0]
    assert isinstance(old, dns.rdtypes.ANY.SOA.SOA)
    zone.replace_rdataset(ORIGIN, dns.rdataset.from_rdata(soa.ttl, old.replace(serial=serial)))
    keys = zone.find_rdataset(ORIGIN, "DNSKEY", create=True)
    keys.update_ttl(300)
    keys.add(KSK_DNSKEY)
    keys.add(ZSK_DNSKEY)
    param = zone.find_rdataset(ORIGIN, "NSEC3PARAM", create=True)
    param.update_ttl(0)
    param.add(dns.rdata.from_text("IN", "NSEC3PARAM", f"1 0 {ITERATIONS} {SALT}"))
    return zone


def _between(name: dns.name.Name) -> list[dns.name.Name]:
    """The names strictly between the origin and `name`."""
    out = []
    while name != ORIGIN:
        name = name.parent()
        if name != ORIGIN:
            out.append(name)
    return out


def _hash(name: dns.name.Name) -> str:
    return dns.dnssec.nsec3_hash(name, SALT, ITERATIONS, 1).lower()


def _members(zone: dns.zone.Zone, opt_out: bool) -> dict[dns.name.Name, set[int]]:
    """The names the NSEC3 chain covers, with the types their bitmap lists."""
    data = {name: {int(r.rdtype) for r in node} for name, node in zone.nodes.items()}
    cuts = {n for n, types in data.items() if n != ORIGIN and NS_TYPE in types}
    members: dict[dns.name.Name, set[int]] = {}
    for name, types in data.items():
        if any(a in cuts for a in _between(name)):
            continue  # glue: not in the chain
        at_cut = name in cuts
        if at_cut and DS_TYPE not in types and opt_out:
            continue
        members[name] = types | ({RRSIG_TYPE} if not at_cut or DS_TYPE in types else set())
        for ancestor in _between(name):
            if ancestor not in data:
                members.setdefault(ancestor, set())
    return members


@dataclass
class Entry:
    """One NSEC3 record before signing."""

    flags: int
    following: str  # the next hashed owner
    types: set[int]
    iterations: int = ITERATIONS


Entries = dict[str, Entry]
"""The NSEC3 records of one version, by hashed owner."""


def _chain(
    zone: dns.zone.Zone, mode: str, fault: Fault | None, changed: set[dns.name.Name]
) -> Entries:
    members = _members(zone, mode != "none")
    kind = fault.kind if fault else ""
    if kind == "keep-gone":  # a signer that forgot the NSEC3 of names deleted or now glue
        for name, types in _members(_unsigned([], 1), mode != "none").items():
            members.setdefault(name, types)
    target = _target(sorted(members), changed, fault) if fault else None
    if kind == "skip-name" and target is not None and target != ORIGIN:
        members.pop(target, None)
    if kind == "orphan" and fault is not None:
        members[dns.name.from_text(f"gone{fault.offset}", ORIGIN)] = {1, RRSIG_TYPE}
    hashed = {_hash(n): n for n in members}
    order = sorted(hashed)
    apex = _hash(ORIGIN)
    entries = {
        h: Entry(
            int(mode == "all" or (mode == "apex" and h == apex)),
            order[(i + 1) % len(order)],
            set(members[hashed[h]]),
        )
        for i, h in enumerate(order)
    }
    if fault is None or target is None or kind not in CHAIN_FAULTS:
        return entries
    victim = _hash(target) if _hash(target) in entries else order[0]
    entry = entries[victim]
    if kind == "drop-nsec3":
        del entries[victim]
    elif kind == "next-hash":
        entry.following = order[(order.index(entry.following) + 1) % len(order)]
    elif kind == "bitmap":
        entry.types ^= {16 if fault.offset % 2 else 1}
    elif kind == "opt-out-clear":
        for each in entries.values():
            each.flags = 0
    elif kind == "flags-one":
        entry.flags ^= 1
    elif kind == "params-one":
        entry.iterations += 1
    elif kind == "stale-link":  # the NSEC3 before the target's hash points to it
        gone = _hash(target)
        entries[max((h for h in order if h < gone), default=order[-1])].following = gone
    return entries
    victim = _hash(target) if _hash(target) in entries else order[0]
    flag, following, types = entries[victim]
    if kind == "drop-nsec3":
        del entries[victim]
    elif kind == "next-hash":
        entries[victim] = (flag, order[(order.index(following) + 1) % len(order)], types)
    elif kind == "bitmap":
        entries[victim] = (flag, following, types ^ {16 if fault.offset % 2 else 1})
    elif kind == "opt-out-clear":
        entries = {h: (0, n, t) for h, (_, n, t) in entries.items()}
    elif kind == "flags-one":
        entries[victim] = (flag ^ 1, following, types)
    elif kind == "stale-link":  # the NSEC3 before the target's hash points to it
        gone = _hash(target)
        before = max((h for h in order if h < gone), default=order[-1])
        flag, _, types = entries[before]
        entries[before] = (flag, gone, types)
    return entries


def _sign(rrset: tuple[dns.name.Name, dns.rdataset.Rdataset]) -> Record:
    is_key = rrset[0] == ORIGIN and rrset[1].rdtype == dns.rdatatype.DNSKEY
    private, dnskey = (KSK, KSK_DNSKEY) if is_key else (ZSK, ZSK_DNSKEY)
    sig = dns.dnssec.sign(
        rrset, private, ORIGIN, dnskey, inception=INCEPTION, expiration=EXPIRATION
    )
    return (_key(rrset[0]), RRSIG_TYPE, rrset[1].ttl, sig.to_wire())


def _target(pool: list[dns.name.Name], changed: set[dns.name.Name], fault: Fault) -> dns.name.Name:
    if fault.target is not None:
        return dns.name.from_text(fault.target, ORIGIN)
    if fault.kind == "stale-link":  # names the diff deleted, too
        pool = sorted(changed)
    near = [n for n in pool if n in changed]
    candidates = near if fault.pick % 2 and near else pool
    return candidates[fault.pick // 2 % len(candidates)]


def _signed_records(
    changes: list[Change], serial: int, mode: str, fault: Fault | None
) -> set[Record]:
    zone = _unsigned(changes, serial)
    changed = {dns.name.from_text(c.name, ORIGIN) for c in changes}
    changed |= {a for name in changed for a in _between(name)}
    changed |= {n for n in zone.nodes if any(a in changed for a in _between(n))}
    entries = _chain(zone, mode, fault, changed)
    # keep-gone: names that became glue keep their signatures (and NSEC3) too, unchanged.
    stale_glue = fault is not None and fault.kind == "keep-gone"
    base_signed = set(_members(_unsigned([], 1), False)) if stale_glue else set()
    cuts = {n for n, node in zone.nodes.items() if n != ORIGIN and node.get_rdataset(1, NS_TYPE)}
    out: set[Record] = set()
    for name, rdataset in zone.iterate_rdatasets():
        for rdata in rdataset:
            out.add((_key(name), int(rdataset.rdtype), rdataset.ttl, rdata.to_wire()))
        glue = any(a in cuts for a in _between(name))
        delegation = name in cuts and rdataset.rdtype != dns.rdatatype.DS
        if not delegation and (not glue or (stale_glue and name in base_signed)):
            out.add(_sign((name, rdataset)))
    for hashed, entry in entries.items():
        owner = dns.name.from_text(hashed, ORIGIN)
        bitmap = " ".join(dns.rdatatype.to_text(t) for t in sorted(entry.types))  # type: ignore[arg-type]
        rdata = dns.rdata.from_text(
            "IN",
            "NSEC3",
            f"1 {entry.flags} {entry.iterations} {SALT} {entry.following} {bitmap}",
        )
        rdataset = dns.rdataset.from_rdata(300, rdata)
        out.add((_key(owner), NSEC3_TYPE, 300, rdata.to_wire()))
        out.add(_sign((owner, rdataset)))
    return out


def _corrupt(records: set[Record], old: set[Record], fault: Fault) -> set[Record]:
    """A record-level fault after signing, at an owner the diff touches."""
    touched = touched_owners([(sorted(old - records), sorted(records - old))])
    out = set(records)
    owner = touched[fault.pick % len(touched)]
    if fault.kind == "unsigned-add":
        out.add((owner, 16, 300, b"\x0cnot signed!!"))
    elif fault.kind == "delete-node":
        out = {r for r in out if r[0] != owner or r[1] == 6}
    elif fault.kind == "stale-owner":
        out = {r for r in out if r[0] != owner} | {r for r in old if r[0] == owner}
    else:
        # Not the names inside NS or MX: a broken name there is a structure problem
        # (checks.py), not what this property is about.
        kinds = {RRSIG_TYPE, NSEC3_TYPE, 1, 16, 43} if fault.kind == "flip" else None
        candidates = sorted(
            r
            for r in records
            if r[0] in set(touched) and r[1] != 6 and (kinds is None or r[1] in kinds)
        )
        if not candidates:
            return out
        victim = candidates[fault.pick % len(candidates)]
        out.discard(victim)
        if fault.kind == "flip":
            rdata = bytearray(victim[3])
            rdata[len(rdata) - 1 - fault.offset % len(rdata)] ^= 0x01
            out.add((victim[0], victim[1], victim[2], bytes(rdata)))
    return out


@dataclass
class Base:
    mode: str  # opt-out flags: "none", "all", or "apex" (only the apex's NSEC3)
    records: set[Record]
    snapshot: Snapshot


@pytest.fixture(scope="module", params=["none", "all", "apex"], ids=lambda m: f"opt-out-{m}")
def base(request: pytest.FixtureRequest) -> Base:
    records = _signed_records([], 1, request.param, None)
    snapshot = snapshot_from_records(ORIGIN, records)
    verdict = verify(snapshot, Policy(), NOW)
    assert verdict.ok, verdict.reason
    assert snapshot.nsec3_params is not None and len(snapshot.nsec3_hashes) >= 8
    return Base(request.param, records, snapshot)


@dataclass
class Outcome:
    full: Verdict
    incremental: Verdict
    full_needed: bool


def _judge(base: Base, changes: list[Change], fault: Fault | None) -> Outcome:
    chain_fault = fault if fault is not None and fault.kind in CHAIN_FAULTS else None
    new_records = _signed_records(changes, 2, base.mode, chain_fault)
    if fault is not None and fault.kind in RECORD_FAULTS:
        new_records = _corrupt(new_records, base.records, fault)
    deleted, added = sorted(base.records - new_records), sorted(new_records - base.records)
    touched = touched_owners([(deleted, added)])
    snapshot = base.snapshot.apply_diff(deleted, added)
    full = verify(snapshot, Policy(), NOW)
    full_needed = needs_full_check(snapshot, touched, previous=base.snapshot)
    incremental = full if full_needed else verify(snapshot, Policy(), NOW, touched=touched)
    return Outcome(full, incremental, full_needed)


changes = st.builds(
    Change,
    op=st.sampled_from(["add", "add", "txt", "delete", "delete", "delegate", "secure"]),
    name=st.sampled_from(NAMES),
    value=st.integers(1, 254),
)
faults = st.one_of(
    st.none(),
    st.builds(
        Fault,
        kind=st.sampled_from(CHAIN_FAULTS + RECORD_FAULTS),
        pick=st.integers(0, 1000),
        offset=st.integers(0, 200),
    ),
)


# AUTHD_PROPERTY_EXAMPLES=5000 runs a long, randomized search instead of the fixed one.
LONG_RUN = int(os.environ.get("AUTHD_PROPERTY_EXAMPLES", "0"))


@settings(
    max_examples=LONG_RUN or 120,
    deadline=None,
    derandomize=not LONG_RUN,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(diff=st.lists(changes, min_size=1, max_size=4), fault=faults)
def test_incremental_equals_full(base: Base, diff: list[Change], fault: Fault | None) -> None:
    outcome = _judge(base, diff, fault)
    full, incremental = outcome.full, outcome.incremental
    if fault is None:
        assert full.ok, full.reason  # the signer makes valid versions
        assert not outcome.full_needed  # and a signer's diffs stay local
    event("full pass" if outcome.full_needed else "incremental")
    event("rejected" if not full.ok else "accepted")
    assert incremental.ok == full.ok, (full.reason, incremental.reason)
    assert incremental.check == full.check, (full.reason, incremental.reason)


# -- the property is not vacuous: chain faults near the change are caught incrementally ---


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (Fault("drop-nsec3", 0, 0, "x.new"), "nsec3-chain"),  # the one before still points there
        (Fault("skip-name", 0, 0, "x.new"), "nsec3-missing"),  # relinked: only its absence shows
        (Fault("next-hash", 0, 0, "x.new"), "nsec3-chain"),
        (Fault("bitmap", 0, 0, "x.new"), "nsec-bitmap"),
        (Fault("unsigned-add", 0, 0), "rrsig-missing"),
    ],
    ids=["drop-nsec3", "skip-name", "next-hash", "bitmap", "unsigned-add"],
)
def test_chain_faults_at_a_new_name_are_caught_incrementally(
    base: Base, fault: Fault, check: str
) -> None:
    outcome = _judge(base, [Change("add", "x.new", 7)], fault)
    assert not outcome.full_needed
    assert (outcome.incremental.ok, outcome.incremental.check) == (False, check)
    assert outcome.full.check == check


def _far_name(near: list[str]) -> str:
    """A name of the base zone whose NSEC3 is not next to those of `near` in hash order."""
    members = sorted(_hash(n) for n in _members(_unsigned([], 1), False))
    close = set()
    for text in near:
        hashed = _hash(dns.name.from_text(text, ORIGIN))
        pos = sum(1 for h in members if h < hashed)
        close |= {members[(pos + d) % len(members)] for d in (-2, -1, 0, 1)}
    for text in ("mail", "ns1", "www", "dept", "host.dept", "a.b.ent"):
        if _hash(dns.name.from_text(text, ORIGIN)) not in close:
            return text
    raise AssertionError("no far name")


@pytest.mark.parametrize(
    ("kind", "check"),
    [("next-hash", "nsec3-chain"), ("params-one", "nsec3-params")],
)
def test_unrelated_nsec3_rewritten_in_place_stays_incremental(
    base: Base, kind: str, check: str
) -> None:
    """An NSEC3 far from the change rewritten (same types) and re-signed: the diff touches
    its owner, and the incremental pass checks the record there."""
    far = _far_name(["@", "new", "x.new"])
    outcome = _judge(base, [Change("add", "x.new", 7)], Fault(kind, 0, 0, far))
    assert not outcome.full_needed
    assert outcome.incremental.check == outcome.full.check == check


def test_unrelated_bitmap_change_takes_the_full_pass(base: Base) -> None:
    """An NSEC3 rewritten at a name the diff does not touch: its types are not at hand."""
    outcome = _judge(base, [Change("add", "x.new", 7)], Fault("bitmap", 0, 0, "mail"))
    assert outcome.full_needed
    assert outcome.full.check == "nsec-bitmap"


def test_new_secure_name_under_insecure_only_ent(base: Base) -> None:
    """deep.ent-style: an ENT above only an insecure delegation gains a secure child."""
    outcome = _judge(base, [Change("add", "y.ins.deep", 9)], None)
    assert outcome.full.ok and outcome.incremental.ok and not outcome.full_needed
    skipped = _judge(base, [Change("add", "y.ins.deep", 9)], Fault("skip-name", 0, 0, "y.ins.deep"))
    assert not skipped.full_needed
    assert skipped.incremental.check == skipped.full.check == "nsec3-missing"


def test_opt_out_cleared_is_caught(base: Base) -> None:
    outcome = _judge(base, [Change("delegate", "zz", 1)], Fault("opt-out-clear", 0, 0))
    if base.mode != "none":  # the delegations left out of the chain now lack their NSEC3
        assert outcome.full.check == "nsec3-missing"
        assert outcome.full_needed
    else:
        assert outcome.full.ok
    assert outcome.incremental.check == outcome.full.check


def test_one_record_change_checks_few_rrsets(base: Base) -> None:
    outcome = _judge(base, [Change("add", "www", 9)], None)
    assert outcome.incremental.ok and not outcome.full_needed
    assert 0 < outcome.incremental.rrsets_checked < outcome.full.rrsets_checked / 3


def test_without_previous_version_nsec3_takes_the_full_pass(base: Base) -> None:
    records = _signed_records([Change("add", "www", 9)], 2, base.mode, None)
    deleted, added = sorted(base.records - records), sorted(records - base.records)
    snapshot = base.snapshot.apply_diff(deleted, added)
    assert needs_full_check(snapshot, touched_owners([(deleted, added)]))


def test_stale_link_before_a_deleted_name(base: Base) -> None:
    """The NSEC3 before a deleted name still points to it, unchanged: the diff does not
    touch it, yet the incremental pass checks the link there."""
    outcome = _judge(base, [Change("delete", "www", 0)], Fault("stale-link", 0, 0, "www"))
    assert not outcome.full_needed
    assert outcome.incremental.check == outcome.full.check == "nsec3-chain"


def test_nsec3_kept_for_a_deleted_name_is_an_orphan(base: Base) -> None:
    outcome = _judge(base, [Change("delete", "mail", 0)], Fault("keep-gone", 0, 0))
    assert not outcome.full_needed
    assert outcome.incremental.check == outcome.full.check == "nsec3-orphan"


def test_nsec3_kept_for_names_a_new_cut_hides(base: Base) -> None:
    """dept becomes a delegation: host.dept is glue now, its unchanged NSEC3 an orphan."""
    valid = _judge(base, [Change("delegate", "dept", 0)], None)
    assert valid.incremental.ok and not valid.full_needed
    outcome = _judge(base, [Change("delegate", "dept", 0)], Fault("keep-gone", 0, 0))
    assert not outcome.full_needed
    assert outcome.incremental.check == outcome.full.check == "nsec3-orphan"


def test_insecure_delegation_without_nsec3_needs_opt_out(base: Base) -> None:
    outcome = _judge(base, [Change("delegate", "zz", 0)], Fault("skip-name", 0, 0, "zz"))
    assert not outcome.full_needed
    if base.mode == "none":
        assert outcome.incremental.check == outcome.full.check == "nsec3-missing"
    else:
        assert outcome.incremental.ok and outcome.full.ok


def test_losing_the_last_opt_out_flag_takes_the_full_pass(base: Base) -> None:
    """With opt-out only at the apex's NSEC3, clearing it there leaves the insecure
    delegations outside the chain uncovered: only the full pass can list them."""
    outcome = _judge(base, [Change("add", "www", 3)], Fault("flags-one", 0, 0, "@"))
    if base.mode == "apex":
        assert outcome.full_needed
        assert outcome.full.check == "nsec3-missing"
    elif base.mode == "none":  # the apex now claims opt-out: harmless
        assert not outcome.full_needed and outcome.incremental.ok and outcome.full.ok
    else:  # every other NSEC3 still has the flag
        assert not outcome.full_needed and outcome.incremental.ok and outcome.full.ok


def test_changed_nsec3param_takes_the_full_pass(base: Base) -> None:
    apex = names.key_from_name(ORIGIN)
    old_param = next(r for r in base.records if r[0] == apex and r[1] == 51)
    new_param = (apex, 51, old_param[2], old_param[3][:2] + b"\x00\x05" + old_param[3][4:])
    snapshot = base.snapshot.apply_diff([old_param], [new_param])
    assert needs_full_check(snapshot, [apex], previous=base.snapshot)
    assert verify(snapshot, Policy(), NOW).check == "rrsig-invalid"  # signed with 1 iteration
