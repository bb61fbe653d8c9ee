"""Gather the answers the report and the drill need, then hand them to the pure parts.

Runs in the daemon (control commands `report` and `drill`): it has the served version, the
zone's timers and the injected clock. Queries go only to configured addresses (peers, parent,
resolver) or to authd's own listening addresses; each has a timeout, and one run asks at most
MAX_QUERIES questions, a few at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from authd.assure import drill as drills
from authd.assure import report as reports
from authd.assure.operators import NsServer, classify
from authd.assure.probe import Budget, ask
from authd.config import Config, Endpoint, ZoneConfig
from authd.horizon import Horizon, horizon, rfc3339
from authd.metrics import ZoneFacts
from authd.xfr.policy import policy_for
from authd.zone import delegation, drift, names
from authd.zone.snapshot import DNSKEY, NS, Snapshot, is_sig_type, unpack_node
from authd.zone.verify import DS_TYPE, verify

A, AAAA = 1, 28
MAX_QUERIES = 96
MAX_PEERS = 4
MAX_OWN_ADDRESSES = 4  # the drill asks at most this many of authd's listening addresses
DRIFT_SAMPLE = 3  # names beyond the apex set asked of each peer
DRILL_SAMPLE = 5  # names beyond SOA, NS, DNSKEY asked of each own address
IN_FLIGHT = 8
WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}

T = TypeVar("T")


@dataclass(frozen=True)
class ZoneView:
    """What the daemon knows of one zone at `now`."""

    config: Config
    zone: ZoneConfig
    snapshot: Snapshot
    facts: ZoneFacts
    now: float
    served: Mapping[str, Snapshot] = field(default_factory=dict)  # every zone authd serves


async def _bounded(jobs: Iterable[Awaitable[T]]) -> list[T]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def _type(value: int) -> dns.rdatatype.RdataType:
    return dns.rdatatype.RdataType(value)


def own_addresses(config: Config) -> list[Endpoint]:
    """authd's listening addresses, a wildcard replaced by loopback."""
    out: list[Endpoint] = []
    for endpoint in config.server.listen:
        use = Endpoint(WILDCARD.get(endpoint.host, endpoint.host), endpoint.port)
        if use not in out:
            out.append(use)
    return out


def _text(key: bytes) -> str:
    return names.display(key).lower()


def apex_ns(snapshot: Snapshot) -> list[str]:
    apex = snapshot.node(snapshot.origin) or {}
    return sorted({_text(names.lower(r)) for r in apex.get(NS, (0, ()))[1]})


def _served_addresses(snapshots: Iterable[Snapshot], name: str) -> list[str]:
    key = names.key_from_text(name)
    found: list[str] = []
    for snapshot in snapshots:
        node = snapshot.node(key) if names.is_subdomain(key, snapshot.origin) else None
        for rtype in (A, AAAA):
            for rdata in (node or {}).get(rtype, (0, ()))[1]:
                found.append(
                    dns.rdata.from_wire(
                        dns.rdataclass.IN, _type(rtype), rdata, 0, len(rdata)
                    ).to_text()
                )
    return found


def _delegated(snapshot: Snapshot, key: bytes) -> bool:
    """The name is at or below a zone cut of this version: it lives in a child zone."""
    return key in snapshot.cuts or any(
        a in snapshot.cuts for a in names.ancestors(key, snapshot.origin)
    )


def _rrset_of(
    response: dns.message.Message | str, name: dns.name.Name, rtype: int
) -> list[Any] | None:
    """The records of (name, type) in the answer; [] for NODATA/NXDOMAIN; None: no answer."""
    if isinstance(response, str) or response.rcode() not in (
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
    ):
        return None
    rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, _type(rtype))
    return list(rrset) if rrset is not None else []


class Gatherer:
    """One run's queries, under one budget."""

    def __init__(self, view: ZoneView) -> None:
        self.view = view
        self.budget = Budget(MAX_QUERIES)
        self.resolver = view.config.server.resolver

    async def resolve(self, name: str) -> list[str]:
        """A and AAAA of a name: from the zones authd serves, else through the resolver."""
        local = _served_addresses(self.view.served.values(), name)
        if local or self.resolver is None:
            return local
        qname = dns.name.from_text(name)
        answers = await _bounded(
            ask(self.resolver, qname, t, self.budget, recursive=True) for t in (A, AAAA)
        )
        return [
            r.to_text()
            for answer, t in zip(answers, (A, AAAA), strict=True)
            for r in _rrset_of(answer, qname, t) or ()
        ]

    async def addresses(self, ns_names: Sequence[str]) -> dict[str, list[str]]:
        found = await _bounded(self.resolve(n) for n in ns_names)
        return dict(zip(ns_names, found, strict=True))

    async def zone_of(self, name: str) -> tuple[str | None, list[str] | None, str]:
        """The zone holding `name` and its NS names, and how that was learned."""
        key = names.key_from_text(name)
        for zone_name, snapshot in self.view.served.items():
            if names.is_subdomain(key, snapshot.origin) and not _delegated(snapshot, key):
                return zone_name, apex_ns(snapshot), "served by authd"
        if self.resolver is None:
            return None, None, "outside the zones authd serves and no server.resolver configured"
        candidate = dns.name.from_text(name).parent()
        while candidate != dns.name.root:
            answer = await ask(self.resolver, candidate, NS, self.budget, recursive=True)
            if isinstance(answer, str):
                return None, None, f"resolver {self.resolver}: {answer}"
            records = _rrset_of(answer, candidate, NS)
            if records:
                found = sorted({r.target.to_text(omit_final_dot=True).lower() for r in records})
                return (
                    candidate.to_text(omit_final_dot=True).lower(),
                    found,
                    (f"via resolver {self.resolver}"),
                )
            candidate = candidate.parent()
        return None, None, f"resolver {self.resolver} knows no zone above {name}"

    async def parent_view(self) -> tuple[delegation.ParentView | None, str]:
        """The parent's NS set, glue and DS for the zone, from the first server that answers."""
        zone = self.view.zone.dns_name
        errors = []
        for server in self.view.zone.parent:
            ns_answer, ds_answer = await _bounded(
                ask(server, zone, t, self.budget) for t in (NS, DS_TYPE)
            )
            if isinstance(ns_answer, str) or isinstance(ds_answer, str):
                errors.append(ns_answer if isinstance(ns_answer, str) else str(ds_answer))
                continue
            return _parent_view(zone, ns_answer, ds_answer), f"parent {server}"
        return None, "; ".join(errors) or "no parent servers configured"

    async def peer(self, server: Endpoint, asked: Sequence[drift.RRsetKey]) -> reports.PeerState:
        origin = self.view.zone.dns_name
        soa = await ask(server, origin, dns.rdatatype.SOA, self.budget)
        records = _rrset_of(soa, origin, dns.rdatatype.SOA)
        serial = records[0].serial if records else None
        rrsets: dict[drift.RRsetKey, frozenset[bytes] | None] = {}
        if serial is not None and serial == self.view.snapshot.serial:
            answers = await _bounded(
                ask(server, names.to_name(o), t, self.budget) for o, t in asked
            )
            for (owner, rtype), answer in zip(asked, answers, strict=True):
                got = _rrset_of(answer, names.to_name(owner), rtype)
                rrsets[(owner, rtype)] = (
                    None if got is None else frozenset(r.to_wire() for r in got)
                )
        found = drift.compare(
            self.view.snapshot,
            drift.PeerAnswers(serial, rrsets),
            self.view.zone.drift_ignore_types,
        )
        return reports.PeerState(str(server), serial, tuple(found))


def _parent_view(
    zone: dns.name.Name, ns_answer: dns.message.Message, ds_answer: dns.message.Message
) -> delegation.ParentView:
    ns_rrset = None
    for section in (ns_answer.answer, ns_answer.authority):
        ns_rrset = ns_answer.get_rrset(section, zone, dns.rdataclass.IN, _type(NS)) or ns_rrset
    ns_names = (
        frozenset(names.key_from_name(r.target) for r in ns_rrset) if ns_rrset else frozenset()
    )
    glue: dict[bytes, set[str]] = {}
    for rrset in ns_answer.additional:
        if rrset.rdtype in (A, AAAA):
            glue.setdefault(names.key_from_name(rrset.name), set()).update(
                r.to_text() for r in rrset
            )
    ds = _rrset_of(ds_answer, zone, DS_TYPE)
    return delegation.ParentView(
        ns_names=ns_names if ns_answer.rcode() == dns.rcode.NOERROR else None,
        glue={k: frozenset(v) for k, v in glue.items()},
        ds=tuple(r.to_wire() for r in ds) if ds is not None else None,
    )


def earliest_signature_expiration(snapshot: Snapshot, now: float) -> int | None:
    """The earliest RRSIG expiration in a version (serial time read near `now`); the zone's
    facts carry it for secondaries, a file zone's is computed here on demand."""
    earliest: int | None = None
    reference = int(now)
    for _, blob in snapshot.items():
        for rtype, (_, rdatas) in unpack_node(blob).items():
            if not is_sig_type(rtype):
                continue
            for rdata in rdatas:
                delta = (int.from_bytes(rdata[8:12], "big") - reference) & 0xFFFFFFFF
                expires = reference + (delta - (1 << 32) if delta >= 1 << 31 else delta)
                earliest = expires if earliest is None else min(earliest, expires)
    return earliest


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
    peers = await _bounded(gather.peer(p, asked) for p in peer_addresses[:MAX_PEERS])

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
    answers = await _bounded(
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
