"""A small zone and query helpers shared by the responder tests."""

from __future__ import annotations

import dns.message
import dns.rdatatype
import dns.zone

from authd.zone import names
from authd.zone.snapshot import Snapshot, SnapshotBuilder

ZONE = """
$TTL 3600
@       SOA  ns1 hostmaster 2026112201 3600 900 1209600 300
        NS   ns1
        MX   10 mail
ns1     A    192.0.2.53
mail    A    192.0.2.25
www     CNAME web
web     A    192.0.2.80
big     TXT  "{0}1" "{0}2" "{0}3" "{0}4"
""".format("x" * 200)

ORIGIN = names.key_from_text("example.test.")


def snapshot(
    text: str = ZONE, origin: str = "example.test.", serial: int | None = None
) -> Snapshot:
    zone = dns.zone.from_text(text, origin=origin, relativize=False)
    builder = SnapshotBuilder(names.key_from_text(origin))
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            for rdata in rdataset:
                if serial is not None and rdataset.rdtype == dns.rdatatype.SOA:
                    rdata = rdata.replace(serial=serial)
                key = names.key_from_name(name)
                builder.add(key, rdataset.rdtype, rdataset.ttl, rdata.to_wire())
    return builder.build()


def make(
    name: str = "example.test.", rdtype: str | int = "SOA", rdclass: str = "IN", **kw: object
) -> dns.message.QueryMessage:
    return dns.message.make_query(name, rdtype, rdclass, **kw)  # type: ignore[arg-type]
