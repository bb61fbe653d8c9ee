"""Tests of zone/catalog.py: RFC 9432 members, broken catalogs, resets, groups, ownership."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from authd.zone import catalog, names
from authd.zone.catalog import Broken, Catalog
from authd.zone.snapshot import Snapshot, SnapshotBuilder

CATZ = "catz.example."
BASE = [
    (CATZ, "SOA", "invalid. invalid. 1 3600 600 2147483646 0"),
    (CATZ, "NS", "invalid."),
    (f"version.{CATZ}", "TXT", '"2"'),
]


def build(*records: tuple[str, str, str], origin: str = CATZ, base: bool = True) -> Snapshot:
    builder = SnapshotBuilder(names.key_from_text(origin))
    rows = [*(BASE if base else BASE[:2]), *records]
    for owner, rtype, text in rows:
        rdtype = dns.rdatatype.from_text(rtype)
        data = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text).to_wire()
        assert data is not None
        builder.add(names.key_from_text(owner), rdtype, 0, data)
    return builder.build()


def member(uid: str, zone: str, catz: str = CATZ) -> tuple[str, str, str]:
    return (f"{uid}.zones.{catz}", "PTR", zone)


def key(text: str) -> bytes:
    return names.key_from_text(text)


def parsed(*records: tuple[str, str, str]) -> Catalog:
    result = catalog.parse(build(*records))
    assert isinstance(result, Catalog), result
    return result


def test_members_with_groups_and_coo() -> None:
    result = parsed(
        member("m1", "one.example."),
        member("m2", "two.example."),
        (f"group.m2.zones.{CATZ}", "TXT", '"signed"'),
        (f"coo.m1.zones.{CATZ}", "PTR", "other.catz."),
        (f"ext.{CATZ}", "TXT", '"unknown property: ignored"'),
    )
    assert set(result.members) == {key("one.example."), key("two.example.")}
    one, two = result.members[key("one.example.")], result.members[key("two.example.")]
    assert one.unique_id == b"\x02m1" and one.coo == key("other.catz.") and one.group is None
    assert two.group == "signed" and two.coo is None


@pytest.mark.parametrize(
    ("records", "base", "reason"),
    [
        ([], False, "no version TXT record"),
        ([(f"version.{CATZ}", "TXT", '"1"')], False, 'catalog version "1" is not supported'),
        (
            [(f"version.{CATZ}", "TXT", '"2"'), (f"version.{CATZ}", "TXT", '"3"')],
            False,
            "the version TXT at version.catz.example has 2 records",
        ),
        (
            [member("m1", "one.example."), member("m1", "uno.example.")],
            True,
            "the member PTR at m1.zones.catz.example has 2 records",
        ),
        (
            [
                member("m1", "one.example."),
                (f"coo.m1.zones.{CATZ}", "PTR", "a.catz."),
                (f"coo.m1.zones.{CATZ}", "PTR", "b.catz."),
            ],
            True,
            "the coo PTR at coo.m1.zones.catz.example has 2 records",
        ),
    ],
)
def test_broken_catalogs_are_not_processed(
    records: list[tuple[str, str, str]], base: bool, reason: str
) -> None:
    result = catalog.parse(build(*records, base=base))
    assert isinstance(result, Broken) and result.reason.startswith(reason), result


def test_the_same_zone_twice_keeps_the_first_unique_id() -> None:
    result = parsed(member("a", "one.example."), member("b", "one.example."))
    assert result.members[key("one.example.")].unique_id == b"\x01a"
    assert result.ignored == ("one.example listed again at b.zones.catz.example: ignored",)


def test_changes_between_versions() -> None:
    old = parsed(
        member("m1", "one.example."), member("m2", "two.example."), member("m3", "three.example.")
    )
    new = parsed(
        member("m1", "one.example."),
        (f"group.m1.zones.{CATZ}", "TXT", '"other"'),
        member("m9", "two.example."),  # same zone, new unique-id: reset
        member("m4", "four.example."),
    )
    change = catalog.changes(old, new)
    assert [m.zone for m in change.added] == [key("four.example.")]
    assert [m.zone for m in change.removed] == [key("three.example.")]
    assert [(m.zone, m.unique_id) for m in change.reset] == [(key("two.example."), b"\x02m9")]
    assert [m.group for m in change.regrouped] == ["other"]
    assert catalog.changes(new, new).empty
    first = catalog.changes(None, old)
    assert len(first.added) == 3 and not first.removed


def test_ownership_follows_coo_only_when_the_owner_points_there() -> None:
    zone = key("one.example.")
    a, b = key("a.catz."), key("b.catz.")

    def cat(origin: bytes, coo: bytes | None = None) -> Catalog:
        return Catalog(origin, 1, {zone: catalog.Member(zone, b"\x01x", None, coo)})

    assert catalog.owner_of(zone, {a: cat(a), b: cat(b)}, a) == a  # B's claim alone: ignored
    assert catalog.owner_of(zone, {a: cat(a, coo=b), b: cat(b)}, a) == b  # migrated by coo
    assert catalog.owner_of(zone, {a: cat(a, coo=b)}, a) == a  # coo target does not list it
    assert catalog.owner_of(zone, {b: cat(b)}, a) == b  # the old owner dropped it
    assert catalog.owner_of(zone, {}, a) is None
    assert catalog.owner_of(zone, {b: cat(b), a: cat(a)}, None) == a  # new: smallest name
