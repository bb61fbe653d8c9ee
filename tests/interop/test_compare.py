"""The comparison logic itself, on responses built here (no servers needed)."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from tests.interop.compare import (
    ADDITIONAL_DROPPED_FOR_SIZE,
    ANY_CHOICE,
    TC_FROM_COMPRESSION,
    TRUNCATED_CONTENT,
    compare,
    question_bytes,
    unexplained,
)
from tests.interop.corpus import Edns, Query, make_query


def _response(query: Query, *answer: str, additional: tuple[str, ...] = ()) -> dns.message.Message:
    msg = dns.message.make_response(dns.message.from_wire(query.wire))
    msg.flags |= dns.flags.AA
    msg.answer += [_rrset(text) for text in answer]
    msg.additional += [_rrset(text) for text in additional]
    return msg


def _rrset(text: str) -> dns.rrset.RRset:
    """An RRset from one master-file line: owner ttl class type rdata."""
    owner, ttl, rdclass, rdtype, rdata = text.split(maxsplit=4)
    return dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, rdata)


def _uncompressed(msg: dns.message.Message) -> bytes:
    """msg without name compression: the same answer in more octets."""
    wire = _wire(msg)
    out = wire[:12] + question_bytes(wire)
    for section in (msg.answer, msg.authority, msg.additional):
        for rrset in section:
            for rdata in rrset:
                rdata_wire = rdata.to_digestable()
                out += rrset.name.to_digestable()
                out += struct.pack("!HHIH", rrset.rdtype, rrset.rdclass, rrset.ttl, len(rdata_wire))
                out += rdata_wire
    assert msg.opt is not None
    return out + wire[-11:]  # the OPT RR last: root, type, class, ttl, rdlen 0


def _wire(msg: dns.message.Message) -> bytes:
    return msg.to_wire()


Q = make_query("www.plain.test.", 1, Edns(1232))


def test_identical_responses_have_no_difference() -> None:
    wire = _wire(_response(Q, "www.plain.test. 300 IN A 192.0.2.1"))
    assert compare(Q, "udp", wire, wire) == []


def test_owner_case_and_rrset_order_do_not_matter() -> None:
    a = _response(Q, "www.plain.test. 300 IN A 192.0.2.1", "www.plain.test. 300 IN A 192.0.2.2")
    b = _response(Q, "WWW.plain.TEST. 300 IN A 192.0.2.2", "www.plain.test. 300 IN A 192.0.2.1")
    assert compare(Q, "tcp", _wire(a), _wire(b)) == []


def test_ttl_rdata_and_flags_are_differences() -> None:
    base = _wire(_response(Q, "www.plain.test. 300 IN A 192.0.2.1"))
    ttl = _wire(_response(Q, "www.plain.test. 301 IN A 192.0.2.1"))
    rdata = _wire(_response(Q, "www.plain.test. 300 IN A 192.0.2.9"))
    no_aa = _response(Q, "www.plain.test. 300 IN A 192.0.2.1")
    no_aa.flags &= ~dns.flags.AA
    assert [d.what for d in compare(Q, "tcp", base, ttl)] == ["answer"]
    assert [d.what for d in compare(Q, "tcp", base, rdata)] == ["answer"]
    assert [d.what for d in compare(Q, "tcp", base, _wire(no_aa))] == ["flags"]


def test_reply_versus_silence_and_question_case() -> None:
    wire = _wire(_response(Q))
    assert [d.what for d in compare(Q, "udp", wire, None)] == ["reply"]
    assert compare(Q, "udp", None, None) == []
    upper = bytearray(wire)
    start = 12 + 1  # first octet of "www"
    upper[start] = ord("W")
    assert question_bytes(bytes(upper)) != question_bytes(wire)
    assert [d.what for d in compare(Q, "udp", wire, bytes(upper))] == ["question"]


def test_edns_payload_and_rcode_differ() -> None:
    a = _response(Q)
    b = _response(Q)
    b.use_edns(0, 0, 4096)
    c = _response(Q)
    c.set_rcode(dns.rcode.BADVERS)
    assert [d.what for d in compare(Q, "udp", _wire(a), _wire(b))] == ["edns"]
    assert "rcode" in [d.what for d in compare(Q, "udp", _wire(a), _wire(c))]


def test_both_truncated_udp_compares_headers_only() -> None:
    a = _response(Q, "www.plain.test. 300 IN A 192.0.2.1")
    b = _response(Q)
    a.flags |= dns.flags.TC
    b.flags |= dns.flags.TC
    diffs = compare(Q, "udp", _wire(a), _wire(b))
    assert [d.allowed for d in diffs] == [TRUNCATED_CONTENT]
    assert unexplained(compare(Q, "tcp", _wire(a), _wire(b)))


def test_additional_dropped_only_when_it_would_not_fit() -> None:
    small = Query("small", Q.wire, udp_limit=512, qtype=1)
    glue = "ns.plain.test. 300 IN AAAA 2001:db8::1"
    full = _wire(_response(small, additional=(glue,)))
    bare = _wire(_response(small))
    assert unexplained(compare(small, "udp", full, bare))  # it would have fit: a real difference
    # One TXT sized so that the response is 500 octets: 12 more (the AAAA needs 28) do not fit.
    rest = 500 - len(bare) - 12 - 256 - 1
    padded = _response(small, f"www.plain.test. 300 IN TXT {'x' * 255} {'y' * rest}")
    padded_wire = _wire(padded)
    assert len(padded_wire) == 500
    padded.additional.append(
        dns.rrset.from_text("ns.plain.test.", 300, "IN", "AAAA", "2001:db8::1")
    )
    with_glue = padded.to_wire()
    diffs = compare(small, "udp", with_glue, padded_wire)
    assert [d.allowed for d in diffs] == [ADDITIONAL_DROPPED_FOR_SIZE]


def test_any_may_pick_a_different_rrset_but_only_one() -> None:
    anyq = make_query("www.plain.test.", 255, None)
    a = _wire(_response(anyq, "www.plain.test. 300 IN A 192.0.2.1"))
    b = _wire(_response(anyq, "www.plain.test. 300 IN TXT hello"))
    two = _wire(
        _response(anyq, "www.plain.test. 300 IN TXT hello", "www.plain.test. 1 IN A 1.2.3.4")
    )
    assert [d.allowed for d in compare(anyq, "udp", a, b)] == [ANY_CHOICE, ANY_CHOICE]
    assert unexplained(compare(anyq, "udp", a, two))


def test_tc_on_one_side_is_allowed_only_when_the_other_sent_everything() -> None:
    small = Query("small", Q.wire, udp_limit=512, qtype=1)
    records = [f"www.plain.test. 300 IN TXT {'x' * 200}{i}" for i in range(3)]
    complete = _response(small, *records)
    truncated = _response(small, *records[:1])
    truncated.flags |= dns.flags.TC
    full_tcp = _wire(complete)
    assert len(full_tcp) > 512
    # The complete answer is itself over the limit here, so TC was the only right answer.
    diffs = compare(small, "udp", _wire(truncated), full_tcp, (full_tcp, full_tcp))
    assert unexplained(diffs)
    # With a limit the complete answer fits, but the truncating side's own TCP answer is
    # larger (as with Knot's name compression): accepted.
    roomy = Query("roomy", Q.wire, udp_limit=len(full_tcp), qtype=1)
    bigger = _uncompressed(complete)
    assert len(bigger) > len(full_tcp)
    diffs = compare(roomy, "udp", _wire(truncated), full_tcp, (bigger, full_tcp))
    assert [d.allowed for d in diffs] == [TC_FROM_COMPRESSION, TC_FROM_COMPRESSION]


def test_a_refused_transfer_may_be_notauth_at_knotd_and_nothing_else() -> None:
    axfr = make_query("plain.test.", 252, None, tag="")
    knot = dns.message.make_response(dns.message.from_wire(axfr.wire))
    knot.set_rcode(dns.rcode.NOTAUTH)
    ours = dns.message.make_response(dns.message.from_wire(axfr.wire))
    ours.set_rcode(dns.rcode.REFUSED)
    diffs = compare(axfr, "tcp", _wire(knot), _wire(ours))
    assert {d.what for d in diffs} == {"flags", "rcode"} and not unexplained(diffs)
    ours.flags |= dns.flags.AA  # any other flag difference is still one
    assert [d.what for d in unexplained(compare(axfr, "tcp", _wire(knot), _wire(ours)))] == [
        "flags"
    ]
    servfail = dns.message.make_response(dns.message.from_wire(axfr.wire))
    servfail.set_rcode(dns.rcode.SERVFAIL)  # only REFUSED for NOTAUTH
    assert unexplained(compare(axfr, "tcp", _wire(knot), _wire(servfail)))
    a_query = make_query("www.plain.test.", 1, None)  # only for transfers
    knot_a = dns.message.make_response(dns.message.from_wire(a_query.wire))
    knot_a.set_rcode(dns.rcode.NOTAUTH)
    ours_a = dns.message.make_response(dns.message.from_wire(a_query.wire))
    ours_a.set_rcode(dns.rcode.REFUSED)
    assert unexplained(compare(a_query, "tcp", _wire(knot_a), _wire(ours_a)))
