"""Tests of xfr/provide.py: who may transfer, TSIG on requests and answers, the IXFR plan."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.xfr
import dns.zone
import pytest

from authd import wire
from authd.serve import xfrout
from authd.xfr import provide
from authd.xfr.notify import BADKEY, BADSIG, BADTIME, AllowedSource
from authd.xfr.stream import TsigVerifier, parse_message, sign_message
from tests.support.outbound import QKEY, zone

NOW = 1_800_000_000.0
SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
KEY = dns.tsig.Key("down-key.", SECRET, dns.tsig.HMAC_SHA256)
OTHER = dns.tsig.Key("other-key.", SECRET, dns.tsig.HMAC_SHA256)
KEYRING = {"down-key.": KEY, "other-key.": OTHER}
NET = ipaddress.ip_network("192.0.2.0/24")


def request(rdtype: str = "AXFR", key: dns.tsig.Key | None = None, edns: bool = False) -> bytes:
    """A transfer request, signed at NOW when a key is given (dnspython would use time.time)."""
    query = dns.message.make_query("example.com.", rdtype, use_edns=0 if edns else None)
    if rdtype == "IXFR":
        query.authority.append(
            dns.rrset.from_text(
                "example.com.", 0, "IN", "SOA", "ns1.example.com. h.example.com. 1 1 1 1 1"
            )
        )
    data = query.to_wire()
    if key is not None:
        data, _ = sign_message(data, key, NOW)
    return data


def parsed(data: bytes) -> wire.Query:
    query = wire.parse_query(data)
    assert query is not None
    return query


def view(**kw: object) -> provide.ZoneView:
    base: dict[str, object] = {
        "acl": (AllowedSource(NET, "down-key."),),
        "loaded": True,
        "expired": False,
    }
    base.update(kw)
    return provide.ZoneView(**base)  # type: ignore[arg-type]


def test_tsig_checks_use_the_injected_clock() -> None:
    good = provide.verify_tsig(request(key=KEY), KEYRING, NOW)
    assert good.key == "down-key." and good.error == 0 and good.request_mac
    assert provide.verify_tsig(request(), KEYRING, NOW) == provide.TsigCheck()
    unknown = provide.verify_tsig(request(key=KEY), {"other-key.": OTHER}, NOW)
    assert unknown.error == BADKEY
    wrong = dns.tsig.Key("down-key.", "d3Jvbmd3cm9uZ3dyb25nd3Jvbmc=", dns.tsig.HMAC_SHA256)
    assert provide.verify_tsig(request(key=wrong), KEYRING, NOW).error == BADSIG
    late = provide.verify_tsig(request(key=KEY), KEYRING, NOW + 301)
    assert late.error == BADTIME and "-301 s" in late.reason


@pytest.mark.parametrize(
    ("zone_view", "source", "key", "tcp", "qtype", "expected"),
    [
        (view(), "192.0.2.9", "down-key.", True, 252, provide.Result.AXFR),
        (view(), "192.0.2.9", "down-key.", True, 251, provide.Result.IXFR),
        (view(), "192.0.2.9", "down-key.", False, 252, provide.Result.UDP_AXFR),
        (None, "192.0.2.9", "down-key.", True, 252, provide.Result.NOT_AUTH),
        (view(), "198.51.100.1", "down-key.", True, 252, provide.Result.REFUSED),
        (view(), "192.0.2.9", None, True, 252, provide.Result.REFUSED),
        (view(), "192.0.2.9", "other-key.", True, 252, provide.Result.REFUSED),
        (view(acl=()), "192.0.2.9", "down-key.", True, 252, provide.Result.REFUSED),
        (view(loaded=False), "192.0.2.9", "down-key.", True, 252, provide.Result.NOT_LOADED),
        (view(expired=True), "192.0.2.9", "down-key.", True, 252, provide.Result.EXPIRED),
        (
            view(expired=True, provide_expired=True),
            "192.0.2.9",
            "down-key.",
            True,
            252,
            provide.Result.AXFR,
        ),
    ],
)
def test_decide(
    zone_view: provide.ZoneView | None,
    source: str,
    key: str | None,
    tcp: bool,
    qtype: int,
    expected: provide.Result,
) -> None:
    decision = provide.decide(zone_view, source, provide.TsigCheck(key), tcp, qtype)
    assert decision.result is expected
    assert decision.allowed == (expected in (provide.Result.AXFR, provide.Result.IXFR))
    if expected in (provide.Result.REFUSED, provide.Result.EXPIRED):
        assert decision.rcode == dns.rcode.REFUSED and decision.ede == 18


def test_a_tsig_error_wins_over_the_acl() -> None:
    bad = provide.TsigCheck(error=BADSIG, reason="x")
    decision = provide.decide(view(), "192.0.2.9", bad, True, 252)
    assert decision.result is provide.Result.BAD_TSIG and decision.rcode == dns.rcode.NOTAUTH


def test_refusal_carries_ede_18_with_edns_and_is_signed_when_the_request_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("time.time", lambda: NOW)  # dnspython's TSIG check reads it
    data = request(key=KEY, edns=True)
    tsig = provide.verify_tsig(data, KEYRING, NOW)
    decision = provide.decide(view(acl=()), "192.0.2.9", tsig, True, 252)
    answer = provide.refusal(data, parsed(data), decision, tsig, KEY, NOW, 1232)
    message = parse_message(answer)
    assert message.rcode == dns.rcode.REFUSED and message.tsig_start > 0
    TsigVerifier(KEY, tsig.request_mac).check(answer, message, NOW)  # verifies
    decoded = dns.message.from_wire(answer, keyring={KEY.name: KEY}, request_mac=tsig.request_mac)
    assert decoded.edns == 0
    assert [(o.otype, o.code) for o in decoded.options] == [(15, 18)]
    plain = request()
    unsigned = provide.refusal(plain, parsed(plain), decision, provide.TsigCheck(), None, NOW, 1232)
    assert dns.message.from_wire(unsigned).edns == -1  # no EDNS asked, none sent


def test_bad_tsig_answer_echoes_the_request_tsig_with_the_error_and_no_mac() -> None:
    wrong = dns.tsig.Key("down-key.", "d3Jvbmd3cm9uZ3dyb25nd3Jvbmc=", dns.tsig.HMAC_SHA256)
    data = request(key=wrong)
    tsig = provide.verify_tsig(data, KEYRING, NOW)
    decision = provide.decide(view(), "192.0.2.9", tsig, True, 252)
    answer = provide.refusal(data, parsed(data), decision, tsig, None, NOW, 1232)
    message = parse_message(answer)
    assert message.rcode == dns.rcode.NOTAUTH
    rdata = dns.rdata.from_wire(
        dns.rdataclass.ANY, 250, answer, message.tsig_rdata_start, message.tsig_rdata_length
    )
    assert rdata.error == BADSIG and rdata.mac == b""  # type: ignore[attr-defined]


def test_signed_stream_verifies_message_by_message_and_in_dnspython_inbound_xfr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = request(key=KEY)
    tsig = provide.verify_tsig(data, KEYRING, NOW)
    snapshot = zone(hosts=300)
    question = data[12 : parsed(data).question_end]
    messages = list(
        provide.sign_stream(
            xfrout.axfr_messages(snapshot, parsed(data).id, 0, question, QKEY, budget=1500),
            KEY,
            tsig.request_mac,
            NOW,
        )
    )
    assert len(messages) > 5
    verifier = TsigVerifier(KEY, tsig.request_mac)
    for message in messages:
        verifier.check(message, parse_message(message), NOW)
    verifier.finish()
    # dnspython reads time.time() for TSIG; pin it to the signing time (DESIGN.md).
    monkeypatch.setattr("time.time", lambda: NOW)
    target = dns.zone.Zone("example.com.")
    with dns.xfr.Inbound(target, dns.rdatatype.AXFR) as inbound:
        ctx = None
        done = False
        for raw in messages:  # as dns.query.inbound_xfr reads a TCP transfer
            message = dns.message.from_wire(
                raw,
                keyring={KEY.name: KEY},
                request_mac=tsig.request_mac,
                xfr=True,
                origin=dns.name.from_text("example.com."),
                tsig_ctx=ctx,
                multi=True,
                one_rr_per_rrset=False,
            )
            ctx = message.tsig_ctx
            done = inbound.process_message(message)
        assert done
    assert len(list(target.iterate_rdatas())) == snapshot.record_count
    tampered = bytearray(messages[3])
    tampered[-40] ^= 1
    verifier = TsigVerifier(KEY, tsig.request_mac)
    for message in messages[:3]:
        verifier.check(message, parse_message(message), NOW)
    with pytest.raises(Exception, match="TSIG"):
        verifier.check(bytes(tampered), parse_message(bytes(tampered)), NOW)


def test_ixfr_client_serial_from_the_authority_soa() -> None:
    data = request("IXFR")
    assert provide.ixfr_client_serial(data, parsed(data)) == 1
    plain = request("AXFR")
    assert provide.ixfr_client_serial(plain, parsed(plain)) is None


def test_plan_ixfr() -> None:
    entries = [(1, 2), (2, 5), (5, 6)]
    assert provide.plan_ixfr(entries, 1, 6) == [0, 1, 2]
    assert provide.plan_ixfr(entries, 2, 6) == [1, 2]
    assert provide.plan_ixfr(entries, 2, 5) == [1]  # the journal may run ahead of the worker
    assert provide.plan_ixfr(entries, 6, 6) == []
    assert provide.plan_ixfr(entries, 7, 6) == []  # client newer: one SOA, as Knot
    assert provide.plan_ixfr(entries, 3, 6) is None  # not in the journal: AXFR-style
    assert provide.plan_ixfr(entries, 0, 6) is None
    assert provide.plan_ixfr([(0xFFFFFFFF, 1)], 0xFFFFFFFF, 1) == [0]  # wraps (RFC 1982)
