"""authd.serve.render: compression like Knot, truncation by whole RRsets, TC rules."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from authd import wire
from authd.serve.render import render
from authd.zone.answer import NXDOMAIN, Result, RRsetOut
from authd.zone.names import key_from_text

QNAME = b"\x03WwW\x07ExAmple\x04TEST\x00"
QUESTION = QNAME + b"\x00\x01\x00\x01"
QKEY = wire.lower(QNAME)
OPT = wire.opt_record(1232, 0, True)


def rd(rdtype: str, text: str) -> bytes:
    value = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
    data = value.to_wire()
    assert data is not None
    return data


def rrset(owner: str, rdtype: str, *texts: str, ttl: int = 300) -> RRsetOut:
    code = dns.rdatatype.from_text(rdtype)
    return RRsetOut(key_from_text(owner), code, ttl, tuple(rd(rdtype, t) for t in texts))


def sigs_for(covered: str, count: int = 1, size: int = 64) -> tuple[int, tuple[bytes, ...]]:
    text = f"{covered} 13 2 300 20300101000000 20200101000000 1 example.test. " + "A" * size
    return 300, tuple(rd("RRSIG", text.replace(" 1 ", f" {i + 1} ", 1)) for i in range(count))


def parse(data: bytes) -> dns.message.Message:
    return dns.message.from_wire(data)


def test_owner_names_point_at_the_question_and_keep_its_case() -> None:
    result = Result(answer=[rrset("www.example.test.", "A", "192.0.2.1", "192.0.2.2")])
    data = render(wire.RD, QUESTION, QKEY, result, 512, OPT, 1)
    answer_start = 12 + len(QUESTION)
    assert data[answer_start : answer_start + 2] == b"\xc0\x0c"
    msg = parse(data)
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.AA and msg.flags & dns.flags.RD
    assert str(msg.answer[0].name) == "WwW.ExAmple.TEST."
    assert len(msg.answer[0]) == 2 and msg.edns == 0


def test_rdata_names_compressed_only_for_rfc1035_types() -> None:
    result = Result(
        answer=[
            rrset("www.example.test.", "MX", "10 mail.example.test."),
            rrset("www.example.test.", "SRV", "0 0 5060 sip.example.test."),
            rrset("www.example.test.", "DNAME", "target.example.test."),
        ],
        additional=[rrset("mail.example.test.", "A", "192.0.2.25")],
    )
    data = render(0, QUESTION, QKEY, result, 65535)
    # MX exchange: "mail" + pointer to "ExAmple.TEST" in the question (offset 16).
    assert b"\x04mail\xc0\x10" in data
    # SRV and DNAME targets are written in full.
    assert b"\x03sip\x07example\x04test\x00" in data
    assert b"\x06target\x07example\x04test\x00" in data
    msg = parse(data)
    assert {rr.rdtype for rr in msg.answer} == {15, 33, 39}
    assert str(msg.additional[0].name).lower() == "mail.example.test."


def test_truncation_keeps_whole_rrsets_in_order_and_sets_tc() -> None:
    cname = rrset("www.example.test.", "CNAME", "web.example.test.")
    big = rrset("web.example.test.", "TXT", *[f'"{"x" * 200}{i}"' for i in range(4)])
    data = render(0, QUESTION, QKEY, Result(answer=[cname, big]), 512, OPT, 1)
    msg = parse(data)
    assert msg.flags & dns.flags.TC
    assert [rr.rdtype for rr in msg.answer] == [5]  # the CNAME stays, its target goes
    assert msg.edns == 0  # OPT reserved first
    assert len(data) <= 512
    full = parse(render(0, QUESTION, QKEY, Result(answer=[cname, big]), 65535, OPT, 1))
    assert not full.flags & dns.flags.TC and len(full.answer[1]) == 4


def test_rrsigs_follow_each_sections_data_and_go_first() -> None:
    soa = rrset("example.test.", "SOA", "ns1.example.test. h.example.test. 1 2 3 4 5")
    nsec = rrset("www.example.test.", "NSEC", "z.example.test. A RRSIG NSEC")
    soa.sigs = sigs_for("SOA", size=400)
    nsec.sigs = sigs_for("NSEC", size=400)
    result = Result(rcode=NXDOMAIN, authority=[soa, nsec])
    full = parse(render(0, QUESTION, QKEY, result, 65535, OPT, 1))
    assert [rr.rdtype for rr in full.authority] == [6, 47, 46, 46]
    assert full.rcode() == NXDOMAIN
    small = parse(render(0, QUESTION, QKEY, result, 512, OPT, 1))
    assert small.flags & dns.flags.TC
    kinds = [rr.rdtype for rr in small.authority]
    assert kinds[:2] == [6, 47] and len(kinds) < 4  # SOA and NSEC stay, trailing RRSIGs go


def test_optional_additional_dropped_without_tc_but_glue_sets_tc() -> None:
    ns = rrset("sub.example.test.", "NS", "ns1.sub.example.test.", "ns2.sub.example.test.")
    glue = [
        rrset(f"ns{i}.sub.example.test.", "TXT", *[f'"{"g" * 150}{j}"' for j in range(2)])
        for i in (1, 2)
    ]
    referral = Result(aa=False, authority=[ns], additional=glue, required_additional=2)
    msg = parse(render(0, QUESTION, QKEY, referral, 512, OPT, 1))
    assert msg.flags & dns.flags.TC and not msg.flags & dns.flags.AA
    assert len(msg.authority) == 1 and len(msg.additional) == 1  # first glue fit
    optional = Result(aa=False, authority=[ns], additional=glue, required_additional=0)
    msg = parse(render(0, QUESTION, QKEY, optional, 512, OPT, 1))
    assert not msg.flags & dns.flags.TC and len(msg.additional) == 1


def test_skipped_additional_rrset_leaves_no_compression_entries() -> None:
    # The skipped RRset introduces "mail.example.test"; the next owner must not point into it.
    skipped = rrset("x.mail.example.test.", "TXT", *[f'"{"y" * 250}{i}"' for i in range(3)])
    after = rrset("mail.example.test.", "A", "192.0.2.25")
    result = Result(
        answer=[rrset("www.example.test.", "A", "192.0.2.1")], additional=[skipped, after]
    )
    data = render(0, QUESTION, QKEY, result, 512, OPT, 1)
    msg = parse(data)
    assert not msg.flags & dns.flags.TC
    assert [rr.rdtype for rr in msg.additional] == [1]  # skipped, and the next one tried
    assert str(msg.additional[0].name).lower() == "mail.example.test."
    assert b"\x04mail" in data


def test_large_tcp_response_stays_parsable_beyond_pointer_range() -> None:
    names = [f"host{i}.example.test." for i in range(900)]
    result = Result(answer=[rrset(name, "A", "192.0.2.1") for name in names])
    data = render(0, QUESTION, QKEY, result, 65535)
    assert len(data) > 0x4000
    msg = parse(data)
    assert len(msg.answer) == 900
    assert {str(r.name).lower() for r in msg.answer} == set(names)
