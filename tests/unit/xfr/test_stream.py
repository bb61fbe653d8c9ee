"""The transfer stream parser and assembler on wire bytes (no sockets)."""

from __future__ import annotations

import base64
import struct

import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rrset
import dns.tsig
import pytest

from authd.xfr.stream import (
    TYPE_AXFR,
    TYPE_IXFR,
    Fault,
    Kind,
    StreamError,
    TransferAssembler,
    TransferLimits,
    parse_message,
)
from authd.zone import names
from authd.zone.snapshot import Record, SnapshotBuilder

ORIGIN = "example.test."
ZONE = names.key_from_text(ORIGIN)
SOA_TEXT = "ns1.example.test. hostmaster.example.test. {} 3600 900 1209600 300"


def rr(owner: str, rtype: str, text: str, ttl: int = 300) -> tuple[str, int, str, str]:
    return (owner, ttl, rtype, text)


def render(
    rows: list[tuple[str, int, str, str]],
    *,
    query_id: int = 1,
    qtype: str = "AXFR",
    question: bool = True,
) -> bytes:
    message = dns.message.Message(id=query_id)
    message.flags = dns.flags.QR | dns.flags.AA
    if question:
        message.question = [
            dns.rrset.RRset(
                dns.name.from_text(ORIGIN), dns.rdataclass.IN, dns.rdatatype.from_text(qtype)
            )
        ]
    for owner, ttl, rtype, text in rows:
        rdata = dns.rdata.from_text("IN", rtype, text, relativize=False)
        message.answer.append(dns.rrset.from_rdata(dns.name.from_text(owner), ttl, rdata))
    return message.to_wire()


def expected_record(owner: str, rtype: str, text: str, ttl: int = 300) -> Record:
    rdata = dns.rdata.from_text("IN", rtype, text)
    wire = rdata.to_wire()
    assert wire is not None
    return (names.key_from_text(owner), int(rdata.rdtype), ttl, wire)


def soa(serial: int) -> tuple[str, int, str, str]:
    return rr(ORIGIN, "SOA", SOA_TEXT.format(serial), 3600)


# -- parser ------------------------------------------------------------------------


def test_compressed_names_in_rdata_are_expanded() -> None:
    rows = [
        soa(1),
        rr("mail.example.test.", "MX", "10 mail.example.test."),
        rr("_sip._udp.example.test.", "SRV", "10 5 5060 sip.example.test."),
        rr("n.example.test.", "NAPTR", '100 10 "u" "E2U+sip" "" sip.example.test.'),
        rr("w.example.test.", "CNAME", "web.example.test."),
        rr("Upper.Example.TEST.", "A", "192.0.2.7"),
    ]
    wire = render(rows)
    message = parse_message(wire)
    assert message.qname == ZONE and message.qtype == TYPE_AXFR
    got = message.records
    # Owners lowercased; names inside RDATA uncompressed with their case kept.
    assert got[1] == expected_record("mail.example.test.", "MX", "10 mail.example.test.")
    assert got[2] == expected_record(
        "_sip._udp.example.test.", "SRV", "10 5 5060 sip.example.test."
    )
    assert got[3] == expected_record(
        "n.example.test.", "NAPTR", '100 10 "u" "E2U+sip" "" sip.example.test.'
    )
    assert got[4] == expected_record("w.example.test.", "CNAME", "web.example.test.")
    assert got[5] == expected_record("upper.example.test.", "A", "192.0.2.7")
    assert got[0][3] == expected_record(ORIGIN, "SOA", SOA_TEXT.format(1))[3]
    # The wire really was compressed, or the test proves nothing.
    assert len(wire) < 12 + sum(len(r[0]) + 10 + len(r[3]) for r in got) + len(ZONE) + 4


def test_rdata_of_other_types_is_a_plain_copy() -> None:
    wire = render(
        [rr("t.example.test.", "TXT", '"Hello"'), rr("a.example.test.", "AAAA", "2001:db8::1")]
    )
    records = parse_message(wire).records
    assert records[0][3] == b"\x05Hello"
    assert records[1][3] == bytes.fromhex("20010db8000000000000000000000001")


def _header(qd: int = 0, an: int = 0) -> bytes:
    return struct.pack(">HHHHHH", 1, 0x8400, qd, an, 0, 0)


def test_forward_pointer_is_rejected() -> None:
    # One answer whose owner points at itself (a loop).
    wire = _header(an=1) + b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + b"\x01\x02\x03\x04"
    with pytest.raises(StreamError) as info:
        parse_message(wire)
    assert info.value.fault is Fault.MALFORMED and "forward" in info.value.reason


def test_truncated_record_is_rejected() -> None:
    wire = render([rr("a.example.test.", "A", "192.0.2.1")])
    with pytest.raises(StreamError) as info:
        parse_message(wire[:-2])
    assert info.value.fault is Fault.MALFORMED


def test_trailing_octets_are_rejected() -> None:
    wire = render([rr("a.example.test.", "A", "192.0.2.1")])
    with pytest.raises(StreamError, match="trailing"):
        parse_message(wire + b"\x00")


def test_class_other_than_in_is_rejected() -> None:
    wire = _header(an=1) + ZONE + struct.pack(">HHIH", 1, 3, 0, 4) + b"\x01\x02\x03\x04"
    with pytest.raises(StreamError, match="class 3"):
        parse_message(wire)


def test_name_over_255_octets_is_rejected() -> None:
    label = b"\x3f" + b"a" * 63
    wire = _header(an=1) + label * 5 + b"\x00" + struct.pack(">HHIH", 1, 1, 0, 0)
    with pytest.raises(StreamError, match="255"):
        parse_message(wire)


# -- assembler -----------------------------------------------------------------------


def assemble(messages: list[bytes], **kwargs: object) -> TransferAssembler:
    qtype = int(kwargs.pop("qtype", TYPE_AXFR))  # type: ignore[call-overload]
    limits = kwargs.pop("limits", TransferLimits())
    current = kwargs.pop("current", None)
    assembler = TransferAssembler(ZONE, qtype, 1, limits, current)  # type: ignore[arg-type]
    for wire in messages:
        if assembler.feed(parse_message(wire)):
            break
    return assembler


def test_axfr_over_several_messages_builds_the_zone() -> None:
    first = render([soa(5), rr("a.example.test.", "A", "192.0.2.1")])
    second = render(
        [
            rr("a.example.test.", "A", "192.0.2.2", ttl=100),
            rr("a.example.test.", "A", "192.0.2.1"),
            soa(5),
        ],
        question=False,
    )
    assembler = assemble([first, second])
    assert assembler.done and assembler.kind is Kind.AXFR
    snapshot = assembler.snapshot
    assert snapshot is not None and snapshot.serial == 5
    node = snapshot.node(names.key_from_text("a.example.test."))
    assert node is not None
    ttl, rdatas = node[1]
    # A duplicate collapses (RRsets are sets) and the lowest TTL wins (RFC 2181 5.2).
    assert ttl == 100 and sorted(rdatas) == [bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])]
    assert snapshot.record_count == 3


def test_axfr_without_closing_soa_is_not_done() -> None:
    assembler = assemble([render([soa(5), rr("a.example.test.", "A", "192.0.2.1")])])
    assert not assembler.done
    assert "without the closing SOA" in assembler.incomplete_reason()


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([soa(5), rr("a.example.test.", "A", "192.0.2.1"), soa(6)], "differs"),
        ([soa(5), soa(5), rr("a.example.test.", "A", "192.0.2.1")], "after the closing SOA"),
        ([soa(5), rr("x.example.org.", "A", "192.0.2.1"), soa(5)], "outside the zone"),
        ([soa(5), rr("test.", "A", "192.0.2.1"), soa(5)], "outside the zone"),
        ([rr("a.example.test.", "A", "192.0.2.1"), soa(5)], "not the zone SOA"),
    ],
)
def test_axfr_rejections(rows: list[tuple[str, int, str, str]], words: str) -> None:
    with pytest.raises(StreamError, match=words) as info:
        assemble([render(rows)])
    assert info.value.fault is Fault.MALFORMED


def test_wrong_id_and_question_are_rejected() -> None:
    with pytest.raises(StreamError, match="ID"):
        assemble([render([soa(5), soa(5)], query_id=2)])
    with pytest.raises(StreamError, match="question"):
        assemble([render([soa(5), soa(5)], qtype="IXFR")])


def test_record_limit_stops_at_the_crossing_message() -> None:
    rows = [soa(5)] + [rr(f"h{i}.example.test.", "A", "192.0.2.1") for i in range(20)]
    with pytest.raises(StreamError) as info:
        assemble([render(rows)], limits=TransferLimits(max_records=10))
    assert info.value.fault is Fault.TOO_BIG


def test_rrset_limit() -> None:
    rows = [soa(5)] + [rr("a.example.test.", "A", f"192.0.2.{i}") for i in range(1, 13)]
    with pytest.raises(StreamError, match="more than 10 records") as info:
        assemble([render(rows)], limits=TransferLimits(max_rrset_records=10))
    assert info.value.fault is Fault.TOO_BIG


def test_rrset_limit_at_the_end_of_the_transfer() -> None:
    # 11 records against a limit of 10: below the 1.1x compaction point, caught at build.
    rows = [soa(5)] + [rr("a.example.test.", "A", f"192.0.2.{i}") for i in range(1, 12)]
    with pytest.raises(StreamError, match="more than 10 records"):
        assemble([render([*rows, soa(5)])], limits=TransferLimits(max_rrset_records=10))


def test_duplicates_do_not_count_against_the_rrset_limit() -> None:
    rows = [soa(5)] + [rr("a.example.test.", "A", f"192.0.2.{i % 5}") for i in range(200)]
    assembler = assemble([render([*rows, soa(5)])], limits=TransferLimits(max_rrset_records=10))
    assert assembler.snapshot is not None and assembler.snapshot.record_count == 6


def _current(serial: int, *extra: tuple[str, int, str, str]) -> SnapshotBuilder:
    builder = SnapshotBuilder(ZONE)
    for owner, ttl, rtype, text in [soa(serial), *extra]:
        builder.add(*expected_record(owner, rtype, text, ttl))
    return builder


def test_ixfr_applies_each_step() -> None:
    current = _current(1, rr("a.example.test.", "A", "192.0.2.1")).build()
    rows = [
        soa(3),
        soa(1),
        rr("a.example.test.", "A", "192.0.2.1"),
        soa(2),
        rr("b.example.test.", "A", "192.0.2.2"),
        soa(2),
        soa(3),
        rr("c.example.test.", "A", "192.0.2.3"),
        soa(3),
    ]
    assembler = assemble([render(rows, qtype="IXFR")], qtype=TYPE_IXFR, current=current)
    assert assembler.done and assembler.kind is Kind.IXFR
    assert [(s.from_serial, s.to_serial) for s in assembler.steps] == [(1, 2), (2, 3)]
    snapshot = assembler.snapshot
    assert snapshot is not None and snapshot.serial == 3
    assert not snapshot.has_data(names.key_from_text("a.example.test."))
    assert snapshot.has_data(names.key_from_text("b.example.test."))
    assert snapshot.has_data(names.key_from_text("c.example.test."))
    # The current version is untouched.
    assert current.serial == 1 and current.has_data(names.key_from_text("a.example.test."))


def test_ixfr_deletion_of_missing_record_is_a_diff_mismatch() -> None:
    current = _current(1).build()
    rows = [soa(2), soa(1), rr("zz.example.test.", "A", "192.0.2.9"), soa(2), soa(2)]
    with pytest.raises(StreamError, match="does not apply") as info:
        assemble([render(rows, qtype="IXFR")], qtype=TYPE_IXFR, current=current)
    assert info.value.fault is Fault.DIFF_MISMATCH


def test_ixfr_from_other_serial_is_a_diff_mismatch() -> None:
    current = _current(1).build()
    rows = [soa(3), soa(2), soa(3), soa(3)]
    with pytest.raises(StreamError, match="expected 1") as info:
        assemble([render(rows, qtype="IXFR")], qtype=TYPE_IXFR, current=current)
    assert info.value.fault is Fault.DIFF_MISMATCH


def test_ixfr_answered_axfr_style_replaces_the_zone() -> None:
    current = _current(1, rr("old.example.test.", "A", "192.0.2.1")).build()
    rows = [soa(2), rr("new.example.test.", "A", "192.0.2.2"), soa(2)]
    assembler = assemble([render(rows, qtype="IXFR")], qtype=TYPE_IXFR, current=current)
    assert assembler.kind is Kind.AXFR_STYLE_IXFR and not assembler.steps
    snapshot = assembler.snapshot
    assert snapshot is not None and snapshot.serial == 2
    assert not snapshot.has_data(names.key_from_text("old.example.test."))


@pytest.mark.parametrize("primary_serial", [1, 0, 2**31 + 1])
def test_ixfr_lone_soa_not_newer_is_up_to_date(primary_serial: int) -> None:
    current = _current(1).build()
    assembler = assemble(
        [render([soa(primary_serial)], qtype="IXFR")], qtype=TYPE_IXFR, current=current
    )
    assert assembler.kind is Kind.UP_TO_DATE and assembler.snapshot is current
    assert assembler.primary_serial == primary_serial


def test_ixfr_diff_limit() -> None:
    current = _current(1).build()
    rows = [soa(2), soa(1), soa(2)] + [
        rr(f"h{i}.example.test.", "A", "192.0.2.1") for i in range(5)
    ]
    with pytest.raises(StreamError, match="IXFR diff") as info:
        assemble(
            [render(rows, qtype="IXFR")],
            qtype=TYPE_IXFR,
            current=current,
            limits=TransferLimits(max_ixfr_records=3),
        )
    assert info.value.fault is Fault.TOO_BIG


# -- the AXFR fast paths build exactly what SnapshotBuilder builds ----------------------


def _varied_rows() -> list[tuple[str, int, str, str]]:
    """Owners at several depths (in mixed case, to hit the lowercasing of every path),
    cuts with glue, a DNAME, RRSIGs, multi-record RRsets, an NSEC3 owner, and labels
    holding 0x00/0x01 that need escaping in canonical keys."""
    rows = [
        rr("A.example.test.", "A", "192.0.2.1"),
        rr("b.A.example.test.", "TXT", '"deep"'),
        rr("x.y.Z.example.test.", "A", "192.0.2.9"),  # y.z and z are empty non-terminals
        rr("sub.example.test.", "NS", "ns.sub.example.test."),
        rr("ns.sub.example.test.", "A", "192.0.2.53"),
        rr("mail.example.test.", "MX", "10 mail.example.test."),
        rr("mail.example.test.", "A", "192.0.2.25"),
        rr("multi.example.test.", "A", "192.0.2.2"),
        rr("multi.example.test.", "A", "192.0.2.3", ttl=60),
        rr("multi.example.test.", "A", "192.0.2.2"),  # a duplicate collapses
        rr("d.example.test.", "DNAME", "elsewhere.test."),
        rr(
            "a.example.test.",
            "RRSIG",
            "A 13 3 300 20300101000000 20200101000000 1234 example.test. AAAA",
        ),
        rr(
            "0p5ne0jkmjb2qi4d0hm3m0jt5mkrjdv0.example.test.",
            "NSEC3",
            "1 0 0 - 1AVPQ7DOBA9TRNP0SOLA2BRI5KSKPQ7I A",
        ),
        rr("\\000odd.example.test.", "A", "192.0.2.7"),
        rr("\\001x.\\000odd.example.test.", "A", "192.0.2.8"),
    ]
    rows += [rr(f"h{i}.example.test.", "A", f"10.0.{i // 250}.{i % 250}") for i in range(600)]
    return rows


def test_axfr_snapshot_equals_the_builders() -> None:
    rows = [rr(ORIGIN, "NS", "ns1.example.test."), *_varied_rows()]
    # Several messages, so owners are compressed against earlier messages' offsets too.
    messages = [render([soa(9), *rows[:300]])]
    messages += [render(rows[i : i + 300], question=False) for i in range(300, len(rows), 300)]
    messages.append(render([soa(9)], question=False))
    built = assemble(messages).snapshot
    builder = SnapshotBuilder(ZONE)
    for owner, ttl, rtype, text in [soa(9), *rows]:
        builder.add(*expected_record(owner.lower(), rtype, text, ttl))
    expected = builder.build()
    assert built is not None
    assert dict(built.items()) == dict(expected.items())
    assert (built.cuts, built.dnames, built.ents) == (expected.cuts, expected.dnames, expected.ents)
    assert built.order == expected.order
    assert (built.nsec3_hashes, built.nsec3_owners) == (
        expected.nsec3_hashes,
        expected.nsec3_owners,
    )
    assert built.record_count == expected.record_count
    z = names.key_from_text("z.example.test.")
    assert z in built.ents and names.key_from_text("y.z.example.test.") in built.ents
    assert names.key_from_text("sub.example.test.") in built.cuts
    # Canonical order (RFC 4034 6.1) from the cached-parent keys equals a direct sort.
    direct = sorted(names.canonical_key(k) for k in built.owners())
    assert built.order == direct


@pytest.mark.parametrize(
    "algorithm", [dns.tsig.HMAC_SHA256, dns.tsig.HMAC_SHA512, dns.tsig.HMAC_SHA1, dns.tsig.HMAC_MD5]
)
@pytest.mark.parametrize("request_mac", [b"", b"\x17" * 32])
def test_sign_message_writes_the_same_bytes_as_dnspython(
    algorithm: str, request_mac: bytes
) -> None:
    """The hand-written signer (RFC 8945 4.3.3 on bytes) against dns.tsig.sign."""
    from authd.xfr.stream import _sign_with_dnspython, sign_message

    key = dns.tsig.Key(
        "Xfr-Key.Example.", base64.b64encode(b"0123456789abcdef").decode(), algorithm
    )
    query = dns.message.make_query("Example.Test.", "SOA")
    query.id = 0x4A2B
    wire = query.to_wire()
    for fudge in (300, 5):
        ours = sign_message(wire, key, 1_700_000_123.9, request_mac=request_mac, fudge=fudge)
        reference = _sign_with_dnspython(wire, key, 1_700_000_123.9, request_mac, fudge)
        assert ours == reference
