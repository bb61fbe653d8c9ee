"""Whole-zone DNSSEC validation on zones signed by ldns-signzone, and their corruptions."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.zone
import dns.zonetypes
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authd.zone import names
from authd.zone.dnssec import Anchor, Budget, key_tag, validate, zonemd_digest
from authd.zone.snapshot import (
    DNSKEY,
    NSEC,
    NSEC3,
    Node,
    Snapshot,
    SnapshotBuilder,
    pack_node,
    sig_type,
)
from tests.support.dnssec import (
    EXAMPLE_ZONE,
    INCEPTION,
    LDNS_EXPIRATION,
    NOW,
    sign_example_zone,
    snapshot_of,
)

ZONE = EXAMPLE_ZONE
ORIGIN = names.key_from_text("example.test")


class Signed(NamedTuple):
    zone: dns.zone.Zone
    ds_file: Path
    zsk_private: Path


@pytest.fixture(scope="module", params=["nsec", "nsec3", "nsec3-optout"])
def signed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    extra = {"nsec": [], "nsec3": ["-n", "-s", "beef", "-t", "3"], "nsec3-optout": ["-n", "-p"]}
    tmp = tmp_path_factory.mktemp(request.param)
    path, ds, zsk = sign_example_zone(tmp, "ECDSAP256SHA256", *extra[request.param])
    zone = dns.zone.from_file(str(path), origin="example.test.", relativize=False)
    return Signed(zone, ds, zsk)


def _resign(signed: Signed, owner: str, node: Node, rtype: int) -> None:
    """Sign node[rtype] again with the zone's ZSK: a correctly signed, wrong record."""
    scalar = next(
        line.split(":", 1)[1].strip()
        for line in signed.zsk_private.read_text().splitlines()
        if line.startswith("PrivateKey:")
    )
    private = ec.derive_private_key(int.from_bytes(base64.b64decode(scalar), "big"), ec.SECP256R1())
    dnskey = next(
        k for k in signed.zone.find_rdataset("example.test.", "DNSKEY") if not k.flags & 1
    )
    ttl, rdatas = node[rtype]
    rdataset = dns.rdataset.from_rdata_list(
        ttl, [dns.rdata.from_wire(1, rtype, r, 0, len(r)) for r in rdatas]
    )
    sig = dns.dnssec.sign(
        (dns.name.from_text(owner), rdataset),
        private,
        dns.name.from_text("example.test."),
        dnskey,
        inception=INCEPTION,
        expiration=LDNS_EXPIRATION,
    )
    node[sig_type(rtype)] = (ttl, (sig.to_wire(),))


def _mutate(snap: Snapshot, owner: str, change: Callable[[Node], None]) -> Snapshot:
    """A copy of snap with one node changed (bypassing IXFR, like a corrupt transfer)."""
    key = names.key_from_text(owner)
    node = snap.node(key) or {}
    change(node)
    blobs = dict(snap.items())
    blobs[key] = pack_node(node)
    builder = SnapshotBuilder(snap.origin)
    for name, blob in blobs.items():
        for rtype, (ttl, rdatas) in (
            __import__("authd.zone.snapshot", fromlist=["x"]).unpack_node(blob).items()
        ):
            wire_type = 46 if rtype >= 0x10000 else rtype
            for rdata in rdatas:
                builder.add(name, wire_type, ttl, rdata)
    return builder.build()


def test_signed_zones_validate(signed: Signed) -> None:
    report = validate(snapshot_of(signed.zone), NOW)
    assert report.ok, report.errors
    assert report.signed
    assert report.rrsets_checked > 10
    assert report.horizon == LDNS_EXPIRATION  # the earliest (only) expiration


def test_unsigned_zone_is_reported_unsigned() -> None:
    zone = dns.zone.from_file(str(ZONE), origin="example.test.", relativize=False)
    report = validate(snapshot_of(zone), NOW)
    assert report.ok and not report.signed and report.rrsets_checked == 0


def test_trust_anchor_match_and_mismatch(signed: Signed) -> None:
    zone, ds_file = signed.zone, signed.ds_file
    ds = dns.zone.from_text(
        "@ 3600 IN SOA a. b. 1 2 3 4 5\n@ 3600 IN NS a.\n" + ds_file.read_text(),
        origin="example.test.",
        relativize=False,
        check_origin=False,
    )
    ds_rdata = next(iter(ds.find_rdataset("example.test.", "DS"))).to_wire()
    snap = snapshot_of(zone)
    assert validate(snap, NOW, anchors=[Anchor.from_ds(ds_rdata)]).ok
    wrong = bytearray(ds_rdata)
    wrong[-1] ^= 0xFF
    report = validate(snap, NOW, anchors=[Anchor.from_ds(bytes(wrong))])
    assert [e.check for e in report.errors] == ["dnskey-anchor-mismatch"]
    # A rollover anchor set: one matching entry among several is enough.
    assert validate(snap, NOW, anchors=[Anchor.from_ds(bytes(wrong)), Anchor.from_ds(ds_rdata)]).ok


def _flip_signature(node: Node, covered: int) -> None:
    ttl, sigs = node[sig_type(covered)]
    first = bytearray(sigs[0])
    first[-5] ^= 0x01
    node[sig_type(covered)] = (ttl, (bytes(first), *sigs[1:]))


@pytest.mark.parametrize(
    ("owner", "change", "check"),
    [
        ("web.example.test", lambda n: _flip_signature(n, 1), "rrsig-invalid"),
        ("web.example.test", lambda n: n.pop(sig_type(1)), "rrsig-missing"),
        (
            "web.example.test",
            lambda n: n.update({1: (3600, (b"\xc0\x00\x02\x51",))}),
            "rrsig-invalid",
        ),
        ("example.test", lambda n: _flip_signature(n, DNSKEY), "rrsig-invalid"),
    ],
    ids=["flipped-byte", "missing-rrsig", "changed-data", "dnskey-sig"],
)
def test_corruptions_are_rejected_precisely(
    signed: Signed, owner: str, change: Callable[[Node], None], check: str
) -> None:
    report = validate(_mutate(snapshot_of(signed.zone), owner, change), NOW)
    assert not report.ok
    assert report.errors[0].check == check
    if owner != "example.test":
        assert report.errors[0].owner == owner  # shown without the trailing dot


def _resign_times(node: Node, covered: int, inception: int, expiration: int) -> None:
    ttl, sigs = node[sig_type(covered)]
    changed = []
    for sig in sigs:
        changed.append(sig[:8] + struct.pack(">II", expiration, inception) + sig[16:])
    node[sig_type(covered)] = (ttl, tuple(changed))


def test_expired_and_future_signatures(signed: Signed) -> None:
    snap = snapshot_of(signed.zone)
    # The validity window is inside the signed data, so a changed window also fails
    # crypto; check the window logic by validating at other times instead.
    expired = validate(snap, LDNS_EXPIRATION + 10)
    assert expired.errors[0].check == "rrsig-expired"
    inception = struct.unpack_from(">I", snap.node(ORIGIN)[sig_type(6)][1][0], 12)[0]  # type: ignore[index]
    early = validate(snap, inception - 3600, skew=300)
    assert early.errors[0].check == "rrsig-not-yet-valid"
    assert validate(snap, inception - 200, skew=300).ok  # inside the allowed clock skew


def test_key_not_in_dnskey_set(signed: Signed) -> None:
    def retag(node: Node) -> None:
        ttl, sigs = node[sig_type(1)]
        node[sig_type(1)] = (ttl, tuple(s[:16] + b"\x00\x01" + s[18:] for s in sigs))

    report = validate(_mutate(snapshot_of(signed.zone), "web.example.test", retag), NOW)
    assert report.errors[0].check == "rrsig-unknown-key"


def _drop_name(snap: Snapshot, owner: str) -> Snapshot:
    key = names.key_from_text(owner)
    builder = SnapshotBuilder(snap.origin)
    builder.add_records(r for r in snap.records() if r[0] != key)
    return builder.build()


def test_nsec_chain_gap_with_valid_signatures(signed: Signed) -> None:
    snap = snapshot_of(signed.zone)
    if snap.nsec3_params is not None:
        report = validate(_drop_name(snap, "web.example.test"), NOW)
        assert report.errors[0].check == "nsec3-orphan"  # its NSEC3 now matches no name
        return
    report = validate(_drop_name(snap, "web.example.test"), NOW)
    assert report.errors[0].check == "nsec-chain-gap"
    assert "web.example.test" in report.errors[0].message


def test_nsec_bitmap_wrong_but_signed(signed: Signed) -> None:
    snap = snapshot_of(signed.zone)
    if snap.nsec3_params is not None:
        pytest.skip("NSEC zones only; NSEC3 bitmaps are covered by the hash-order test")

    def drop_aaaa_bit(node: Node) -> None:
        ttl, (rdata,) = node[NSEC]
        next_len = names.wire_name_length(rdata, 0)
        bitmap = dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes([1, 46, 47])  # A RRSIG NSEC, no AAAA
        node[NSEC] = (ttl, (rdata[:next_len] + _bitmap_wire(bitmap),))
        _resign(signed, "web.example.test.", node, NSEC)

    report = validate(_mutate(snap, "web.example.test", drop_aaaa_bit), NOW)
    assert report.errors[0].check == "nsec-bitmap"
    assert "misses AAAA" in report.errors[0].message


def _bitmap_wire(bitmap: object) -> bytes:
    import io

    out = io.BytesIO()
    bitmap.to_wire(out)  # type: ignore[attr-defined]
    return out.getvalue()


def test_nsec3_hash_order_broken_but_signed(signed: Signed) -> None:
    snap = snapshot_of(signed.zone)
    if snap.nsec3_params is None:
        pytest.skip("NSEC3 zones only")
    owner = names.to_text(snap.nsec3_owners[1])

    def break_next(node: Node) -> None:
        ttl, (rdata,) = node[NSEC3]
        pos = 5 + rdata[4] + 1
        broken = bytearray(rdata)
        broken[pos] ^= 0x01  # the next hashed owner is no longer the following hash
        node[NSEC3] = (ttl, (bytes(broken),))
        _resign(signed, owner, node, NSEC3)

    report = validate(_mutate(snap, owner, break_next), NOW)
    assert report.errors[0].check == "nsec3-chain"


def test_keytrap_zone_rejected_within_budget(signed: Signed) -> None:
    snap = snapshot_of(signed.zone)

    def many_sigs(node: Node) -> None:
        ttl, sigs = node[sig_type(1)]
        node[sig_type(1)] = (ttl, tuple(sigs[0][:-1] + bytes([i]) for i in range(50)))

    mutated = _mutate(snap, "web.example.test", many_sigs)
    report = validate(mutated, NOW)
    assert report.errors[0].check == "budget-signatures"
    # Bounded work, counted rather than timed: the 50 signatures of the one RRset were not
    # tried (a full walk of the unchanged zone verifies more than the whole RRset holds).
    assert report.signatures_verified < validate(snap, NOW).signatures_verified

    def colliding_keys(node: Node) -> None:
        # The key tag is a 16-bit checksum: moving value between two octets of the
        # same parity keeps it, so any number of distinct keys can share one tag.
        ttl, keys = node[DNSKEY]
        base = keys[0]
        first = next(i for i in range(-2, -40, -1) if 6 <= base[i] + base[i - 2] <= 504)
        total = base[first] + base[first - 2]
        crafted = []
        for shift in range(1, 7):
            key = bytearray(base)
            high = min(255, total) - shift
            key[first], key[first - 2] = high, total - high
            crafted.append(bytes(key))
        assert len({key_tag(k) for k in (base, *crafted)}) == 1
        node[DNSKEY] = (ttl, (*keys, *crafted))

    report = validate(
        _mutate(snap, "example.test", colliding_keys),
        NOW,
        budget=Budget(max_dnskeys=16, max_keys_per_tag=4),
    )
    assert report.errors[0].check == "budget-keytag"


def test_budget_caps(signed: Signed) -> None:
    snap = snapshot_of(signed.zone)
    assert validate(snap, NOW, budget=Budget(max_dnskeys=1)).errors[0].check == "budget-dnskeys"
    if snap.nsec3_params is not None and snap.nsec3_params.iterations:
        report = validate(snap, NOW, budget=Budget(max_nsec3_iterations=0))
        assert report.errors[0].check == "nsec3-iterations"


def test_zonemd_matches_dnspython_and_detects_change(signed: Signed) -> None:
    zone = signed.zone
    expected = zone.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384)
    snap = snapshot_of(zone)
    assert zonemd_digest(snap, 1) == expected.digest
    # Add the ZONEMD record and check validation uses it (unsigned ZONEMD: compare digest only).
    rdata = struct.pack(">IBB", snap.serial, 1, 1) + expected.digest

    def add(node: Node) -> None:
        node[63] = (3600, (rdata,))

    with_md = _mutate(snap, "example.test", add)
    assert zonemd_digest(with_md, 1) == expected.digest  # the ZONEMD itself is excluded
    report = validate(with_md, NOW)
    assert report.errors == [] or report.errors[0].check == "rrsig-missing"

    def corrupt(node: Node) -> None:
        node[16] = (3600, (b"\x04evil",))

    changed = _mutate(with_md, "mail.example.test", corrupt)
    assert validate(changed, NOW).errors[0].check == "zonemd-mismatch"


def test_key_tag_matches_dnspython(signed: Signed) -> None:
    import dns.dnssec

    for rdata in signed.zone.find_rdataset("example.test.", "DNSKEY"):
        assert key_tag(rdata.to_wire()) == dns.dnssec.key_id(rdata)


def test_unknown_algorithm_policy() -> None:
    zone = dns.zone.from_file(str(ZONE), origin="example.test.", relativize=False)
    snap = snapshot_of(zone)

    def add_key(node: Node) -> None:
        node[DNSKEY] = (3600, (b"\x01\x01\x03\xfd" + b"k" * 32,))  # algorithm 253 (private)

    keyed = _mutate(snap, "example.test", add_key)
    assert validate(keyed, NOW).errors[0].check == "unknown-algorithm"
    report = validate(keyed, NOW, reject_unknown_algorithm=False)
    assert any(w.check == "unknown-algorithm" for w in report.warnings)
