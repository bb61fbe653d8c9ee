"""The zone and TSIG keys the transfer client tests serve from the test primary."""

from __future__ import annotations

import base64

import dns.tsig
import dns.zone

from authd.clock import SYSTEM_CLOCK
from authd.zone import names
from authd.zone.snapshot import Record, Snapshot
from tests.support.primary import zone_records

ORIGIN = "example.test."
CLOCK = SYSTEM_CLOCK.now  # the test primary signs with the system clock too: TSIG agrees
ZONE = names.key_from_text(ORIGIN)
KEY = dns.tsig.Key("xfr-key.", base64.b64encode(b"k" * 32).decode(), "hmac-sha256")
OTHER_SECRET = dns.tsig.Key("xfr-key.", base64.b64encode(b"x" * 32).decode(), "hmac-sha256")
OTHER_NAME = dns.tsig.Key("other-key.", base64.b64encode(b"k" * 32).decode(), "hmac-sha256")


def make_zone(serial: int, hosts: int = 30, extra: str = "") -> dns.zone.Zone:
    lines = [
        f"@ 3600 IN SOA ns1 hostmaster {serial} 3600 900 1209600 300",
        "@ 3600 IN NS ns1",
        "@ 3600 IN MX 10 mail",
        "ns1 3600 IN A 192.0.2.53",
        "mail 3600 IN A 192.0.2.25",
        "_sip._udp 300 IN SRV 10 5 5060 sip",
        *(f"h{i} 300 IN A 10.0.{i // 256}.{i % 256}" for i in range(hosts)),
        extra,
    ]
    return dns.zone.from_text("\n".join(lines), ORIGIN, relativize=False)


def expected(zone: dns.zone.Zone) -> set[Record]:
    out = set()
    for owner, ttl, rdata in zone_records(zone):
        wire = rdata.to_wire()
        assert wire is not None
        out.add((names.key_from_name(owner), int(rdata.rdtype), ttl, wire))
    return out


def records_of(snapshot: Snapshot | None) -> set[Record]:
    assert snapshot is not None
    return set(snapshot.records())
