"""The second decoder (tests/support/decoders.py): dnspython and dnslib must read every
response of the differential and fuzz tests alike; here, that the check itself can fail."""

from __future__ import annotations

import dataclasses

import dns.edns
import dns.message
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import pytest

from tests.support import decoders

RECORDS = [
    ("A", "192.0.2.1"),
    ("AAAA", "2001:db8::1"),
    ("NS", "ns.Example.com."),
    ("CNAME", "c.example.com."),
    ("DNAME", "d.example.com."),
    ("PTR", "p.example.com."),
    ("MX", "10 mail.example.com."),
    ("SRV", "1 2 3 x.example.com."),
    ("SOA", "ns1.example.com. h.example.com. 1 2 3 4 5"),
    ("TXT", '"a" "b\\255"'),
    ("CAA", '0 issue "x"'),
    ("DS", "1 13 2 " + "ab" * 32),
    ("DNSKEY", "257 3 13 Zm9vYmFy"),
    ("RRSIG", "A 13 3 300 20400101000000 20200101000000 1234 example.com. Zm9vYmFy"),
    ("NSEC", "z.example.com. A RRSIG NSEC TYPE65000"),
    ("NSEC3", "1 1 10 AABB 0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM A RRSIG"),
    ("NSEC3PARAM", "1 0 10 AABB"),
    ("TLSA", "3 1 1 " + "ab" * 32),
    ("SSHFP", "4 2 " + "ab" * 32),
    ("HTTPS", '1 . alpn="h2" port=443'),
    ("NAPTR", '1 2 "s" "sip" "" x.example.com.'),
    ("ZONEMD", "1 1 1 " + "ab" * 48),
    ("TYPE65000", "\\# 2 abcd"),
]


def _response(*rrsets: dns.rrset.RRset, tsig: bool = False) -> bytes:
    query = dns.message.make_query("www.example.com", "A", want_dnssec=True)
    response = dns.message.make_response(query)
    response.answer += rrsets
    response.authority.append(
        dns.rrset.from_text("example.com.", 60, "IN", "SOA", "a. b. 1 2 3 4 5")
    )
    response.additional.append(dns.rrset.from_text("ns.example.com.", 60, "IN", "A", "192.0.2.2"))
    # An empty option (NSID request form): dnslib's own OPT reader drops it; raw RDATA kept.
    response.use_edns(0, payload=1232, options=[dns.edns.GenericOption(3, b"")])
    if tsig:
        keyring = dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0"})
        response.use_tsig(keyring, "k.", algorithm=dns.tsig.HMAC_SHA256)
    return response.to_wire()


def _rrset(rtype: str, text: str, owner: str = "www.example.com.") -> dns.rrset.RRset:
    return dns.rrset.from_text(owner, 300, "IN", rtype, text)


def test_every_type_decodes_alike_with_edns_and_tsig() -> None:
    wire = _response(*(_rrset(rtype, text) for rtype, text in RECORDS), tsig=True)
    assert decoders.disagreement(wire) is None
    decoded = decoders.with_dnslib(wire)
    assert len(decoded.answer) == len(RECORDS)
    assert [r[1] for r in decoded.additional] == [1, 41, 250]  # A, OPT, TSIG as on the wire


def test_labels_of_any_octet_decode_alike() -> None:
    wire = _response(_rrset("A", "192.0.2.1", owner="\\255\\000.example.com."))
    assert decoders.disagreement(wire) is None


def test_a_message_both_reject_is_no_disagreement() -> None:
    wire = _response(_rrset("A", "192.0.2.1"))
    assert decoders.disagreement(wire[:-3]) is None  # cut inside the last record
    assert decoders.disagreement(wire + b"\x00") is None  # an octet after the last record


def test_dnslib_rejecting_what_dnspython_accepts_is_reported() -> None:
    # An empty RDATA is valid for an unknown type; dnslib's reader refuses every empty RR.
    problem = decoders.disagreement(_response(_rrset("TYPE65000", "\\# 0")))
    assert problem is not None and problem.startswith("dnslib rejects what dnspython accepts")


def test_dnspython_rejecting_what_dnslib_accepts_is_reported() -> None:
    wire = bytearray(_response())
    opt = wire.index(b"\x00\x00\x29")  # root owner, type OPT: the whole OPT record twice
    wire += wire[opt:]
    wire[11] += 1  # ARCOUNT
    problem = decoders.disagreement(bytes(wire))
    assert problem is not None and problem.startswith("dnspython rejects")


def test_a_record_decoded_differently_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    wire = _response(_rrset("A", "192.0.2.1"), _rrset("MX", "10 mail.example.com."))
    real = decoders.with_dnslib

    def one_ttl_off(data: bytes) -> decoders.Decoded:
        decoded = real(data)
        owner, rtype, rclass, ttl, rdata = decoded.answer[1]
        return dataclasses.replace(
            decoded, answer=(decoded.answer[0], (owner, rtype, rclass, ttl + 1, rdata))
        )

    monkeypatch.setattr(decoders, "with_dnslib", one_ttl_off)
    problem = decoders.disagreement(wire)
    assert problem is not None and problem.startswith("answer[1]: dnspython www.example.com MX")
