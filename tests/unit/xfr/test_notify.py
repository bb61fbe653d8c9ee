"""NOTIFY handling as pure logic: ACL, TSIG, responses, rate-limited refusal logs."""

from __future__ import annotations

import base64
import ipaddress
import time

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from authd.xfr.notify import (
    AllowedSource,
    NotifyResult,
    RateLimitedLog,
    acl_allows,
    handle_notify,
)
from authd.zone import names

ZONE = names.key_from_text("example.test.")
KEY = dns.tsig.Key("xfr-key.", base64.b64encode(b"k" * 32).decode(), "hmac-sha256")
OTHER = dns.tsig.Key("other-key.", base64.b64encode(b"o" * 32).decode(), "hmac-sha256")
KEYRING = {"xfr-key.": KEY, "other-key.": OTHER}
SOA = "ns1.example.test. hostmaster.example.test. {} 3600 900 1209600 300"

ALLOWED = {
    ZONE: [
        AllowedSource(ipaddress.ip_network("192.0.2.0/24"), "xfr-key.", "provider"),
        AllowedSource(ipaddress.ip_network("2001:db8::/32"), None, "2001:db8::/32"),
    ]
}


def notify(
    zone: str = "example.test.", serial: int | None = 7, key: dns.tsig.Key | None = KEY
) -> dns.message.Message:
    message = dns.message.make_query(zone, dns.rdatatype.SOA)
    message.flags = dns.flags.AA
    message.set_opcode(dns.opcode.NOTIFY)
    if serial is not None:
        rdata = dns.rdata.from_text("IN", "SOA", SOA.format(serial))
        message.answer.append(dns.rrset.from_rdata(zone, 3600, rdata))
    if key is not None:
        message.use_tsig(key)
    return message


def run(
    message: dns.message.Message,
    source: str,
    now: float | None = None,
    log: RateLimitedLog | None = None,
) -> NotifyResult:
    wire = message.to_wire()
    return handle_notify(
        wire,
        source,
        time.time() if now is None else now,
        zones=ALLOWED,
        keyring=KEYRING,
        refusals=log or RateLimitedLog(),
    )


def test_signed_notify_from_allowed_source_is_accepted_and_answered_signed() -> None:
    request = notify(serial=42)
    result = run(request, "192.0.2.53")
    assert result.accepted and result.zone == ZONE and result.serial == 42
    assert result.response is not None
    # dnspython verifies our signed answer against the request MAC.
    response = dns.message.from_wire(
        result.response,
        keyring={KEY.name: KEY},
        request_mac=request.mac,
    )
    assert response.id == request.id and response.opcode() == dns.opcode.NOTIFY
    assert response.flags & dns.flags.QR and response.flags & dns.flags.AA
    assert response.rcode() == dns.rcode.NOERROR and response.had_tsig
    assert response.question == request.question


def test_unsigned_notify_where_a_key_is_required_is_notauth() -> None:
    result = run(notify(key=None), "192.0.2.53")
    assert not result.accepted and result.log
    assert result.response is not None
    response = dns.message.from_wire(result.response)
    assert response.rcode() == dns.rcode.NOTAUTH and not response.flags & dns.flags.AA


def test_prefix_without_key_accepts_unsigned_and_signed() -> None:
    assert run(notify(key=None), "2001:db8::5").accepted
    assert run(notify(key=OTHER), "2001:db8::5").accepted


def test_stranger_gets_notauth_with_badkey_when_signed() -> None:
    result = run(notify(key=OTHER), "198.51.100.1")
    assert not result.accepted and "not allowed by notify-from" in result.reason
    assert result.response is not None
    response = dns.message.from_wire(result.response, keyring=False)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert response.tsig is not None and response.tsig[0].error == dns.rcode.BADKEY


def test_wrong_key_for_the_prefix_is_refused() -> None:
    result = run(notify(key=OTHER), "192.0.2.53")
    assert not result.accepted and "signed with other-key." in result.reason


def test_bad_mac_is_badsig() -> None:
    forged = dns.tsig.Key("xfr-key.", base64.b64encode(b"f" * 32).decode(), "hmac-sha256")
    result = run(notify(key=forged), "192.0.2.53")
    assert not result.accepted and "does not verify" in result.reason
    assert result.response is not None
    response = dns.message.from_wire(result.response, keyring=False)
    assert response.tsig is not None and response.tsig[0].error == dns.rcode.BADSIG


def test_time_outside_fudge_is_badtime_with_offset() -> None:
    result = run(notify(), "192.0.2.53", now=time.time() + 1000)
    assert not result.accepted and "-1000 s off" in result.reason.replace("-999 s", "-1000 s")


def test_zone_we_do_not_serve_is_notauth() -> None:
    result = run(notify(zone="other.test."), "192.0.2.53")
    assert not result.accepted and "not secondary" in result.reason


def test_query_that_is_not_a_notify_is_formerr() -> None:
    query = dns.message.make_query("example.test.", dns.rdatatype.SOA)
    result = run(query, "192.0.2.53")
    assert not result.accepted and result.response is not None
    assert dns.message.from_wire(result.response).rcode() == dns.rcode.FORMERR


def test_refusals_are_logged_once_per_source_and_minute() -> None:
    log = RateLimitedLog(interval=60)
    now = 1_000_000.0
    logged = [run(notify(key=None), "198.51.100.1", now + i, log).log for i in range(30)]
    assert logged == [True] + [False] * 29
    # Another source has its own budget; after the interval the first logs again.
    assert run(notify(key=None), "198.51.100.2", now + 1, log).log
    again = run(notify(key=None), "198.51.100.1", now + 61, log)
    assert again.log and again.suppressed == 29


def test_rate_limited_log_memory_is_bounded() -> None:
    log = RateLimitedLog(interval=60, max_keys=100)
    for i in range(1000):
        log.allow(f"10.0.{i // 256}.{i % 256}", 5.0)
    assert len(log._last) <= 100


@pytest.mark.parametrize(
    ("source", "key", "label"),
    [
        ("192.0.2.9", "xfr-key.", "provider"),
        ("192.0.2.9", None, None),
        ("2001:db8::1", None, "2001:db8::/32"),
        ("192.0.3.1", "xfr-key.", None),
    ],
)
def test_acl(source: str, key: str | None, label: str | None) -> None:
    entry = acl_allows(ALLOWED[ZONE], source, key)
    assert (entry.label if entry else None) == label
