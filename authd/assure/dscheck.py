"""The DS check on every transfer (`ds-check`, issue 13 item 4): a new version whose DNSKEY
set no longer matches the DS is rejected with reason `ds-mismatch`, the old copy keeps serving.

The check itself is the verification's trust-anchor check (zone/dnssec.py: a SEP key matching
an anchor must sign the DNSKEY RRset validly); this module only chooses the anchors and names
the failure:
  ds-check = "trust-anchor"  the zone's trust-anchor file (already the policy's anchors)
  ds-check = "parent"        the DS RRset from the parent's servers (asked over TCP), cached
                             for its TTL (bounded by MIN_TTL..MAX_TTL); when no parent answers,
                             the last DS fetched is used however old, and before any was
                             fetched the version is verified without it (logged: the check is
                             never fatal to replication by itself)
An empty DS RRset (an insecure delegation) adds no anchor.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from authd.assure.probe import Budget, ask
from authd.clock import Clock
from authd.config import ZoneConfig
from authd.horizon import rfc3339
from authd.xfr.policy import policy_for
from authd.zone.verify import DS_TYPE, Policy, Verdict

log = logging.getLogger("authd.assure")

DS_MISMATCH = "ds-mismatch"
ANCHOR_CHECKS = frozenset({"dnskey-anchor-mismatch", "dnskey-anchor-unsigned"})
MIN_TTL = 30.0  # a DS with TTL 0 would cost a query per transfer
MAX_TTL = 86400.0
NEGATIVE_TTL = 300.0  # an answer without a DS and without an SOA to say how long
QUERIES_PER_FETCH = 4

Asker = Callable[..., Awaitable[dns.message.Message | str]]


@dataclass(frozen=True, slots=True)
class ParentDs:
    ds: tuple[bytes, ...]  # DS rdatas (wire); empty: the parent has none (insecure)
    fetched_at: float
    expires_at: float
    source: str  # "parent 192.0.2.1@53"


def ds_verdict(verdict: Verdict, ds_check: str) -> Verdict:
    """With a DS check on, a failed trust-anchor check is the `ds-mismatch` rejection."""
    if verdict.ok or ds_check == "off" or verdict.check not in ANCHOR_CHECKS:
        return verdict
    return dataclasses.replace(verdict, check=DS_MISMATCH)


def parse_ds(
    response: dns.message.Message, zone: dns.name.Name, now: float
) -> tuple[tuple[bytes, ...], float] | None:
    """(DS rdatas, expiry) from the parent's answer; None when it is no usable answer."""
    if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return None
    rrset = response.get_rrset(
        response.answer, zone, dns.rdataclass.IN, dns.rdatatype.RdataType(DS_TYPE)
    )
    if rrset is not None:
        ttl = float(rrset.ttl)
        return tuple(r.to_wire() for r in rrset), now + min(max(ttl, MIN_TTL), MAX_TTL)
    ttl = NEGATIVE_TTL
    for soa in response.authority:
        if soa.rdtype == dns.rdatatype.SOA:
            ttl = float(min(soa.ttl, soa[0].minimum))
    return (), now + min(max(ttl, MIN_TTL), MAX_TTL)


class DsCache:
    """The parent's DS per zone, for the zones with ds-check = "parent"."""

    def __init__(self, clock: Clock, asker: Asker = ask) -> None:
        self.clock = clock
        self.asker = asker
        self.cached: dict[bytes, ParentDs] = {}
        self.errors: dict[bytes, str] = {}

    async def get(self, zone: ZoneConfig) -> ParentDs | None:
        now = self.clock.now()
        cached = self.cached.get(zone.origin)
        if cached is not None and now < cached.expires_at:
            return cached
        fetched = await self._fetch(zone, now)
        if fetched is not None:
            self.cached[zone.origin] = fetched
            self.errors.pop(zone.origin, None)
            return fetched
        return cached  # stale beats nothing: the DS changes rarely

    async def _fetch(self, zone: ZoneConfig, now: float) -> ParentDs | None:
        budget = Budget(QUERIES_PER_FETCH)
        errors = []
        for server in zone.parent:
            response = await self.asker(server, zone.dns_name, DS_TYPE, budget, tcp=True)
            if isinstance(response, str):
                errors.append(response)
                continue
            parsed = parse_ds(response, zone.dns_name, now)
            if parsed is None:
                errors.append(f"{server}: {dns.rcode.to_text(response.rcode())}")
                continue
            return ParentDs(parsed[0], now, parsed[1], f"parent {server}")
        self.errors[zone.origin] = "; ".join(errors) or "no parent servers configured"
        return None

    def forget(self, origin: bytes) -> None:
        self.cached.pop(origin, None)
        self.errors.pop(origin, None)

    def status(self, zone: ZoneConfig) -> dict[str, object]:
        """The `ds_check` key of `authd zone status --json`."""
        cached = self.cached.get(zone.origin)
        return {
            "mode": zone.ds_check,
            "ds": len(cached.ds) if cached is not None else None,
            "source": cached.source if cached is not None else None,
            "fetched_at": rfc3339(cached.fetched_at) if cached is not None else None,
            "expires_at": rfc3339(cached.expires_at) if cached is not None else None,
            "error": self.errors.get(zone.origin),
        }

    def judged(self, zone: ZoneConfig, verdict: Verdict) -> Verdict:
        return ds_verdict(verdict, zone.ds_check)

    async def policy(self, zone: ZoneConfig) -> Policy:
        """The verification policy of a new version: with ds-check = "parent", the parent's
        DS as its trust anchors."""
        policy = policy_for(zone)
        if zone.ds_check != "parent":
            return policy
        parent = await self.get(zone)
        if parent is None:
            log.warning(
                "zone %s: ds-check: no DS from the parent yet (%s): verified without it",
                zone.name,
                self.errors.get(zone.origin, "no answer"),
                extra={"zone": zone.name, "reason": "ds-check"},
            )
            return policy
        if not parent.ds:
            return policy  # insecure delegation: nothing to match
        anchors = tuple((DS_TYPE, ds) for ds in parent.ds)
        return dataclasses.replace(policy, anchors=anchors, dnssec="required")
