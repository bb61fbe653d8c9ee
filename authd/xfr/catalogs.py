"""Catalog reconciliation (RFC 9432, consumer side): catalogs + current members -> a plan.

Pure: the processed version of every catalog authd consumes, the members it serves now,
and the zones configured explicitly in; the zones to add, remove, reset and regroup out.
authd/xfr/consumer.py applies the plan (the shell: zones started and stopped).

Invariants:
- A zone configured as a [[zone]] is never a member (the config wins), whichever
  catalog lists it; a member that becomes configured is *released*, not removed
  (it goes on serving under its own config).
- Every listed zone has exactly one owner (authd.zone.catalog.owner_of: the current
  owner keeps it unless its entry's coo names another catalog that lists it too).
- A member whose owner lists it under another unique-id than the one it was added
  with is reset (sections 5.4, 5.6: state purged, transferred afresh), also when it
  moves to another catalog (coo, 4.4.1); with the same unique-id its state is kept.
- Only a zone no catalog lists any more is removed.
- removal_held: an update removing more than `share` of a catalog's members (when it
  has more than `guard_from`) is held; nothing of it is applied until approved.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from authd.zone.catalog import Catalog, owner_of


@dataclass(frozen=True, slots=True)
class Membership:
    """A zone served because a catalog lists it."""

    zone: bytes  # the member's name key
    catalog: bytes  # the owning catalog's origin
    unique_id: bytes
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    add: tuple[Membership, ...] = ()
    remove: tuple[Membership, ...] = ()  # the membership it had
    reset: tuple[Membership, ...] = ()  # the new membership (new unique-id)
    regroup: tuple[Membership, ...] = ()  # the new membership (other group or owner)
    release: tuple[Membership, ...] = ()  # now configured explicitly: the config takes it
    shadowed: tuple[bytes, ...] = ()  # listed, but configured explicitly

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove or self.reset or self.regroup or self.release)

    def removed_from(self, catalog: bytes) -> int:
        return sum(1 for m in self.remove if m.catalog == catalog)

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.add),
            "removed": len(self.remove),
            "reset": len(self.reset),
            "regrouped": len(self.regroup),
        }


def reconcile(
    catalogs: Mapping[bytes, Catalog],
    current: Mapping[bytes, Membership],
    explicit: Set[bytes],
) -> Plan:
    """What serving the members of `catalogs` instead of `current` takes."""
    add: list[Membership] = []
    remove: list[Membership] = []
    reset: list[Membership] = []
    regroup: list[Membership] = []
    release: list[Membership] = []
    shadowed: list[bytes] = []
    listed = {zone for catalog in catalogs.values() for zone in catalog.members}
    for zone in sorted(listed | current.keys()):
        had = current.get(zone)
        if zone in explicit:
            if had is not None:
                release.append(had)
            elif zone in listed:
                shadowed.append(zone)
            continue
        owner = owner_of(zone, catalogs, had.catalog if had is not None else None)
        if owner is None:
            if had is not None:
                remove.append(had)
            continue
        entry = catalogs[owner].members[zone]
        now = Membership(zone, owner, entry.unique_id, entry.group)
        if had is None:
            add.append(now)
        elif had.unique_id != now.unique_id:
            reset.append(now)
        elif had != now:
            regroup.append(now)
    return Plan(
        tuple(add), tuple(remove), tuple(reset), tuple(regroup), tuple(release), tuple(shadowed)
    )


def apply(current: Mapping[bytes, Membership], plan: Plan) -> dict[bytes, Membership]:
    """The members after the plan is carried out."""
    members = dict(current)
    for gone in (*plan.remove, *plan.release):
        members.pop(gone.zone, None)
    for member in (*plan.add, *plan.reset, *plan.regroup):
        members[member.zone] = member
    return members


def removal_held(
    plan: Plan,
    current: Mapping[bytes, Membership],
    catalog: bytes,
    share: float,
    guard_from: int,
) -> str | None:
    """Why the plan must wait for an operator's approval, or None when it may go ahead."""
    members = sum(1 for m in current.values() if m.catalog == catalog)
    removed = plan.removed_from(catalog)
    if members <= guard_from or removed <= share * members:
        return None
    return (
        f"the update removes {removed} of {members} members ({removed / members:.0%}, more "
        f"than catalog-max-removed-share {share:.0%}): held until `authd zone approve`"
    )
