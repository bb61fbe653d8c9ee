"""Property: verifying an IXFR incrementally gives the same verdict as verifying it whole.

A signed base zone (NSEC, Ed25519, signed in-process with dnspython) takes random
diffs: valid ones (the changed zone signed again with the same key) and corrupting
ones (a valid change followed by one fault: a record added without signing, a byte
flipped in a signature, NSEC or data, a record dropped, an owner left as it was
before the change). The new version is built the way an IXFR builds it,
old.apply_diff(deleted, added), and verify(new, touched=<the diff's owners>) must agree
with verify(new) on ok / not ok, and on the check when not ok.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.zone import names
from authd.zone.snapshot import Record, Snapshot
from authd.zone.verify import Policy, needs_full_check, touched_owners, verify
from tests.support.dnssec import EXPIRATION, INCEPTION, NOW, snapshot_from_records

ORIGIN_TEXT = "example.test."
ORIGIN = dns.name.from_text(ORIGIN_TEXT)

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
mail     MX   10 www
"""

# Names the diffs draw from: existing ones, new ones, some below the cut (glue),
# some creating or removing empty non-terminals.
NAMES = [
    "www", "mail", "ns1", "*.wild", "a.b.ent", "new", "x.new", "c.b.ent", "z.deep.ent",
    "ns.sub", "glue.sub", "zz", "aa", "*", "host.wild",
]  # fmt: skip

DELETABLE = ["sub", "www", "a.b.ent", "*.wild", "mail", "ns1"]

KSK = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ZSK = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
KSK_DNSKEY = dns.dnssec.make_dnskey(KSK.public_key(), 15, flags=257)
ZSK_DNSKEY = dns.dnssec.make_dnskey(ZSK.public_key(), 15, flags=256)


def _zone(text: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, origin=ORIGIN, relativize=False, check_origin=False)


def _signed(zone: dns.zone.Zone) -> dns.zone.Zone:
    """Sign in place with the fixed keys; deterministic, so unchanged RRsets keep their RRSIG."""
    dns.dnssec.sign_zone(
        zone,
        keys=[(KSK, KSK_DNSKEY), (ZSK, ZSK_DNSKEY)],
        inception=INCEPTION,
        expiration=EXPIRATION,
        deterministic=True,
    )
    return zone


def _records(zone: dns.zone.Zone) -> set[Record]:
    out: set[Record] = set()
    for name, rdataset in zone.iterate_rdatasets():
        key = names.key_from_name(name)
        for rdata in rdataset:
            out.add((key, int(rdataset.rdtype), rdataset.ttl, rdata.to_wire()))
    return out


def _snapshot(records: Iterable[Record]) -> Snapshot:
    return snapshot_from_records(ORIGIN, records)


def _key(relative: str) -> bytes:
    return names.key_from_name(dns.name.from_text(relative, ORIGIN))


@dataclass(frozen=True)
class Change:
    op: str  # "add" | "delete" | "delegate"
    name: str
    value: int


@dataclass(frozen=True)
class Fault:
    kind: str  # "unsigned-add" | "flip" | "drop" | "stale-owner" | "delete-node"
    pick: int
    offset: int


def _apply(zone: dns.zone.Zone, change: Change) -> None:
    name = dns.name.from_text(change.name, ORIGIN)
    if change.op == "delete":
        node = zone.get_node(name)
        if node is not None and name != ORIGIN:
            zone.delete_node(name)
        return
    if change.op == "delegate":
        if name == ORIGIN or change.name.startswith("*"):
            return
        rdataset = zone.find_rdataset(name, "NS", create=True)
        rdataset.update_ttl(300)
        rdataset.add(dns.rdata.from_text("IN", "NS", f"ns.{change.name}.{ORIGIN_TEXT}"))
        return
    rdataset = zone.find_rdataset(name, "A", create=True)
    rdataset.update_ttl(300)
    rdataset.add(dns.rdata.from_text("IN", "A", f"198.51.100.{change.value}"))


def _next_unsigned(base_text: str, changes: list[Change], serial: int) -> dns.zone.Zone:
    zone = _zone(base_text)
    for change in changes:
        _apply(zone, change)
    soa = zone.find_rdataset(ORIGIN, "SOA")
    old = soa[0]
    assert isinstance(old, dns.rdtypes.ANY.SOA.SOA)
    zone.replace_rdataset(ORIGIN, dns.rdataset.from_rdata(soa.ttl, old.replace(serial=serial)))
    return zone


def _corrupt(
    records: set[Record], old: set[Record], touched: list[bytes], fault: Fault
) -> set[Record]:
    """One fault on top of a valid new version; stays a well-formed set of records."""
    out = set(records)
    if fault.kind == "unsigned-add":
        owner = touched[fault.pick % len(touched)]
        out.add((owner, 16, 300, b"\x0cnot signed!!"))  # TXT without a new RRSIG
        return out
    if fault.kind == "delete-node":  # e.g. a cut removed without signing what it hid
        owner = _key(DELETABLE[fault.pick % len(DELETABLE)])
        return {r for r in out if r[0] != owner}
    if fault.kind == "stale-owner":
        owner = touched[fault.pick % len(touched)]
        out = {r for r in out if r[0] != owner} | {r for r in old if r[0] == owner}
        return out
    candidates = sorted(r for r in records if r[0] in set(touched) and r[1] != 6)
    if not candidates:
        return out
    victim = candidates[fault.pick % len(candidates)]
    out.discard(victim)
    if fault.kind == "flip":
        rdata = bytearray(victim[3])
        position = len(rdata) - 1 - (fault.offset % len(rdata))  # signatures sit at the end
        rdata[position] ^= 0x01
        out.add((victim[0], victim[1], victim[2], bytes(rdata)))
    return out


changes = st.builds(
    Change,
    op=st.sampled_from(["add", "add", "delete", "delegate"]),
    name=st.sampled_from(NAMES),
    value=st.integers(1, 254),
)
faults = st.one_of(
    st.none(),
    st.builds(
        Fault,
        kind=st.sampled_from(["unsigned-add", "flip", "drop", "stale-owner", "delete-node"]),
        pick=st.integers(0, 1000),
        offset=st.integers(0, 200),
    ),
)


@pytest.fixture(scope="module")
def base() -> tuple[str, set[Record], Snapshot]:
    records = _records(_signed(_zone(BASE)))
    snapshot = _snapshot(records)
    assert verify(snapshot, Policy(), NOW).ok
    return BASE, records, snapshot


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(diff=st.lists(changes, min_size=1, max_size=4), fault=faults)
def test_incremental_equals_full(
    base: tuple[str, set[Record], Snapshot], diff: list[Change], fault: Fault | None
) -> None:
    text, old_records, old_snapshot = base
    new_records = _records(_signed(_next_unsigned(text, diff, serial=2)))
    touched = touched_owners(
        [(sorted(old_records - new_records), sorted(new_records - old_records))]
    )
    if fault is not None:
        new_records = _corrupt(new_records, old_records, touched, fault)
    deleted, added = old_records - new_records, new_records - old_records
    touched = touched_owners([(sorted(deleted), sorted(added))])
    new_snapshot = old_snapshot.apply_diff(sorted(deleted), sorted(added))

    full = verify(new_snapshot, Policy(), NOW)
    incremental = verify(new_snapshot, Policy(), NOW, touched=touched)

    if fault is None:
        assert full.ok, full.reason  # the generator makes valid versions
    assert incremental.ok == full.ok, (full.reason, incremental.reason)
    assert incremental.check == full.check, (full.reason, incremental.reason)


def test_corruption_is_seen_incrementally(base: tuple[str, set[Record], Snapshot]) -> None:
    """The property above is not vacuous: an unsigned record at a touched owner is caught."""
    text, old_records, old_snapshot = base
    new_records = _records(_signed(_next_unsigned(text, [Change("add", "www", 7)], serial=2)))
    www = _key("www")
    touched = touched_owners(
        [(sorted(old_records - new_records), sorted(new_records - old_records))]
    )
    corrupted = _corrupt(
        new_records, old_records, touched, Fault("unsigned-add", touched.index(www), 0)
    )
    deleted, added = old_records - corrupted, corrupted - old_records
    snapshot = old_snapshot.apply_diff(sorted(deleted), sorted(added))
    verdict = verify(
        snapshot, Policy(), NOW, touched=touched_owners([(sorted(deleted), sorted(added))])
    )
    assert not verdict.ok
    assert verdict.check == "rrsig-missing"
    assert "www.example.test/TXT" in verdict.reason


def test_serial_only_change_needs_no_full_check(base: tuple[str, set[Record], Snapshot]) -> None:
    """A re-signed SOA touches the apex, but the keys did not change: incremental suffices."""
    text, old_records, old_snapshot = base
    new_records = _records(_signed(_next_unsigned(text, [Change("add", "www", 9)], serial=2)))
    deleted, added = old_records - new_records, new_records - old_records
    snapshot = old_snapshot.apply_diff(sorted(deleted), sorted(added))
    touched = touched_owners([(sorted(deleted), sorted(added))])
    assert names.key_from_name(ORIGIN) in touched
    assert not needs_full_check(snapshot, touched, previous=old_snapshot)
    assert needs_full_check(snapshot, touched)  # without the old version: cannot tell
