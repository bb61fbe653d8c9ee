"""A catalog zone is not for resolution (RFC 9432 3): ordinary queries get REFUSED with EDE 20
(as knotd answers them), except from clients provide-xfr admits (a downstream secondary's SOA
check), whose answers are never cached; transfers go on as for any zone."""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.message
import dns.rcode
import dns.tsig

from authd.serve.responder import Responder
from authd.serve.xfr_edge import ProvideSettings, XfrEndpoint
from authd.serve.zonetable import ZoneTable
from authd.xfr.notify import AllowedSource
from authd.xfr.stream import TYPE_AXFR, TsigVerifier, parse_message, sign_message
from tests.support.outbound import CLIENT, KEY, NOW, ORIGIN, QKEY, ask, receive, zone

STRANGER = ("203.0.113.7", 5353)
OPEN_HOST = ("198.51.100.20", 5353)  # admitted by address alone


def catalog_responder(catalog: bool = True) -> Responder:
    table = ZoneTable()
    table.publish(QKEY, zone(serial=5, hosts=5))
    acl = (
        AllowedSource(ipaddress.ip_network("192.0.2.0/24"), "down-key."),
        AllowedSource(ipaddress.ip_network("198.51.100.20/32"), None),
    )
    endpoint = XfrEndpoint(
        table, {QKEY: ProvideSettings(acl)}, {"down-key.": KEY}, None, lambda: NOW
    )
    r = Responder(table, identity="", version="", nsid=b"", udp_payload=1232)
    r.xfr_handler = endpoint
    if catalog:
        r.catalogs = frozenset({QKEY})
    return r


def plain(name: str = ORIGIN, rdtype: str = "SOA", edns: bool = True) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=0 if edns else None)
    query.id = 77
    return query.to_wire()


def reply(r: Responder, data: bytes, tcp: bool, client: tuple[str, int]) -> dns.message.Message:
    answer = r.respond(data, tcp, client)
    assert answer is not None
    return dns.message.from_wire(answer, ignore_trailing=True, keyring={KEY.name: KEY})


def test_ordinary_queries_are_refused_with_ede_20_over_udp_and_tcp() -> None:
    r = catalog_responder()
    for tcp in (False, True):
        for name, rdtype in ((ORIGIN, "SOA"), (ORIGIN, "NS"), ("h1." + ORIGIN, "A")):
            for _ in range(2):  # the second would be a cache hit if the first were cached
                message = reply(r, plain(name, rdtype), tcp, STRANGER)
                assert message.rcode() == dns.rcode.REFUSED and not message.answer
                ede = [o for o in message.options if o.otype == dns.edns.OptionType.EDE]
                assert [o.code for o in ede] == [dns.edns.EDECode.NOT_AUTHORITATIVE]  # type: ignore[attr-defined]
        message = reply(r, plain("nothing." + ORIGIN, "A", edns=False), tcp, STRANGER)
        assert message.rcode() == dns.rcode.REFUSED  # not an NXDOMAIN from the negative path


def test_the_same_zone_not_a_catalog_is_answered() -> None:
    r = catalog_responder(catalog=False)
    message = reply(r, plain(), False, STRANGER)
    assert message.rcode() == dns.rcode.NOERROR and message.answer


def test_a_downstream_soa_check_allowed_by_provide_xfr_is_answered_and_not_cached() -> None:
    r = catalog_responder()
    for tcp in (False, True):
        data, mac = sign_message(plain(edns=False), KEY, NOW)
        answer = r.respond(data, tcp, CLIENT)
        assert answer is not None
        message = parse_message(answer)
        TsigVerifier(KEY, mac).check(answer, message, NOW)  # signed with the same key
        assert message.rcode == 0 and [rec[1] for rec in message.records] == [6]
        # The same question unsigned, from the same address: the key is required there.
        assert reply(r, plain(edns=False), tcp, CLIENT).rcode() == dns.rcode.REFUSED
    # Signed with the right key from an address outside its entry: refused, signed.
    data, mac = sign_message(plain(), KEY, NOW)
    answer = r.respond(data, False, STRANGER)
    assert answer is not None
    message = parse_message(answer)
    TsigVerifier(KEY, mac).check(answer, message, NOW)
    assert message.rcode == dns.rcode.REFUSED
    # An entry without a key admits its address unsigned; still nothing cached for others.
    assert reply(r, plain(), False, OPEN_HOST).rcode() == dns.rcode.NOERROR
    assert reply(r, plain(), False, STRANGER).rcode() == dns.rcode.REFUSED
    assert r.zone_queries.get(QKEY) == 3  # answered ones only


def test_transfers_of_a_catalog_go_on() -> None:
    r = catalog_responder()
    messages, mac = ask(r, "AXFR")
    got = receive(messages, TYPE_AXFR, None, mac)
    assert got.snapshot is not None and got.snapshot.serial == 5
    messages, _ = ask(r, "AXFR", key=None, client=STRANGER)
    assert messages[0][3] & 0xF == dns.rcode.REFUSED  # outside provide-xfr, as for any zone
