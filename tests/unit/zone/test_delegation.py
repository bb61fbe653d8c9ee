"""Tests of zone/delegation.py: NS delegation, glue, DS against the served keys, CDS/CDNSKEY."""

from __future__ import annotations

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ed25519

from authd.zone import delegation, names
from authd.zone.delegation import ParentView
from authd.zone.snapshot import Snapshot, SnapshotBuilder

ORIGIN = "example.com."
NAME = dns.name.from_text(ORIGIN)
NOW = 1_765_152_000.0  # signing and checking share this instant: nothing here reads a clock
OWN = frozenset({names.key_from_text("ns.extra.org.")})


def wire(rdata: dns.rdata.Rdata) -> bytes:
    data = rdata.to_wire()
    assert data is not None
    return data


def text_wire(rtype: str, text: str) -> bytes:
    return wire(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text))


class Keys:
    def __init__(self) -> None:
        self.ksk = ed25519.Ed25519PrivateKey.generate()
        self.zsk = ed25519.Ed25519PrivateKey.generate()
        self.ksk_rdata = dns.dnssec.make_dnskey(self.ksk.public_key(), 15, flags=257)
        self.zsk_rdata = dns.dnssec.make_dnskey(self.zsk.public_key(), 15, flags=256)

    def ds(self, rdata: dns.rdata.Rdata | None = None) -> bytes:
        return wire(dns.dnssec.make_ds(NAME, rdata or self.ksk_rdata, "SHA256"))


def build(
    keys: Keys | None, *, signer: str = "ksk", extra: tuple[tuple[str, bytes], ...] = ()
) -> Snapshot:
    builder = SnapshotBuilder(names.key_from_text(ORIGIN))
    apex = names.key_from_text(ORIGIN)
    builder.add(
        apex, 6, 300, text_wire("SOA", "ns1.provider.net. h.example.com. 1 7200 900 1209600 300")
    )
    for ns in ("ns1.provider.net.", "ns.extra.org."):
        builder.add(apex, 2, 300, text_wire("NS", ns))
    for rtype, data in extra:
        builder.add(apex, dns.rdatatype.from_text(rtype), 300, data)
    if keys is not None:
        rrset = dns.rrset.from_rdata(NAME, 300, keys.ksk_rdata, keys.zsk_rdata)
        for rdata in rrset:
            builder.add(apex, 48, 300, wire(rdata))
        private, public = (
            (keys.ksk, keys.ksk_rdata) if signer == "ksk" else (keys.zsk, keys.zsk_rdata)
        )
        sig = dns.dnssec.sign(
            rrset, private, NAME, public, inception=NOW - 3600, expiration=NOW + 86400 * 7
        )
        builder.add(apex, 46, 300, wire(sig))
    return builder.build()


def kinds(snap: Snapshot, parent: ParentView, now: float = NOW, **kw: frozenset[str]) -> list[str]:
    return [f.kind for f in delegation.check(snap, parent, now, own_ns=OWN, **kw)]


def test_a_sound_delegation_has_no_findings() -> None:
    keys = Keys()
    parent = ParentView(
        ns_names=frozenset({names.key_from_text("ns1.provider.net."), *OWN}),
        glue={next(iter(OWN)): frozenset({"203.0.113.10"})},
        ds=(keys.ds(),),
    )
    assert kinds(build(keys), parent, own_addresses=frozenset({"203.0.113.10"})) == []


def test_authd_missing_from_the_parent_or_the_zone() -> None:
    parent = ParentView(ns_names=frozenset({names.key_from_text("ns1.provider.net.")}))
    findings = delegation.check(
        build(None), parent, NOW, own_ns=OWN | {names.key_from_text("ns2.extra.org.")}
    )
    assert [(f.kind, f.detail.split(" ")[0]) for f in findings] == [
        ("own-ns-not-delegated", "ns.extra.org"),
        ("own-ns-not-delegated", "ns2.extra.org"),
        ("own-ns-not-in-zone", "ns2.extra.org"),
    ]


def test_glue_pointing_elsewhere() -> None:
    parent = ParentView(glue={next(iter(OWN)): frozenset({"198.51.100.99"})})
    assert kinds(build(None), parent, own_addresses=frozenset({"203.0.113.10"})) == ["glue-differs"]
    assert kinds(build(None), parent) == []  # our addresses unknown (wildcard listen): no claim


def test_ds_that_matches_no_served_key_is_a_mismatch() -> None:
    keys, other = Keys(), Keys()
    assert kinds(build(keys), ParentView(ds=(other.ds(),))) == ["ds-mismatch"]
    # A DS of the ZSK: it matches a key, but not a SEP key signing the DNSKEY RRset.
    assert kinds(build(keys), ParentView(ds=(keys.ds(keys.zsk_rdata),))) == ["ds-mismatch"]
    assert kinds(build(keys), ParentView(ds=(other.ds(), keys.ds()))) == []


def test_the_matching_key_must_sign_validly_now() -> None:
    keys = Keys()
    parent = ParentView(ds=(keys.ds(),))
    assert kinds(build(keys, signer="zsk"), parent) == ["ds-mismatch"]
    assert kinds(build(keys), parent, now=NOW + 86400 * 8) == ["ds-mismatch"]  # RRSIG expired


def test_ds_for_an_unsigned_zone() -> None:
    assert kinds(build(None), ParentView(ds=(Keys().ds(),))) == ["ds-without-keys"]
    assert kinds(build(None), ParentView(ds=())) == []


def test_cds_and_cdnskey_must_name_served_keys() -> None:
    keys, other = Keys(), Keys()
    good = (("CDS", keys.ds()), ("CDNSKEY", wire(keys.ksk_rdata)))
    assert kinds(build(keys, extra=good), ParentView()) == []
    delete = (
        ("CDS", text_wire("CDS", "0 0 0 00")),
        ("CDNSKEY", text_wire("CDNSKEY", "0 3 0 AA==")),
    )
    assert kinds(build(keys, extra=delete), ParentView()) == []
    bad = (("CDS", other.ds()), ("CDNSKEY", wire(other.ksk_rdata)))
    assert kinds(build(keys, extra=bad), ParentView()) == ["cds-disagrees", "cds-disagrees"]
