"""apply_diff keeps the NSEC3 hash index in step by insertion and removal, not a rebuild."""

from __future__ import annotations

import base64
import random

from authd.zone import names
from authd.zone.snapshot import NS, NSEC3, SOA, Record, Snapshot, SnapshotBuilder, _nsec3_index

ORIGIN = names.key_from_text("n3.test.")
SOA_RDATA = b"\x03ns1\x02n3\x04test\x00\x02hm\x02n3\x04test\x00" + bytes(20)


def nsec3_owner(index: int) -> bytes:
    label = base64.b32hexencode(index.to_bytes(20, "big")).lower().rstrip(b"=")
    return bytes([len(label)]) + label + ORIGIN


def nsec3_record(owner: bytes) -> Record:
    # hash alg 1, flags 0, 0 iterations, no salt, a 20-octet next hash, an empty bitmap
    return (owner, NSEC3, 300, b"\x01\x00\x00\x00\x00\x14" + bytes(20))


def base(count: int) -> Snapshot:
    builder = SnapshotBuilder(ORIGIN)
    builder.add(ORIGIN, SOA, 300, SOA_RDATA)
    builder.add(ORIGIN, NS, 300, b"\x03ns1" + ORIGIN)
    for index in range(0, count * 3, 3):
        builder.add_records([nsec3_record(nsec3_owner(index))])
    return builder.build()


def test_index_after_random_diffs_equals_a_rebuild() -> None:
    rng = random.Random(7)
    snapshot = base(200)
    present = {names.lower(k) for k in snapshot.nsec3_owners}
    for _ in range(60):
        deleted = [nsec3_record(k) for k in rng.sample(sorted(present), rng.randint(0, 5))]
        added = [nsec3_record(nsec3_owner(rng.randrange(1000))) for _ in range(rng.randint(0, 5))]
        added = [r for r in added if r[0] not in present]
        # Data beside an NSEC3 owner leaves the index alone; A on a fresh name too.
        other = [(nsec3_owner(1001 + rng.randrange(5)), 1, 300, b"\x0a\x00\x00\x01")]
        before = (list(snapshot.nsec3_hashes), list(snapshot.nsec3_owners))
        new = snapshot.apply_diff(deleted, added + other)
        assert (new.nsec3_hashes, new.nsec3_owners) == _nsec3_index(dict(new.items()))
        # The parent version's index is untouched (shared until it changes).
        assert (snapshot.nsec3_hashes, snapshot.nsec3_owners) == before
        present = (present - {r[0] for r in deleted}) | {r[0] for r in added}
        snapshot = new
    assert set(snapshot.nsec3_owners) == present
