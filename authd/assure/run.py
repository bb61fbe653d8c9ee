"""Run the report and the drill: gather.py asks, report.py and drill.py judge.

Runs in the daemon (control commands `report` and `drill`): it has the served version, the
zone's timers and the injected clock. Queries go only to configured addresses (peers, parent,
resolver) or to authd's own listening addresses; each has a timeout, and one run asks at most
MAX_QUERIES questions, a few at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import dns.rdatatype

from authd.assure import drill as drills
from authd.assure import report as reports
from authd.assure.gather import (
    WILDCARD,
    Gatherer,
    ZoneView,
    apex_ns,
    bounded,
    own_addresses,
)
from authd.assure.operators import NsServer, classify
from authd.assure.probe import ask
from authd.config import Endpoint
from authd.horizon import Horizon, earliest_signature_expiration, horizon, rfc3339
from authd.xfr.policy import policy_for
from authd.zone import delegation, drift, names
from authd.zone.snapshot import DNSKEY
from authd.zone.verify import DS_TYPE, verify

MAX_PEERS = 4
MAX_OWN_ADDRESSES = 4  # the drill asks at most this many of authd's listening addresses
DRIFT_SAMPLE = 3  # names beyond the apex set asked of each peer
DRILL_SAMPLE = 5  # names beyond SOA, NS, DNSKEY asked of each own address

__all__ = ["ZoneView", "drill", "own_addresses", "report"]


def zone_horizon(view: ZoneView) -> Horizon:
    facts = view.facts
    signatures = facts.signature_horizon
    if signatures is None:
        signatures = earliest_signature_expiration(view.snapshot, view.now)
    return horizon(True, facts.expires_at, facts.servfail_on_expire, signatures)


def own_ns(view: ZoneView, addresses: Mapping[str, Sequence[str]]) -> tuple[set[str], str]:
    """authd's own NS names: server.ns-names, else the NS names whose addresses it listens on."""
    configured = view.config.server.ns_names
    if configured:
        return set(configured), "server.ns-names"
    listening = {e.host for e in view.config.server.listen} - set(WILDCARD)
    matched = {n for n, found in addresses.items() if listening & set(found)}
    return matched, "listen addresses" if matched else "unknown"


async def report(view: ZoneView) -> dict[str, Any]:
    gather = Gatherer(view)
    zone, snapshot = view.zone, view.snapshot
    ns_names = apex_ns(snapshot)
    addresses = await gather.addresses(ns_names)
    own, own_source = own_ns(view, addresses)
    servers = classify(ns_names, addresses, own, view.config.operators)

    ns_zones = []
    for name in sorted(own):
        zone_name, zone_ns, how = await gather.zone_of(name)
        if zone_name == zone.name:
            how = "in the zone itself"
        members = (
            tuple(classify(zone_ns, {}, own, view.config.operators))
            if zone_ns is not None
            else None
        )
        ns_zones.append(reports.NsZone(name, zone_name, members, how))

    peer_addresses = _peers(view, servers)
    peers_unchecked = ""
    if not peer_addresses and view.zone.peers is None:
        peers_unchecked = (
            "no address found for the provider's NS names: set peers, or server.resolver"
        )
    asked = drift.questions(snapshot, 0, DRIFT_SAMPLE)
    peers = await bounded(gather.peer(p, asked) for p in peer_addresses[:MAX_PEERS])

    listening = frozenset(e.host for e in view.config.server.listen) - set(WILDCARD)
    own_keys = frozenset(names.key_from_text(n) for n in own)
    checked_with: str | None
    if zone.parent:
        parent, checked_with = await gather.parent_view()
        unchecked = checked_with if parent is None else ""
        checked_with = checked_with if parent is not None else None
    else:
        ds = tuple(a.rdata for a in zone.trust_anchors if a.rdtype == DS_TYPE)
        parent = delegation.ParentView(ds=ds) if ds else None
        checked_with = f"trust-anchor {zone.trust_anchor}" if ds else None
        unchecked = "no parent servers configured (parent): the delegation was not checked"
    found = delegation.check(
        snapshot,
        parent or delegation.ParentView(),
        view.now,
        own_ns=own_keys,
        own_addresses=listening,
    )
    facts = view.facts
    limits = zone_horizon(view)
    result = reports.build(
        reports.ReportInput(
            zone=zone.name,
            serial=snapshot.serial,
            now=view.now,
            servers=tuple(servers),
            own_source=own_source,
            ns_zones=tuple(ns_zones),
            signatures=reports.Signatures(
                limits.signatures_valid_until,
                limits.valid_until,
                facts.expires_at,
                zone.signature_warning_days,
            ),
            peers=tuple(peers),
            state=facts.state,
            last_success=facts.last_success,
            secondary=zone.is_secondary,
            delegation=reports.Delegation(checked_with, tuple(found), unchecked),
            peers_unchecked=peers_unchecked,
        )
    )
    result["queries"] = gather.budget.used
    return result


def _peers(view: ZoneView, servers: Sequence[NsServer]) -> list[Endpoint]:
    if view.zone.peers is not None:
        return list(view.zone.peers)
    return [Endpoint(a, 53) for s in servers if not s.own for a in s.addresses]


async def drill(
    view: ZoneView, verify_in: Callable[..., Awaitable[Any]] | None = None
) -> dict[str, Any]:
    """The provider-loss drill. `verify_in(function, *args)` runs the full verification off
    the event loop (asyncio.to_thread by default)."""
    gather = Gatherer(view)
    zone, snapshot, now = view.zone, view.snapshot, view.now
    checks: list[drills.Check] = []
    policy = policy_for(zone)
    if zone.parent:
        parent, source = await gather.parent_view()
        if parent is None or parent.ds is None:
            checks.append(drills.Check("parent-ds", False, f"no DS from the parent: {source}"))
        elif parent.ds:
            checks.append(drills.Check("parent-ds", True, f"{len(parent.ds)} DS from {source}"))
            anchors = tuple((DS_TYPE, ds) for ds in parent.ds)
            policy = dataclasses.replace(policy, anchors=anchors, dnssec="required")
        else:
            checks.append(
                drills.Check("parent-ds", True, f"no DS at {source}: resolvers treat it insecure")
            )
    signed = DNSKEY in (snapshot.node(snapshot.origin) or {})
    if signed and not policy.anchors:
        checks.append(
            drills.Check(
                "anchor",
                False,
                "no DS from the parent and no trust-anchor: the served DNSKEY set is not "
                "tied to the delegation",
            )
        )
    run = verify_in or asyncio.to_thread
    verdict = await run(verify, snapshot, policy, now)
    detail = (
        (
            f"signed, {verdict.rrsets_checked} RRsets validated"
            if verdict.signed
            else "unsigned: structure and limits checked"
        )
        if verdict.ok
        else f"{verdict.check}: {verdict.reason}"
    )
    anchor = " against the DS" if policy.anchors else ""
    checks.append(drills.Check(f"verify{anchor}", verdict.ok, detail))

    questions = drills.questions(snapshot, DRILL_SAMPLE)
    addresses = own_addresses(view.config)
    if len(addresses) > MAX_OWN_ADDRESSES:
        asked = ", ".join(str(a) for a in addresses[:MAX_OWN_ADDRESSES])
        checks.append(
            drills.Check(
                "addresses",
                True,
                f"{MAX_OWN_ADDRESSES} of {len(addresses)} listening addresses asked: {asked}",
            )
        )
        addresses = addresses[:MAX_OWN_ADDRESSES]
    jobs = [(address, tcp, q) for address in addresses for tcp in (False, True) for q in questions]
    answers = await bounded(
        ask(a, names.to_name(q[0]), q[1], gather.budget, tcp=tcp) for a, tcp, q in jobs
    )
    for (address, tcp, question), answer in zip(jobs, answers, strict=True):
        ok, why = drills.check_answer(snapshot, question, answer, now, udp=not tcp)
        label = f"{'tcp' if tcp else 'udp'} {address} {names.display(question[0])} " + (
            dns.rdatatype.to_text(dns.rdatatype.RdataType(question[1]))
        )
        checks.append(drills.Check(label, ok, why))

    limits = zone_horizon(view)
    checks.append(
        drills.horizon_check(
            limits.valid_until, limits.signatures_valid_until, now, zone.signature_warning_days
        )
    )
    return {
        "zone": zone.name,
        "serial": snapshot.serial,
        "checked_at": rfc3339(now),
        "ok": drills.verdict(checks),
        "valid_until": rfc3339(limits.valid_until),
        "signatures_valid_until": rfc3339(limits.signatures_valid_until),
        "queries": gather.budget.used,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
    }
