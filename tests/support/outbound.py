"""Zones, queries and answers shared by the outbound-transfer tests (xfrout, xfr_edge,
ixfr_from_axfr, provide, notify_out)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from authd.serve.responder import Responder
from authd.serve.xfr_edge import ProvideSettings, XfrEndpoint
from authd.serve.xfrout import MessageStream
from authd.serve.zonetable import ZoneTable
from authd.xfr.notify import AllowedSource
from authd.xfr.stream import (
    TransferAssembler,
    TransferLimits,
    TsigVerifier,
    parse_message,
    sign_message,
)
from authd.zone import names
from authd.zone.journal import VersionMeta
from authd.zone.snapshot import Record, Snapshot, SnapshotBuilder

ORIGIN = "example.com."


QUESTION_AXFR = b"\x07example\x03com\x00\x00\xfc\x00\x01"


QKEY = names.key_from_text(ORIGIN)


def wire(rtype: str, text: str) -> bytes:
    data = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text).to_wire()
    assert data is not None
    return data


def rec(owner: str, rtype: str, text: str, ttl: int = 300) -> Record:
    return (names.key_from_text(owner), dns.rdatatype.from_text(rtype), ttl, wire(rtype, text))


def soa(serial: int) -> Record:
    return rec(ORIGIN, "SOA", f"ns1.example.com. h.example.com. {serial} 7200 900 1209600 300")


def build(records: list[Record]) -> Snapshot:
    builder = SnapshotBuilder(QKEY)
    builder.add_records(records)
    return builder.build()


def zone(serial: int = 1, hosts: int = 300, big_txt: int = 0) -> Snapshot:
    rows = [
        soa(serial),
        rec(ORIGIN, "NS", "ns1.example.com."),
        rec("ns1." + ORIGIN, "A", "192.0.2.1"),
    ]
    rows += [rec(f"h{i}.{ORIGIN}", "A", f"198.51.100.{i % 250}") for i in range(hosts)]
    rows += [rec(f"h{i}.{ORIGIN}", "MX", f"10 mail.h{i}.{ORIGIN}") for i in range(0, hosts, 3)]
    rows += [
        rec(f"big.{ORIGIN}", "TXT", f'"record number {i:04d} {"x" * 40}"') for i in range(big_txt)
    ]
    rows += [rec(f"sub.{ORIGIN}", "NS", "ns.sub.example.net.")]
    return build(rows)


def decode(messages: list[bytes]) -> list[tuple[dns.name.Name, int, int, bytes]]:
    """Every answer record of every message, in order, as (owner, type, ttl, rdata wire)."""
    out = []
    for index, data in enumerate(messages):
        message = dns.message.from_wire(data, one_rr_per_rrset=True)
        assert (len(message.question) == 1) == (index == 0)
        assert message.flags & dns.flags.AA and message.id == 4242
        for rrset in message.answer:
            for rdata in rrset:
                out.append(
                    (rrset.name, int(rrset.rdtype), rrset.ttl, rdata.to_digestable(dns.name.root))
                )
    return out


def as_records(snapshot: Snapshot) -> list[tuple[dns.name.Name, int, int, bytes]]:
    return [
        (
            names.to_name(o),
            t,
            ttl,
            dns.rdata.from_wire(dns.rdataclass.IN, t, r, 0, len(r)).to_digestable(dns.name.root),
        )
        for o, t, ttl, r in snapshot.records()
    ]


NOW = 1_800_000_000.0


KEY = dns.tsig.Key(
    "down-key.", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=", dns.tsig.HMAC_SHA256
)


CLIENT = ("192.0.2.9", 5353)


META = VersionMeta("IXFR", NOW, "provider")


def versions() -> list[Snapshot]:
    v1 = zone(serial=1, hosts=60)
    v2 = v1.apply_diff(
        [soa(1), rec(f"h3.{ORIGIN}", "A", "198.51.100.3")],
        [soa(2), rec(f"h3.{ORIGIN}", "A", "203.0.113.3")],
    )
    v3 = v2.apply_diff([soa(2)], [soa(3), rec(f"new.{ORIGIN}", "AAAA", "2001:db8::1")])
    return [v1, v2, v3]


def diff_records(old: Snapshot, new: Snapshot) -> tuple[list, list]:  # type: ignore[type-arg]
    from authd.serve.xfrout import diff

    deleted, added = diff(old, new)
    return [(old.origin, 6, old.soa_ttl, old.soa_rdata), *deleted], [
        (new.origin, 6, new.soa_ttl, new.soa_rdata),
        *added,
    ]


def responder(state_dir: Path | None, served: Snapshot, **settings: object) -> Responder:
    table = ZoneTable()
    table.publish(QKEY, served)
    acl = (AllowedSource(ipaddress.ip_network("192.0.2.0/24"), "down-key."),)
    provide = ProvideSettings(acl, bool(settings.get("provide_expired", False)))
    endpoint = XfrEndpoint(
        table, {QKEY: provide}, {"down-key.": KEY}, state_dir, clock=lambda: NOW, budget=1200
    )
    r = Responder(table, identity="", version="", nsid=b"", udp_payload=1232)
    r.xfr_handler = endpoint
    return r


def ask(
    r: Responder,
    rdtype: str,
    serial: int | None = None,
    *,
    tcp: bool = True,
    key: dns.tsig.Key | None = KEY,
    client: tuple[str, int] = CLIENT,
    edns: bool = False,
) -> tuple[list[bytes], bytes]:
    """(every answer message, the request MAC) for a transfer request."""
    query = dns.message.make_query(ORIGIN, rdtype, use_edns=0 if edns else None)
    if serial is not None:
        query.authority.append(
            dns.rrset.from_text(
                ORIGIN, 0, "IN", "SOA", f"ns1.example.com. h.example.com. {serial} 1 1 1 1"
            )
        )
    query.id = 4242
    data = query.to_wire()
    mac = b""
    if key is not None:
        data, mac = sign_message(data, key, NOW)
    answer = r.respond(data, tcp, client)
    assert answer is not None
    messages = [bytes(answer)]
    if isinstance(answer, MessageStream):
        messages += list(answer.rest)
    return messages, mac


def receive(
    messages: list[bytes], qtype: int, current: Snapshot | None, mac: bytes
) -> TransferAssembler:
    """Read an answer as authd's own secondary does (TSIG on every message checked)."""
    assembler = TransferAssembler(QKEY, qtype, 4242, TransferLimits(), current)
    verifier = TsigVerifier(KEY, mac)
    done = False
    for raw in messages:
        message = parse_message(raw)
        verifier.check(raw, message, NOW)
        done = assembler.feed(message)
    verifier.finish()
    assert done
    return assembler
