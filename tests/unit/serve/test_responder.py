"""authd.serve.responder: query bytes to response bytes, as Knot DNS answers them.

No sockets: queries are built with dns.message and fed to respond().
"""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import dns.zone
import pytest

from authd import wire
from authd.serve.responder import Responder
from authd.serve.zonetable import ZoneTable
from authd.zone import names
from tests.support.responder import ORIGIN, make, snapshot


@pytest.fixture
def zones() -> ZoneTable:
    table = ZoneTable()
    table.publish(ORIGIN, snapshot())
    return table


@pytest.fixture
def responder(zones: ZoneTable) -> Responder:
    return Responder(zones, identity="ns.test", version="authd 1", nsid=b"n1", udp_payload=1232)


def ask(
    responder: Responder, query: dns.message.Message | bytes, tcp: bool = False
) -> dns.message.Message:
    data = query if isinstance(query, bytes) else query.to_wire()
    response = responder.respond(data, tcp)
    assert response is not None
    return dns.message.from_wire(response, keyring=False)


def test_answer_flags_and_question_echoed_byte_for_byte(responder: Responder) -> None:
    query = make("WwW.ExAmPlE.tEsT.", "A", use_edns=0)
    query.flags |= dns.flags.CD | dns.flags.AD | dns.flags.TC | dns.flags.RA
    data = query.to_wire()
    for _ in range(2):  # miss, then cache hit
        response = responder.respond(data, False)
        assert response is not None
        qend = 12 + len(b"\x03WwW\x07ExAmPlE\x04tEsT\x00") + 4
        assert response[12:qend] == data[12:qend]
        msg = dns.message.from_wire(response)
        assert msg.id == query.id and msg.rcode() == dns.rcode.NOERROR
        assert msg.flags == dns.flags.QR | dns.flags.AA | dns.flags.RD
        assert [rr.rdtype for rr in msg.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert responder.cache_misses == 1 and responder.cache_hits == 1


def test_cache_hit_is_the_miss_response_with_the_new_id_rd_and_case(
    responder: Responder,
) -> None:
    first = make("mail.example.test.", "A", use_edns=0, want_dnssec=True)
    miss = responder.respond(first.to_wire(), False)
    second = make("MAIL.example.TEST.", "A", use_edns=0, want_dnssec=True)
    second.flags &= ~dns.flags.RD
    hit = responder.respond(second.to_wire(), False)
    assert miss is not None and hit is not None and responder.cache_hits == 1
    assert hit[:2] == second.to_wire()[:2] and not hit[2] & 0x01
    assert hit[12:] != miss[12:]  # case differs
    assert wire.lower(hit[12:]) == wire.lower(miss[12:])
    assert dns.message.from_wire(hit).answer[0].name.to_text() == "MAIL.example.TEST."


def test_cache_variants_do_not_mix(responder: Responder) -> None:
    plain = ask(responder, make("big.example.test.", "TXT"))
    edns = ask(responder, make("big.example.test.", "TXT", use_edns=0, payload=4096))
    tcp = ask(responder, make("big.example.test.", "TXT"), tcp=True)
    again = ask(responder, make("big.example.test.", "TXT"))
    assert plain.flags & dns.flags.TC and plain.edns == -1 and not plain.answer
    assert not edns.flags & dns.flags.TC and edns.edns == 0 and len(edns.answer) == 1
    assert not tcp.flags & dns.flags.TC and tcp.edns == -1
    assert again.flags & dns.flags.TC
    assert responder.cache_hits == 1 and responder.truncated == 2


def test_publish_swaps_version_and_cache(zones: ZoneTable, responder: Responder) -> None:
    query = make("example.test.", "SOA")
    assert ask(responder, query).answer[0][0].serial == 2026112201
    zones.publish(ORIGIN, snapshot(serial=2026112202))
    assert ask(responder, query).answer[0][0].serial == 2026112202


def test_edns_opt_payload_do_and_nsid(responder: Responder) -> None:
    msg = ask(responder, make(use_edns=0, payload=4096, want_dnssec=True))
    assert msg.edns == 0 and msg.payload == 1232 and msg.ednsflags & dns.flags.DO
    assert not msg.options
    nsid = dns.edns.GenericOption(dns.edns.NSID, b"")
    msg = ask(responder, make(use_edns=0, options=[nsid]))
    assert not msg.ednsflags & dns.flags.DO
    assert [(o.otype, o.to_wire()) for o in msg.options] == [(dns.edns.NSID, b"n1")]
    silent = Responder(ZoneTable(), identity="", version="", nsid=b"", udp_payload=1232)
    msg = ask(silent, make(use_edns=0, options=[nsid]))
    assert [o.otype for o in msg.options] == [dns.edns.EDE]  # REFUSED: no zone


def test_badvers_copies_do(responder: Responder) -> None:
    msg = ask(responder, make(use_edns=1, want_dnssec=True))
    assert msg.rcode() == dns.rcode.BADVERS and msg.edns == 0
    assert msg.ednsflags & dns.flags.DO and not msg.answer
    assert responder.rcodes[16] == 1


def test_malformed_queries_formerr_or_nothing(responder: Responder) -> None:
    data = make(use_edns=0).to_wire()
    no_question = data[:4] + b"\x00\x00" + data[6:12] + data[-11:]
    msg = ask(responder, no_question)
    assert msg.rcode() == dns.rcode.FORMERR and not msg.question and msg.edns == 0
    msg = ask(responder, data + b"\x00")
    assert msg.rcode() == dns.rcode.FORMERR and msg.edns == -1
    assert str(msg.question[0].name) == "example.test."
    assert responder.respond(data[:11], False) is None
    assert responder.respond(data[:2] + bytes([data[2] | 0x80]) + data[3:], False) is None
    assert responder.respond(data[:20], False) is None
    assert responder.dropped == 3


@pytest.mark.parametrize(
    ("opcode", "rcode"),
    [
        (dns.opcode.NOTIFY, dns.rcode.NOTAUTH),
        (dns.opcode.UPDATE, dns.rcode.NOTAUTH),
        (dns.opcode.IQUERY, dns.rcode.NOTIMP),
        (dns.opcode.STATUS, dns.rcode.NOTIMP),
        (6, dns.rcode.NOTIMP),
        (15, dns.rcode.NOTIMP),
    ],
)
def test_opcodes(responder: Responder, opcode: int, rcode: int) -> None:
    query = make(use_edns=0)
    query.set_opcode(opcode)  # type: ignore[arg-type]
    msg = ask(responder, query)
    assert msg.opcode() == opcode and msg.rcode() == rcode
    assert not msg.answer and msg.edns == 0 and not msg.flags & dns.flags.AA


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, 6, 15])
def test_unknown_opcode_without_a_question_is_notimp(responder: Responder, opcode: int) -> None:
    """RFC 1035 4.1.1 and Knot (`dig +opcode=15 +header-only`): NOTIMP, not FORMERR."""
    header = b"\xbe\xef" + bytes([opcode << 3, 0]) + b"\x00" * 8
    msg = dns.message.from_wire(responder.respond(header, False) or b"")
    assert (msg.id, msg.opcode(), msg.rcode()) == (0xBEEF, opcode, dns.rcode.NOTIMP)
    assert not msg.question
    # A known opcode without a question stays a format error.
    query_header = b"\xbe\xef\x00\x00" + b"\x00" * 8
    assert dns.message.from_wire(responder.respond(query_header, False) or b"").rcode() == (
        dns.rcode.FORMERR
    )


def test_notify_hook_gets_the_parsed_query(responder: Responder) -> None:
    seen: list[tuple[int, object]] = []

    def on_notify(data: bytes, query: wire.Query, client: object) -> bytes | None:
        seen.append((query.opcode, client))
        return None

    responder.notify_handler = on_notify
    query = make()
    query.set_opcode(dns.opcode.NOTIFY)
    assert responder.respond(query.to_wire(), False, ("127.0.0.1", 5300)) is None
    assert seen == [(dns.opcode.NOTIFY, ("127.0.0.1", 5300))]


def test_transfers_and_meta_qtypes(responder: Responder) -> None:
    assert ask(responder, make(rdtype="AXFR")).rcode() == dns.rcode.NOTIMP
    assert ask(responder, make(rdtype="AXFR"), tcp=True).rcode() == dns.rcode.NOTAUTH
    assert ask(responder, make(rdtype="IXFR")).rcode() == dns.rcode.NOTAUTH
    assert ask(responder, make(rdtype="AXFR", name="not.served."), tcp=True).rcode() == 9
    assert ask(responder, make(rdtype=0)).rcode() == dns.rcode.NOTIMP


def test_classes(responder: Responder) -> None:
    msg = ask(responder, make(rdclass="ANY"))
    assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    assert msg.question[0].rdclass == dns.rdataclass.ANY
    assert msg.answer[0].rdclass == dns.rdataclass.IN
    for rdclass in ("HS", "NONE", "CLASS7"):
        assert ask(responder, make(rdclass=rdclass)).rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("id.server.", "ns.test"),
        ("HOSTNAME.bind.", "ns.test"),
        ("version.bind.", "authd 1"),
        ("Version.Server.", "authd 1"),
    ],
)
def test_chaos_identity_and_version(responder: Responder, name: str, text: str) -> None:
    msg = ask(responder, make(name, "TXT", "CH", use_edns=0))
    assert msg.rcode() == dns.rcode.NOERROR and not msg.flags & dns.flags.AA
    (rrset,) = msg.answer
    assert rrset.name.to_text() == name and rrset.ttl == 0
    assert rrset.rdclass == dns.rdataclass.CH and rrset[0].strings == (text.encode(),)
    assert msg.edns == 0


def test_chaos_refused_cases(responder: Responder) -> None:
    silent = Responder(ZoneTable(), identity="", version="", nsid=b"", udp_payload=1232)
    assert ask(silent, make("id.server.", "TXT", "CH")).rcode() == dns.rcode.REFUSED
    assert ask(silent, make("version.bind.", "TXT", "CH")).rcode() == dns.rcode.REFUSED
    for name, rdtype in (("id.server.", "A"), ("x.id.server.", "TXT"), ("foo.", "TXT")):
        assert ask(responder, make(name, rdtype, "CH")).rcode() == dns.rcode.REFUSED
    assert ask(responder, make("id.server.", "TXT", "IN")).rcode() == dns.rcode.REFUSED


def test_name_outside_every_zone_is_refused_with_ede(responder: Responder) -> None:
    msg = ask(responder, make("example.org.", "A", use_edns=0))
    assert msg.rcode() == dns.rcode.REFUSED and not msg.flags & dns.flags.AA
    assert [(o.otype, o.code) for o in msg.options] == [(dns.edns.EDE, 20)]
    assert ask(responder, make("example.org.", "A")).edns == -1


def test_zone_states_servfail(zones: ZoneTable, responder: Responder) -> None:
    other = names.key_from_text("other.test.")
    zones.add_zone(other)
    msg = ask(responder, make("www.other.test.", "A"))
    assert msg.rcode() == dns.rcode.SERVFAIL and not msg.flags & dns.flags.AA
    zones.set_state(other, servfail=False)  # still never loaded
    assert ask(responder, make("www.other.test.", "A")).rcode() == dns.rcode.SERVFAIL
    query = make("mail.example.test.", "A")
    assert ask(responder, query).rcode() == dns.rcode.NOERROR  # cached now
    zones.set_state(ORIGIN, servfail=True)
    assert ask(responder, query).rcode() == dns.rcode.SERVFAIL
    zones.set_state(ORIGIN, servfail=False)
    assert ask(responder, query).answer[0][0].address == "192.0.2.25"
    zones.remove_zone(ORIGIN)
    assert ask(responder, query).rcode() == dns.rcode.REFUSED


def test_longest_zone_match(zones: ZoneTable, responder: Responder) -> None:
    child = "sub.example.test."
    zones.publish(
        names.key_from_text(child),
        snapshot("@ SOA ns1 h 7 1 1 1 1\n@ NS ns1\nns1 A 192.0.2.9\n", origin=child),
    )
    assert zones.find(names.key_from_text("ns1.sub.example.test.")).origin == (  # type: ignore[union-attr]
        names.key_from_text(child)
    )
    msg = ask(responder, make("ns1.sub.example.test.", "A"))
    assert msg.flags & dns.flags.AA and msg.answer[0][0].address == "192.0.2.9"
    assert zones.find(names.key_from_text("test.")) is None


def test_udp_truncation_and_tcp_retry(responder: Responder) -> None:
    udp = ask(responder, make("big.example.test.", "TXT", use_edns=0, payload=512))
    assert udp.flags & dns.flags.TC and not udp.answer and udp.edns == 0
    tcp = ask(responder, make("big.example.test.", "TXT", use_edns=0, payload=512), tcp=True)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0][0].strings) == 4


def test_tsig_from_an_unknown_key_gets_notauth_badkey(responder: Responder) -> None:
    keyring = dns.tsigkeyring.from_text({"k.": "aGVsbG8gd29ybGQgMTIzNDU2Nzg5MA=="})
    query = make(use_edns=0)
    query.use_tsig(keyring, "k.", original_id=4242)
    msg = ask(responder, query)
    assert msg.rcode() == dns.rcode.NOTAUTH and msg.edns == 0
    assert msg.tsig is not None
    tsig = msg.tsig[0]
    assert tsig.error == 17 and tsig.mac == b"" and tsig.original_id == 4242
    assert str(msg.tsig.name) == "k."


def test_counters(responder: Responder) -> None:
    responder.respond(make("mail.example.test.", "A").to_wire(), False)
    responder.respond(make("mail.example.test.", "A").to_wire(), False)
    responder.respond(make("nope.example.test.", "AAAA").to_wire(), True)
    responder.respond(make("x.org.", "MX").to_wire(), False)
    assert (responder.udp_queries, responder.tcp_queries) == (3, 1)
    assert responder.rcodes[dns.rcode.NOERROR] == 2
    assert responder.rcodes[dns.rcode.NXDOMAIN] == 1
    assert responder.rcodes[dns.rcode.REFUSED] == 1
    assert responder.qtypes == {1: 2, 28: 1, 15: 1}
    assert responder.zone_queries == {ORIGIN: 3}


def test_plain_opt_with_options_still_hits_the_cache(responder: Responder) -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    first = make("web.example.test.", "A", use_edns=0, options=[cookie])
    ask(responder, first)
    ask(responder, first)
    assert responder.cache_hits == 1
    # An OPT whose owner is not the root is still accepted, through the slow path.
    data = make("web.example.test.", "A", use_edns=0).to_wire()
    odd = data[:-11] + b"\x01a\x00" + data[-10:]
    assert ask(responder, odd).answer
    assert struct.unpack(">H", odd[10:12]) == (1,)
