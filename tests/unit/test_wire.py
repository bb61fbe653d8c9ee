"""authd.wire: query classification (drop / FORMERR / answer), EDNS, helpers."""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import dns.rrset
import dns.tsigkeyring

from authd import wire


def query(name: str = "example.test", rdtype: str | int = "SOA", **kw: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]


def with_counts(data: bytes, qd: int, an: int, ns: int, ar: int) -> bytes:
    return data[:4] + struct.pack(">HHHH", qd, an, ns, ar) + data[12:]


def test_plain_query_is_decoded_with_case_preserved() -> None:
    data = query("WwW.Example.TEST", "MX")
    parsed = wire.parse_query(data)
    assert parsed is not None and not parsed.formerr
    assert parsed.qname == b"\x03WwW\x07Example\x04TEST\x00"
    assert parsed.qkey == b"\x03www\x07example\x04test\x00"
    assert (parsed.qtype, parsed.qclass, parsed.opcode) == (15, 1, 0)
    assert parsed.question_end == len(data)
    assert parsed.edns is None and parsed.tsig is None
    assert parsed.question == data[12:]


def test_unparsable_questions_and_responses_are_dropped() -> None:
    base = query()
    assert wire.parse_query(base[:11]) is None  # short header
    assert wire.parse_query(base[:2] + bytes([base[2] | 0x80]) + base[3:]) is None  # QR=1
    assert wire.parse_query(with_counts(base + base[12:], 2, 0, 0, 0)) is None  # QDCOUNT=2
    assert wire.parse_query(base[:-1]) is None  # truncated question
    assert wire.parse_query(base[:12] + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01") is None
    pointer = base[:12] + b"\x03www\xc0\x0c\x00\x01\x00\x01"
    assert wire.parse_query(pointer) is None
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"  # 257 octets
    assert wire.parse_query(base[:12] + long_name + b"\x00\x01\x00\x01") is None
    fits = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x3d" + b"a" * 61 + b"\x00"
    assert len(fits) == 255
    assert wire.parse_query(base[:12] + fits + b"\x00\x01\x00\x01") is not None


def test_formerr_cases_keep_the_question() -> None:
    edns = query(use_edns=0, want_dnssec=True)
    opt = edns[-11:]
    no_question = with_counts(edns[:12], 0, 0, 0, 1) + opt
    parsed = wire.parse_query(no_question)
    assert parsed is not None and parsed.formerr and parsed.qdcount == 0
    assert parsed.edns is not None and parsed.edns.do  # the OPT parsed, so it is answered

    for bad in (
        edns + b"\x00",  # trailing junk
        with_counts(edns, 1, 0, 0, 2) + opt,  # a second OPT
        with_counts(edns, 1, 1, 0, 0),  # OPT in the answer section
        edns[:-2] + b"\x00\x04\x00\x03\x00\x05",  # option longer than the RDATA
    ):
        parsed = wire.parse_query(bad)
        assert parsed is not None and parsed.formerr
        assert parsed.qname == b"\x07example\x04test\x00"
        assert parsed.edns is None  # as Knot: no OPT when the records did not parse


def test_records_in_a_query_are_checked_not_used() -> None:
    msg = dns.message.make_query("example.test", "SOA")
    msg.answer.append(dns.rrset.from_text("example.test.", 60, "IN", "A", "192.0.2.1"))
    parsed = wire.parse_query(msg.to_wire())
    assert parsed is not None and not parsed.formerr

    base = with_counts(query(), 1, 1, 0, 0)
    compressed = base + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
    assert not _formerr(compressed)
    assert _formerr(base + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x03\xc0\x00\x02")
    assert _formerr(base + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x05\xc0\x00\x02\x01")
    forward = base + b"\xc0\x40\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
    assert _formerr(forward)


def _formerr(data: bytes) -> bool:
    parsed = wire.parse_query(data)
    assert parsed is not None
    return parsed.formerr


def test_edns_fields() -> None:
    parsed = wire.parse_query(
        query(
            use_edns=0,
            payload=4096,
            want_dnssec=True,
            options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")],
        )
    )
    assert parsed is not None and parsed.edns == wire.Edns(4096, 0, True, True, b"\x00\x03\x00\x00")
    parsed = wire.parse_query(query(use_edns=1, payload=100))
    assert parsed is not None and parsed.edns == wire.Edns(100, 1, False, False)


def test_tsig_is_located_and_must_be_last() -> None:
    keyring = dns.tsigkeyring.from_text({"k.": "aGVsbG8gd29ybGQgMTIzNDU2Nzg5MA=="})
    msg = dns.message.make_query("example.test", "SOA", use_edns=0)
    msg.use_tsig(keyring, "k.")
    data = msg.to_wire()
    parsed = wire.parse_query(data)
    assert parsed is not None and not parsed.formerr
    assert parsed.tsig is not None and parsed.tsig.key_name == b"\x01k\x00"
    assert parsed.tsig.rdata.startswith(b"\x0bhmac-sha256\x00")
    # A record after the TSIG: FORMERR.
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    after = data[:10] + struct.pack(">H", data[11] + 1) + data[12:] + opt
    assert _formerr(after)


def test_read_name_follows_backward_pointers_only() -> None:
    data = b"\x03foo\x00" + b"\x03bar\xc0\x00"
    assert wire.read_name(data, 5) == (b"\x03bar\x03foo\x00", 11)
    assert wire.read_name(b"\xc0\x00", 0) is None  # points at itself
    assert wire.read_name(b"\x03bar\xc0\x06\x00", 0) is None  # forward


def test_udp_limit() -> None:
    assert wire.udp_limit(None, 1232) == 512
    assert wire.udp_limit(wire.Edns(100, 0, False, False), 1232) == 512
    assert wire.udp_limit(wire.Edns(800, 0, False, False), 1232) == 800
    assert wire.udp_limit(wire.Edns(4096, 0, False, False), 1232) == 1232


def test_opt_record_and_flags() -> None:
    opt = wire.opt_record(1232, 1, True, wire.edns_option(3, b"id"))
    msg = dns.message.from_wire(wire.header(7, wire.QR, 0, 0, 0, 1) + opt)
    assert msg.payload == 1232 and msg.ednsflags & dns.flags.DO
    assert msg.rcode() == 16  # BADVERS from the extended rcode
    assert msg.options[0].otype == 3
    query_flags = 0x7800 | wire.RD | wire.TC | 0x0080 | 0x0020 | 0x0010  # + RA AD CD
    flags = wire.response_flags(query_flags, aa=True, rcode=3)
    assert flags == wire.QR | 0x7800 | wire.AA | wire.RD | 3
