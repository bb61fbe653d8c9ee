"""The asking half of the report and the drill: bounded queries to the addresses the config
names (peers, parent, resolver) or to authd's own, and what their answers mean as values the
pure modules take (drift.PeerAnswers, delegation.ParentView, report.PeerState)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from authd.assure import report as reports
from authd.assure.probe import Budget, ask
from authd.config import Config, Endpoint, ZoneConfig
from authd.metrics import ZoneFacts
from authd.zone import delegation, drift, names
from authd.zone.snapshot import NS, Snapshot
from authd.zone.verify import DS_TYPE

A, AAAA = 1, 28
MAX_QUERIES = 96
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


async def bounded(jobs: Iterable[Awaitable[T]]) -> list[T]:
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
        answers = await bounded(
            ask(self.resolver, qname, t, self.budget, recursive=True) for t in (A, AAAA)
        )
        return [
            r.to_text()
            for answer, t in zip(answers, (A, AAAA), strict=True)
            for r in _rrset_of(answer, qname, t) or ()
        ]

    async def addresses(self, ns_names: Sequence[str]) -> dict[str, list[str]]:
        found = await bounded(self.resolve(n) for n in ns_names)
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
            ns_answer, ds_answer = await bounded(
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
            answers = await bounded(ask(server, names.to_name(o), t, self.budget) for o, t in asked)
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
