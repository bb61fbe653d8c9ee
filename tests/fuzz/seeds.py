"""Seed inputs for the fuzz targets, built from the example zone with dnspython.

`python tests/fuzz/run.py --write-seeds` writes them into tests/fuzz/corpus/<target>/ as
seed-<sha1>; the fuzzer's own finds sit beside them. Seeds cover the shapes each parser
knows (so the fuzzer starts deep) plus a few broken ones.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.zone

from authd.serve import cookies
from tests.fuzz.targets import (
    COOKIE_SECRET,
    COOKIE_TIME,
    EXAMPLE_ZONE,
    ORIGIN_TEXT,
    STREAM_QUERY_ID,
)

QUESTIONS = [
    ("example.test.", "SOA"),
    ("example.test.", "NS"),
    ("example.test.", "ANY"),
    ("example.test.", "DNSKEY"),
    ("www.example.test.", "A"),
    ("WwW.ExAmPlE.TeSt.", "AAAA"),
    ("web.example.test.", "MX"),
    ("nope.example.test.", "A"),
    ("x.apps.example.test.", "A"),
    ("x.wild.example.test.", "A"),
    ("ent.example.test.", "TXT"),
    ("chain1.example.test.", "A"),
    ("outside.example.test.", "A"),
    ("_sip._udp.example.test.", "SRV"),
    ("x.legacy.example.test.", "A"),
    ("host.sub.example.test.", "A"),
    ("sub.example.test.", "DS"),
    ("example.org.", "A"),
]


def _query(name: str, rdtype: str, **kw: object) -> bytes:
    message = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    message.id = 0x5EED  # stable seeds: the same bytes on every run
    return message.to_wire()


def responder_seeds() -> Iterator[bytes]:
    for name, rdtype in QUESTIONS:
        yield _query(name, rdtype, use_edns=False)
        yield _query(name, rdtype, use_edns=0, want_dnssec=True, payload=4096)
    yield _query(
        "example.test.",
        "SOA",
        use_edns=0,
        options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")],
    )
    yield _query("example.test.", "SOA", use_edns=1)
    client = bytes.fromhex("0102030405060708")
    valid = client + cookies.server_cookie(
        COOKIE_SECRET, client, bytes((192, 0, 2, 1)), COOKIE_TIME
    )
    for options in (
        [(10, client)],  # a client cookie alone
        [(10, valid)],  # a server cookie that verifies for the fuzz client
        [(10, client + bytes(16))],  # one that does not
        [(10, client[:5])],  # malformed: FORMERR
        [(11, b"")],  # TCP keepalive
        [(11, b"\x00\x10")],  # keepalive with a timeout: FORMERR over TCP
        [(19, b"")],  # ZONEVERSION
        [(3, b""), (10, valid), (11, b""), (19, b""), (100, b"x")],  # all at once
        [(100, b"")] * 200 + [(10, client)],  # an option storm
    ):
        for name, rdtype in (("www.example.test.", "A"), ("nope.example.test.", "A")):
            yield _query(
                name,
                rdtype,
                use_edns=0,
                options=[dns.edns.GenericOption(code, value) for code, value in options],
            )
    yield _query("example.test.", "AXFR")
    yield _query("example.test.", "IXFR")
    yield _query("id.server.", "TXT", rdclass="CH")
    yield _query("version.bind.", "TXT", rdclass="CH")
    notify = dns.message.make_query("example.test.", "SOA")
    notify.id = 0x5EED
    notify.set_opcode(dns.opcode.NOTIFY)
    yield notify.to_wire()
    update = dns.message.make_query("example.test.", "SOA")
    update.id = 0x5EED
    update.set_opcode(dns.opcode.UPDATE)
    yield update.to_wire()
    signed = dns.message.make_query("example.test.", "SOA")
    signed.id = 0x5EED
    keyring = dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    signed.use_tsig(keyring, keyname="k.")
    wire = signed.to_wire()
    at = wire.index(b"\x0bhmac-sha256\x00") + 13
    # Time signed and MAC zeroed: the same bytes on every run (we hold no key anyway).
    yield wire[:at] + bytes(6) + wire[at + 6 : at + 10] + bytes(32) + wire[at + 42 :]
    base = _query("www.example.test.", "A", use_edns=False)
    yield base[:11]  # shorter than a header
    yield base[:-3]  # question cut off
    yield base[:2] + b"\x80" + base[3:]  # QR set
    yield base[:4] + b"\x00\x00" + base[6:]  # no question
    yield base[:4] + b"\x00\x02" + base[6:]  # two questions announced
    yield base + b"\x00"  # trailing byte
    yield base[:12] + b"\xc0\x0c" + base[-4:]  # compression pointer in the question
    yield base[:12] + b"\x40" + b"a" * 64 + b"\x00" + base[-4:]  # label too long


def _axfr_records() -> list[dns.rrset.RRset]:
    zone = dns.zone.from_file(str(EXAMPLE_ZONE), ORIGIN_TEXT, relativize=False)
    soa = zone.get_rrset(ORIGIN_TEXT, "SOA")
    assert soa is not None
    rest = [
        dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))
        for name, rdataset in sorted(
            zone.iterate_rdatasets(), key=lambda item: (item[0], item[1].rdtype)
        )
        if rdataset.rdtype != dns.rdatatype.SOA
    ]
    return [soa, *rest, soa]


def _frame(messages: list[dns.message.Message], ixfr: bool) -> bytes:
    out = bytes((1 if ixfr else 0,))
    for message in messages:
        wire = message.to_wire(want_shuffle=False)  # dnspython shuffles RRsets by default
        out += struct.pack(">H", len(wire)) + wire
    return out


def _answer(qtype: str, sections: list[list[dns.rrset.RRset]]) -> list[dns.message.Message]:
    query = dns.message.make_query(ORIGIN_TEXT, qtype)
    query.id = STREAM_QUERY_ID
    out = []
    for index, rrsets in enumerate(sections):
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if index:
            response.question = []
        response.answer = list(rrsets)
        out.append(response)
    return out


def _soa(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        ORIGIN_TEXT,
        3600,
        "IN",
        "SOA",
        f"ns1.example.test. hostmaster.example.test. {serial} 3600 900 1209600 300",
    )


def stream_seeds() -> Iterator[bytes]:
    records = _axfr_records()
    yield _frame(_answer("AXFR", [records]), ixfr=False)
    yield _frame(_answer("AXFR", [records[:5], records[5:12], records[12:]]), ixfr=False)
    yield _frame(_answer("AXFR", [records[:-1]]), ixfr=False)  # no closing SOA
    old, new = 2026112201, 2026112202
    yield _frame(_answer("IXFR", [[_soa(new), *records[1:-1], _soa(new)]]), ixfr=True)
    added = dns.rrset.from_text("new.example.test.", 300, "IN", "A", "192.0.2.200")
    removed = dns.rrset.from_text("mail.example.test.", 3600, "IN", "A", "192.0.2.25")
    diff = [_soa(new), _soa(old), removed, _soa(new), added, _soa(new)]
    yield _frame(_answer("IXFR", [diff]), ixfr=True)
    yield _frame(_answer("IXFR", [diff[:3], diff[3:]]), ixfr=True)
    yield _frame(_answer("IXFR", [[_soa(old)]]), ixfr=True)  # up to date
    bad_delete = dns.rrset.from_text("mail.example.test.", 3600, "IN", "A", "192.0.2.99")
    yield _frame(_answer("IXFR", [[_soa(new), _soa(old), bad_delete, _soa(new), _soa(new)]]), True)
    sig = dns.rrset.from_text(
        "www.example.test.",
        3600,
        "IN",
        "RRSIG",
        "CNAME 13 3 3600 20300101000000 20200101000000 12345 example.test. AAAA",
    )
    yield _frame(_answer("AXFR", [[records[0], sig, records[-1]]]), ixfr=False)


def loader_seeds() -> Iterator[bytes]:
    text = EXAMPLE_ZONE.read_bytes()
    yield text
    lines = text.splitlines(keepends=True)
    yield b"".join(lines[:12])  # SOA and NS only
    yield b"".join(lines[:-3])
    yield text + b"$GENERATE 1-20 host$ A 192.0.2.$\n"
    yield text + b"$TTL 1h\nttl IN A 192.0.2.7\n"
    yield text + b"$ORIGIN sub.example.test.\nx A 192.0.2.8\n"
    yield text + b"www IN A 192.0.2.9\n"  # CNAME and other data
    yield text + b"out.example.org. IN A 192.0.2.1\n"  # out of zone
    yield text + b'long IN TXT "' + b"x" * 300 + b'"\n'
    yield text + b"bad IN A 300.1.1.1\n"
    yield text + b"sig IN RRSIG A 13 3 3600 20300101000000 20200101000000 1 example.test. AA==\n"
    yield text + b"k IN DNSKEY 257 3 13 AAAA\n"
    yield text + b"n IN NSEC3 1 0 0 - 2VPTU5TIMAMQTTGL4LUU9KG21E0AOR3S A\n"
    yield b"@ SOA ns hm 1 2 3 4 5\n"
    yield b"$ORIGIN example.test.\n@ IN SOA ns1 hm ( 1 2 3 4 5 )\n@ NS ns1\nns1 A 192.0.2.1\n"
    yield b"\xff\xfe not utf8\n"
    yield b"("


SEEDS = {"responder": responder_seeds, "loader": loader_seeds, "stream": stream_seeds}
