"""Catalog zones, consumer side (RFC 9432): which member zones a catalog version lists.

Pure: a version of the catalog zone in, its members (or why it is broken) out, and the
difference between two catalog versions as additions, removals, resets and regroupings.
The zone lifecycle turns those into zones added to or removed from service.

Layout of a catalog `$CATZ` (version "2"):
    version.$CATZ                   TXT "2"          exactly one RR
    <unique-id>.zones.$CATZ         PTR member.      exactly one RR per member node
    group.<unique-id>.zones.$CATZ   TXT "name"       optional, one RR: picks a [[template]]
    coo.<unique-id>.zones.$CATZ     PTR other-catz.  optional, one RR: change of ownership

Invariants:
- A broken version (section 5.1: no or wrong version, an RRset of a member, coo or group
  with more than one RR, a member PTR that is not a name) is never processed: the consumer
  keeps the members it had, so a broken catalog never removes a zone.
- Two member nodes naming the same zone: the one already serving keeps it, else the
  smallest unique-id; the other is reported and ignored (a catalog's mistake must not
  flap a zone).
- A member whose unique-id changes while it stays in the catalog is *reset* (section 5.4,
  5.6): its state is purged and it is transferred afresh.
- Unknown properties and records elsewhere in the catalog are ignored (section 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.name

from authd.zone import names
from authd.zone.snapshot import Snapshot

PTR, TXT = 12, 16
SUPPORTED_VERSION = b"2"
_ZONES = b"\x05zones"
_VERSION = b"\x07version"


@dataclass(frozen=True, slots=True)
class Member:
    zone: bytes  # the member zone's name key
    unique_id: bytes  # the member node's label (raw, lowercased)
    group: str | None = None
    coo: bytes | None = None  # the catalog that may take the member over


@dataclass(frozen=True, slots=True)
class Catalog:
    origin: bytes
    serial: int
    members: Mapping[bytes, Member]  # by member zone key
    ignored: tuple[str, ...] = ()  # what was skipped, for logs and status


@dataclass(frozen=True, slots=True)
class Broken:
    origin: bytes
    serial: int
    reason: str


@dataclass(frozen=True, slots=True)
class CatalogChange:
    added: tuple[Member, ...] = ()
    removed: tuple[Member, ...] = ()
    reset: tuple[Member, ...] = ()  # same zone, new unique-id: purge and transfer afresh
    regrouped: tuple[Member, ...] = ()  # same unique-id, other group (or coo) property
    ignored: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.reset or self.regrouped)


def _single(
    snapshot: Snapshot, owner: bytes, rtype: int, what: str
) -> tuple[bytes | None, str | None]:
    """The one RDATA of an RRset that must hold one RR, or the reason it is broken."""
    node = snapshot.node(owner)
    rrset = node.get(rtype) if node else None
    if rrset is None:
        return None, None
    if len(rrset[1]) != 1:
        return None, f"{what} at {names.display(owner)} has {len(rrset[1])} records, not one"
    return rrset[1][0], None


def _txt_strings(rdata: bytes) -> list[bytes]:
    strings, at = [], 0
    while at < len(rdata):
        length = rdata[at]
        strings.append(rdata[at + 1 : at + 1 + length])
        at += 1 + length
    return strings


def _ptr_target(rdata: bytes) -> bytes | None:
    try:
        name, used = dns.name.from_wire(rdata, 0)
    except dns.exception.DNSException:
        return None
    return names.key_from_name(name) if used == len(rdata) else None


def parse(snapshot: Snapshot) -> Catalog | Broken:
    """The members a catalog version lists, or why it must not be processed."""
    origin = snapshot.origin
    serial = snapshot.serial
    version, problem = _single(snapshot, _VERSION + origin, TXT, "the version TXT")
    if problem:
        return Broken(origin, serial, problem)
    if version is None:
        return Broken(origin, serial, "no version TXT record: not a catalog zone")
    if _txt_strings(version) != [SUPPORTED_VERSION]:
        shown = b" ".join(_txt_strings(version)).decode("ascii", "replace")
        return Broken(origin, serial, f'catalog version "{shown}" is not supported (only "2")')
    zones_key = _ZONES + origin
    members: dict[bytes, Member] = {}
    ignored: list[str] = []
    for owner in sorted(snapshot.owners()):
        if len(owner) <= len(zones_key) or not owner.endswith(zones_key):
            continue
        unique_id = owner[: len(owner) - len(zones_key)]
        if unique_id[0] + 1 != len(unique_id):
            continue  # deeper names: properties, handled with their member
        ptr, problem = _single(snapshot, owner, PTR, "the member PTR")
        if problem:
            return Broken(origin, serial, problem)
        if ptr is None:
            continue
        zone = _ptr_target(ptr)
        if zone is None:
            return Broken(origin, serial, f"the member PTR at {names.display(owner)} is malformed")
        member_or_reason = _member(snapshot, owner, zone, unique_id)
        if isinstance(member_or_reason, str):
            return Broken(origin, serial, member_or_reason)
        if zone in members:
            ignored.append(f"{names.display(zone)} listed again at {names.display(owner)}: ignored")
            continue
        members[zone] = member_or_reason
    return Catalog(origin, serial, members, tuple(ignored))


def _member(snapshot: Snapshot, owner: bytes, zone: bytes, unique_id: bytes) -> Member | str:
    group_rdata, problem = _single(snapshot, b"\x05group" + owner, TXT, "the group TXT")
    if problem:
        return problem
    coo_rdata, problem = _single(snapshot, b"\x03coo" + owner, PTR, "the coo PTR")
    if problem:
        return problem
    group = None
    if group_rdata is not None:
        group = b"".join(_txt_strings(group_rdata)).decode("utf-8", "replace")
    coo = _ptr_target(coo_rdata) if coo_rdata is not None else None
    if coo_rdata is not None and coo is None:
        return f"the coo PTR of {names.display(owner)} is malformed"
    return Member(zone, names.lower(unique_id), group, coo)


def changes(old: Catalog | None, new: Catalog) -> CatalogChange:
    """What serving `new` instead of `old` means for the member zones."""
    before: Mapping[bytes, Member] = old.members if old is not None else {}
    after = new.members
    added = tuple(m for z, m in after.items() if z not in before)
    removed = tuple(m for z, m in before.items() if z not in after)
    reset = tuple(m for z, m in after.items() if z in before and before[z].unique_id != m.unique_id)
    regrouped = tuple(
        m
        for z, m in after.items()
        if z in before
        and before[z].unique_id == m.unique_id
        and (before[z].group, before[z].coo) != (m.group, m.coo)
    )
    return CatalogChange(added, removed, reset, regrouped, new.ignored)


def owner_of(zone: bytes, catalogs: Mapping[bytes, Catalog], current: bytes | None) -> bytes | None:
    """Which catalog owns a member zone listed by one or more catalogs (section 4.4.1, coo).

    The current owner keeps it unless its own entry names another catalog in `coo` that
    lists the zone too; a zone no catalog lists has no owner; a zone only one catalog
    lists belongs to it; between several new claimants the smallest catalog name wins.
    """
    listing = sorted(origin for origin, catalog in catalogs.items() if zone in catalog.members)
    if not listing:
        return None
    if current in listing:
        assert current is not None
        coo = catalogs[current].members[zone].coo
        if coo is not None and coo != current and coo in listing:
            return coo
        return current
    return listing[0]
