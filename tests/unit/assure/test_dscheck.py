"""The DS check on transfer: the failure of the trust-anchor check is `ds-mismatch` when
ds-check is on; the parent's DS is cached for its TTL (bounded), a stale one is used when the
parent does not answer, and it becomes the verification's trust anchors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.rrset

from authd.assure import dscheck
from authd.clock import FakeClock
from authd.config import ZoneConfig, load_config
from authd.zone.verify import DS_TYPE, Verdict

NOW = 1_900_000_000.0
DS_TEXT = "12345 13 2 " + "ab" * 32


def zone(tmp_path: Path, ds_check: str = "parent") -> ZoneConfig:
    (tmp_path / "authd.toml").write_text(
        '[[remote]]\nid = "p"\naddresses = ["127.0.0.1"]\n'
        f'[[zone]]\nname = "example.test"\nprimaries = ["p"]\nparent = ["127.0.0.2@5300"]\n'
        f'ds-check = "{ds_check}"\n'
    )
    [z] = load_config(tmp_path / "authd.toml").zones
    return z


def answer(ttl: int, ds: bool = True) -> dns.message.Message:
    query = dns.message.make_query("example.test.", "DS")
    response = dns.message.make_response(query)
    if ds:
        response.answer.append(dns.rrset.from_text("example.test.", ttl, "IN", "DS", DS_TEXT))
    else:
        response.authority.append(
            dns.rrset.from_text("test.", 3600, "IN", "SOA", "ns.test. h.test. 1 2 3 4 120")
        )
    return dns.message.from_wire(response.to_wire())  # as it comes off the wire


class Parent:
    """The parent's answers, in order; a string is a failure (no answer)."""

    def __init__(self, *answers: dns.message.Message | str) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, bool]] = []

    async def __call__(
        self, server: Any, qname: dns.name.Name, rdtype: int, budget: Any, *, tcp: bool = False
    ) -> dns.message.Message | str:
        assert rdtype == DS_TYPE and budget.take()
        self.asked.append((str(server), tcp))
        return self.answers.pop(0)


def test_anchor_failures_are_ds_mismatch_only_with_the_check_on() -> None:
    failed = Verdict(False, "dnskey-anchor-mismatch", "no DNSKEY matches the trust anchor")
    assert dscheck.ds_verdict(failed, "parent").check == "ds-mismatch"
    assert dscheck.ds_verdict(failed, "trust-anchor").check == "ds-mismatch"
    assert dscheck.ds_verdict(failed, "off").check == "dnskey-anchor-mismatch"
    unsigned = Verdict(False, "dnskey-anchor-unsigned", "no valid signature")
    assert dscheck.ds_verdict(unsigned, "parent").check == "ds-mismatch"
    other = Verdict(False, "rrsig-invalid", "www/A")
    assert dscheck.ds_verdict(other, "parent") is other
    assert dscheck.ds_verdict(Verdict(True), "parent").ok


async def test_the_parent_ds_is_cached_for_its_ttl_and_kept_when_the_parent_is_down(
    tmp_path: Path,
) -> None:
    clock = FakeClock(now=NOW)
    parent = Parent(answer(3600), "no answer from 127.0.0.2@5300 within 2 s", answer(7200))
    cache = dscheck.DsCache(clock, parent)
    z = zone(tmp_path)
    first = await cache.get(z)
    assert first is not None and len(first.ds) == 1 and first.expires_at == NOW + 3600
    assert parent.asked == [("127.0.0.2@5300", True)]  # over TCP
    clock.advance(3599)
    assert await cache.get(z) is first and len(parent.asked) == 1  # cached
    clock.advance(2)
    assert await cache.get(z) is first  # expired, the parent is down: the stale DS
    assert "no answer" in str(cache.status(z)["error"])
    fresh = await cache.get(z)
    assert fresh is not None and fresh.expires_at == clock.now() + 7200
    assert cache.status(z)["error"] is None


async def test_ttls_are_bounded_and_no_ds_is_cached_for_the_negative_ttl(tmp_path: Path) -> None:
    clock = FakeClock(now=NOW)
    cache = dscheck.DsCache(clock, Parent(answer(0), answer(10**6)))
    z = zone(tmp_path)
    low = await cache.get(z)
    assert low is not None and low.expires_at == NOW + dscheck.MIN_TTL
    clock.advance(dscheck.MIN_TTL)
    high = await cache.get(z)
    assert high is not None and high.expires_at == clock.now() + dscheck.MAX_TTL
    parsed = dscheck.parse_ds(answer(60, ds=False), dns.name.from_text("example.test."), NOW)
    assert parsed == ((), NOW + 120)  # min(SOA TTL, SOA minimum)


async def test_the_parent_ds_becomes_the_trust_anchors(tmp_path: Path) -> None:
    clock = FakeClock(now=NOW)
    z = zone(tmp_path)
    policy = await dscheck.DsCache(clock, Parent(answer(60))).policy(z)
    assert policy.dnssec == "required" and [t for t, _ in policy.anchors] == [DS_TYPE]
    insecure = await dscheck.DsCache(clock, Parent(answer(60, ds=False))).policy(z)
    assert insecure.anchors == ()  # no DS at the parent: nothing to match
    down = await dscheck.DsCache(clock, Parent("refused")).policy(z)
    assert down.anchors == ()  # never fetched: verified without it (logged)
    off = zone(tmp_path, "off")
    untouched = Parent()
    assert (await dscheck.DsCache(clock, untouched).policy(off)).anchors == ()
    assert untouched.asked == []
