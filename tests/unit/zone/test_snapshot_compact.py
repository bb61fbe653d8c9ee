"""build_compact: a large version is re-created from one buffer, equal in every field."""

from __future__ import annotations

from authd.zone import names
from authd.zone.snapshot import (
    COMPACT_FROM_RECORDS,
    NS,
    SOA,
    Snapshot,
    SnapshotBuilder,
    build_compact,
)

ORIGIN = names.key_from_text("big.test.")
SOA_RDATA = b"\x03ns1\x03big\x04test\x00\x02hm\x03big\x04test\x00" + bytes(20)


def _builder(records: int) -> SnapshotBuilder:
    builder = SnapshotBuilder(ORIGIN)
    builder.add(ORIGIN, SOA, 3600, SOA_RDATA)
    builder.add(ORIGIN, NS, 3600, b"\x03ns1" + ORIGIN)
    builder.add(names.key_from_text("sub.big.test."), NS, 3600, b"\x02ns\x03sub" + ORIGIN)
    for i in range(records):
        builder.add(names.key_from_text(f"h{i}.deep{i % 7}.big.test."), 1, 300, i.to_bytes(4))
    return builder


def test_a_large_version_is_rebuilt_equal() -> None:
    records = COMPACT_FROM_RECORDS + 10
    built = _builder(records).build()
    builder = _builder(records)
    compact = build_compact(builder.build)
    assert compact.fields() == built.fields()
    assert compact.serial == built.serial and compact.origin == ORIGIN
    assert names.key_from_text("deep3.big.test.") in compact.ents
    assert compact.cuts == frozenset({names.key_from_text("sub.big.test.")})
    # The builder gave its nodes away: nothing of the assembly is kept alive by it.
    assert builder.nodes == {}


def test_a_small_version_is_returned_as_built() -> None:
    kept: list[Snapshot] = []

    def build() -> Snapshot:
        kept.append(_builder(10).build())
        return kept[0]

    assert build_compact(build) is kept[0]
