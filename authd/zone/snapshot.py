"""An immutable version of one zone, held in compact wire form.

Storage: one dict from owner key (see names.py) to a packed bytes blob holding
every RRset at that owner. A blob costs one bytes object per owner instead of a
tree of Python objects, which keeps a large zone near its wire size in memory.
`node()` unpacks a blob on demand; the response cache makes that rare.

A Node maps a type to (ttl, rdatas). RRSIGs are kept per covered type under
`sig_type(covered)`, so each keeps the TTL of the RRset it signs. Every rdata is
uncompressed wire bytes exactly as received (case preserved inside RDATA).

Derived indexes, computed once per version (and updated incrementally by
`apply_diff`): zone cuts, DNAME owners, empty non-terminals, the canonical
order of all owners (for NSEC proofs and descendant tests) and the NSEC3 hash
order. A Snapshot is never mutated after construction: IXFR builds a new one
that shares every untouched blob with its parent.
"""

from __future__ import annotations

import base64
import marshal
import struct
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from authd.zone import names

RRData = tuple[int, tuple[bytes, ...]]
"""(ttl, rdatas) of one RRset; rdatas are uncompressed wire RDATA."""

Node = dict[int, RRData]
"""type -> RRset data at one owner; RRSIGs under sig_type(covered)."""

Record = tuple[bytes, int, int, bytes]
"""(owner key, type, ttl, rdata) of one resource record, as transfers deliver them."""

SnapshotFields = tuple[
    dict[bytes, bytes],
    list[bytes],
    frozenset[bytes],
    frozenset[bytes],
    frozenset[bytes],
    list[bytes],
    list[bytes],
    int,
]
"""Snapshot.fields(): blobs, order, ents, cuts, dnames, NSEC3 hashes and owners, records."""

SOA, NS, CNAME, DNAME, RRSIG, NSEC, NSEC3, NSEC3PARAM, DS, DNSKEY = (
    6,
    2,
    5,
    39,
    46,
    47,
    50,
    51,
    43,
    48,
)
_SIG_FLAG = 0x10000

# A blob is, per RRset in type order: NODE_ENTRY, then RDATA_LENGTH and RDATA per record.
NODE_ENTRY = struct.Struct(">IIH")  # type (with sig flag), ttl, rdata count
RDATA_LENGTH = struct.Struct(">H")


def sig_type(covered: int) -> int:
    """The Node key under which the RRSIGs covering `covered` are kept."""
    return _SIG_FLAG | covered


def is_sig_type(node_type: int) -> bool:
    return node_type >= _SIG_FLAG


def covered_type(rrsig_rdata: bytes) -> int:
    if len(rrsig_rdata) < 18:  # the fixed fields before the signer name
        raise ZoneError(f"malformed RRSIG: {len(rrsig_rdata)} octets of RDATA")
    return (rrsig_rdata[0] << 8) | rrsig_rdata[1]


def pack_node(node: Node) -> bytes:
    parts: list[bytes] = []
    for rtype, (ttl, rdatas) in sorted(node.items()):
        parts.append(NODE_ENTRY.pack(rtype, ttl, len(rdatas)))
        for rdata in rdatas:
            parts.append(RDATA_LENGTH.pack(len(rdata)))
            parts.append(rdata)
    return b"".join(parts)


def unpack_node(blob: bytes) -> Node:
    node: Node = {}
    pos = 0
    end = len(blob)
    unpack_entry = NODE_ENTRY.unpack_from
    while pos < end:
        rtype, ttl, count = unpack_entry(blob, pos)
        pos += 10
        rdatas = []
        for _ in range(count):
            length = (blob[pos] << 8) | blob[pos + 1]
            pos += 2
            rdatas.append(blob[pos : pos + length])
            pos += length
        node[rtype] = (ttl, tuple(rdatas))
    return node


def node_record_count(node: Node) -> int:
    return sum(len(rdatas) for _, rdatas in node.values())


@dataclass(frozen=True, slots=True)
class SoaFields:
    mname: bytes
    rname: bytes
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


def parse_soa(rdata: bytes) -> SoaFields:
    mlen = names.wire_name_length(rdata, 0)
    rlen = names.wire_name_length(rdata, mlen)
    serial, refresh, retry, expire, minimum = struct.unpack_from(">IIIII", rdata, mlen + rlen)
    return SoaFields(
        rdata[:mlen], rdata[mlen : mlen + rlen], serial, refresh, retry, expire, minimum
    )


@dataclass(frozen=True, slots=True)
class Nsec3Params:
    algorithm: int
    iterations: int
    salt: bytes


class ZoneError(ValueError):
    """A zone version that cannot be built; message names the owner and the rule."""


class Snapshot:
    """One immutable zone version. Build with SnapshotBuilder or apply_diff."""

    __slots__ = (
        "_blobs",
        "cuts",
        "dnames",
        "ents",
        "nsec3_hashes",
        "nsec3_owners",
        "nsec3_params",
        "order",
        "origin",
        "record_count",
        "soa_rdata",
        "soa_ttl",
    )

    def __init__(
        self,
        origin: bytes,
        blobs: dict[bytes, bytes],
        *,
        cuts: frozenset[bytes],
        dnames: frozenset[bytes],
        ents: frozenset[bytes],
        order: list[bytes],
        nsec3_hashes: list[bytes],
        nsec3_owners: list[bytes],
        record_count: int,
    ) -> None:
        self.origin = origin
        self._blobs = blobs
        self.cuts = cuts
        self.dnames = dnames
        self.ents = ents
        self.order = order
        self.nsec3_hashes = nsec3_hashes
        self.nsec3_owners = nsec3_owners
        self.record_count = record_count
        apex = blobs.get(origin)
        apex_node = unpack_node(apex) if apex is not None else {}
        soa = apex_node.get(SOA)
        if soa is None or len(soa[1]) != 1:
            raise ZoneError(f"{names.to_text(origin)}: the apex must hold exactly one SOA")
        self.soa_ttl, (self.soa_rdata,) = soa
        self.nsec3_params = _nsec3_params(apex_node)

    # -- lookups used by answer.py -------------------------------------------------

    @property
    def soa(self) -> SoaFields:
        return parse_soa(self.soa_rdata)

    @property
    def serial(self) -> int:
        return parse_soa(self.soa_rdata).serial

    def node(self, key: bytes) -> Node | None:
        """The RRsets at an owner, or None when the name holds no data."""
        blob = self._blobs.get(key)
        return unpack_node(blob) if blob is not None else None

    def has_data(self, key: bytes) -> bool:
        return key in self._blobs

    def exists(self, key: bytes) -> bool:
        """The name exists: it holds data or is an empty non-terminal."""
        return key in self._blobs or key in self.ents

    def blob(self, key: bytes) -> bytes | None:
        return self._blobs.get(key)

    def owners(self) -> Iterator[bytes]:
        return iter(self._blobs)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._blobs.items())

    def __len__(self) -> int:
        return len(self._blobs)

    def canonical_index(self, key: bytes) -> int:
        """Position of key's canonical key in `order`, or where it would be inserted."""
        return bisect_left(self.order, names.canonical_key(key))

    def canonical_predecessor(self, key: bytes) -> bytes | None:
        """The owner (with data) that sorts last at or before key, or None."""
        pos = bisect_right(self.order, names.canonical_key(key))
        return names.key_from_canonical(self.order[pos - 1]) if pos else None

    def has_descendants(self, key: bytes) -> bool:
        canonical = names.canonical_key(key)
        pos = bisect_right(self.order, canonical)
        return pos < len(self.order) and self.order[pos].startswith(canonical)

    def nsec3_predecessor(self, hashed: bytes) -> int:
        """Index in nsec3_hashes of the NSEC3 whose hash is at or before `hashed`
        (wrapping to the last one), or -1 when the zone has no NSEC3 records."""
        if not self.nsec3_hashes:
            return -1
        pos = bisect_right(self.nsec3_hashes, hashed)
        return pos - 1 if pos else len(self.nsec3_hashes) - 1

    def fields(self) -> SnapshotFields:
        """Everything but the origin, as plain containers (marshal-able), in the order
        the store's full copy and build_compact lay them out."""
        return (
            self._blobs,
            self.order,
            self.ents,
            self.cuts,
            self.dnames,
            self.nsec3_hashes,
            self.nsec3_owners,
            self.record_count,
        )

    def records(self) -> Iterator[Record]:
        """Every record, owners in canonical order, the SOA first (AXFR order)."""
        yield (self.origin, SOA, self.soa_ttl, self.soa_rdata)
        for canonical in self.order:
            key = names.key_from_canonical(canonical)
            for rtype, (ttl, rdatas) in unpack_node(self._blobs[key]).items():
                wire_type = RRSIG if is_sig_type(rtype) else rtype
                if wire_type == SOA and key == self.origin:
                    continue
                for rdata in rdatas:
                    yield (key, wire_type, ttl, rdata)

    # -- new versions ---------------------------------------------------------------

    def apply_diff(self, deleted: Iterable[Record], added: Iterable[Record]) -> Snapshot:
        """A new version: this one minus `deleted` plus `added` (one IXFR step).

        Raises ZoneError when a deleted record is not present (the diff does not
        apply to this version), so the caller can fall back to AXFR.
        """
        touched: dict[bytes, Node] = {}

        def working(key: bytes) -> Node:
            node = touched.get(key)
            if node is None:
                node = self.node(key) or {}
                touched[key] = node
            return node

        removed_count = 0
        for key, rtype, _ttl, rdata in deleted:
            node = working(key)
            slot = sig_type(covered_type(rdata)) if rtype == RRSIG else rtype
            entry = node.get(slot)
            if entry is None or rdata not in entry[1]:
                raise ZoneError(
                    f"IXFR deletes {names.to_text(key)} type {rtype}, which is not in the zone"
                )
            remaining = tuple(r for r in entry[1] if r != rdata)
            if remaining:
                node[slot] = (entry[0], remaining)
            else:
                del node[slot]
            removed_count += 1
        added_count = 0
        for key, rtype, ttl, rdata in added:
            if not names.is_subdomain(key, self.origin):
                raise ZoneError(f"IXFR adds {names.to_text(key)}, outside the zone")
            added_count += _add_to_node(working(key), rtype, ttl, rdata)

        blobs = dict(self._blobs)
        order = list(self.order)
        ents = set(self.ents)
        cuts = set(self.cuts)
        dnames = set(self.dnames)
        hashes, owners = self.nsec3_hashes, self.nsec3_owners
        copied = False
        for key, node in touched.items():
            canonical = names.canonical_key(key)
            had = key in blobs
            if node:
                blobs[key] = pack_node(node)
                if not had:
                    insort(order, canonical)
                    ents.discard(key)
                    for ancestor in names.ancestors(key, self.origin):
                        if ancestor not in blobs:
                            ents.add(ancestor)
            elif had:
                del blobs[key]
                del order[bisect_left(order, canonical)]
            _classify(key, node, self.origin, cuts, dnames)
            was_nsec3 = had and NSEC3 in (self.node(key) or {})
            if (NSEC3 in node) != was_nsec3:
                if not copied:  # the index is shared with this version until it changes
                    hashes, owners, copied = list(hashes), list(owners), True
                _update_nsec3_index(hashes, owners, key, add=not was_nsec3)
        # Names that lost all data may now be empty non-terminals, or vanish,
        # and so may their ancestors.
        for key, node in touched.items():
            if node:
                continue
            for name in [key, *reversed(names.ancestors(key, self.origin))]:
                if name in blobs:
                    break
                if _has_descendant(order, names.canonical_key(name)):
                    ents.add(name)
                else:
                    ents.discard(name)
        return Snapshot(
            self.origin,
            blobs,
            cuts=frozenset(cuts),
            dnames=frozenset(dnames),
            ents=frozenset(ents),
            order=order,
            nsec3_hashes=hashes,
            nsec3_owners=owners,
            record_count=self.record_count - removed_count + added_count,
        )


COMPACT_FROM_RECORDS = 50_000
"""Versions this large are re-created compactly after they are built (see build_compact)."""


def build_compact(build: Callable[[], Snapshot]) -> Snapshot:
    """`build()`'s version, re-created from one marshalled buffer when it is large.

    A version assembled from a transfer or a master file ends up with its objects
    scattered among the freed scraps of the assembly (per-owner dicts and lists,
    per-message records): the allocator cannot return an arena while one object
    lives in it, so a 1M-record zone kept 566 MB resident where the same version
    decoded in one go needs 196 MB. Marshalling it, dropping it (and with it every
    scattered arena), then unmarshalling gives the compact layout for ~0.7 s per 1M
    records. `build` must hand over the only reference to its result.
    """
    snapshot = build()
    if snapshot.record_count < COMPACT_FROM_RECORDS:
        return snapshot
    origin, data = snapshot.origin, marshal.dumps(snapshot.fields())
    del snapshot  # the last reference: every scattered arena goes back now
    return _thaw(origin, data)


def _thaw(origin: bytes, data: bytes) -> Snapshot:
    fields: SnapshotFields = marshal.loads(data)
    return snapshot_from_fields(origin, fields)


def snapshot_from_fields(origin: bytes, fields: SnapshotFields) -> Snapshot:
    """The inverse of Snapshot.fields()."""
    blobs, order, ents, cuts, dnames, hashes, owners, count = fields
    return Snapshot(
        origin,
        blobs,
        cuts=cuts,
        dnames=dnames,
        ents=ents,
        order=order,
        nsec3_hashes=hashes,
        nsec3_owners=owners,
        record_count=count,
    )


def _has_descendant(order: list[bytes], canonical: bytes) -> bool:
    pos = bisect_right(order, canonical)
    return pos < len(order) and order[pos].startswith(canonical)


def _add_to_node(node: Node, rtype: int, ttl: int, rdata: bytes) -> int:
    """Add one record; returns 1 if it was new, 0 for a duplicate (RRsets are sets).

    RFC 2181 5.2: the TTLs of an RRset must agree; the lowest one wins.
    """
    slot = sig_type(covered_type(rdata)) if rtype == RRSIG else rtype
    entry = node.get(slot)
    if entry is None:
        node[slot] = (ttl, (rdata,))
        return 1
    if rdata in entry[1]:
        return 0
    node[slot] = (min(entry[0], ttl), (*entry[1], rdata))
    return 1


def _classify(key: bytes, node: Node, origin: bytes, cuts: set[bytes], dnames: set[bytes]) -> None:
    if key != origin and NS in node:
        cuts.add(key)
    else:
        cuts.discard(key)
    if DNAME in node:
        dnames.add(key)
    else:
        dnames.discard(key)


def _nsec3_params(apex: Node) -> Nsec3Params | None:
    param = apex.get(NSEC3PARAM)
    if not param:
        return None
    for rdata in param[1]:
        # hash alg, flags, iterations, salt length, salt; flags must be 0 to be used.
        # Malformed RDATA (too short for its salt) is skipped: no usable parameters.
        if len(rdata) >= 5 and len(rdata) >= 5 + rdata[4] and rdata[1] == 0:
            return Nsec3Params(rdata[0], (rdata[2] << 8) | rdata[3], rdata[5 : 5 + rdata[4]])
    return None


def _nsec3_hash(key: bytes) -> bytes | None:
    """The raw hash an NSEC3 owner's first label spells in base32hex, None if it does not."""
    label = key[1 : key[0] + 1]
    try:
        return base64.b32hexdecode(label.upper() + b"=" * (-len(label) % 8))
    except ValueError:
        return None


def _nsec3_index(blobs: dict[bytes, bytes]) -> tuple[list[bytes], list[bytes]]:
    """Sorted raw NSEC3 owner hashes, and the owner keys in the same order."""
    pairs: list[tuple[bytes, bytes]] = []
    for key, blob in blobs.items():
        if NSEC3 in unpack_node(blob):
            raw = _nsec3_hash(key)
            if raw is not None:
                pairs.append((raw, key))
    pairs.sort()
    return [h for h, _ in pairs], [k for _, k in pairs]


def _update_nsec3_index(hashes: list[bytes], owners: list[bytes], key: bytes, add: bool) -> None:
    """Insert or remove one NSEC3 owner, keeping the (hash, owner) order of _nsec3_index."""
    raw = _nsec3_hash(key)
    if raw is None:
        return
    pos = bisect_left(hashes, raw)
    while pos < len(hashes) and hashes[pos] == raw and owners[pos] < key:
        pos += 1
    if add:
        hashes.insert(pos, raw)
        owners.insert(pos, key)
    elif pos < len(hashes) and hashes[pos] == raw and owners[pos] == key:
        del hashes[pos]
        del owners[pos]


class SnapshotBuilder:
    """Collects records (from a master file or an AXFR) and builds a Snapshot.

    Checks only what the data model needs (owner inside the zone, exactly one
    SOA at the apex); zone/checks.py applies the semantic rules.
    """

    def __init__(self, origin: bytes) -> None:
        self.origin = origin
        self.nodes: dict[bytes, Node] = {}
        self.record_count = 0

    def add(self, key: bytes, rtype: int, ttl: int, rdata: bytes) -> None:
        """Add one record; key must already be lowercase (names.lower)."""
        if not names.is_subdomain(key, self.origin):
            raise ZoneError(
                f"{names.to_text(key)} is outside the zone {names.to_text(self.origin)}"
            )
        node = self.nodes.get(key)
        if node is None:
            node = self.nodes[key] = {}
        self.record_count += _add_to_node(node, rtype, ttl, rdata)

    def add_records(self, records: Iterable[Record]) -> None:
        for key, rtype, ttl, rdata in records:
            self.add(key, rtype, ttl, rdata)

    def build(self) -> Snapshot:
        origin = self.origin
        blobs: dict[bytes, bytes] = {}
        cuts: set[bytes] = set()
        dnames: set[bytes] = set()
        nsec3_owners: list[bytes] = []
        nodes, self.nodes = self.nodes, {}  # a builder builds once; drop its nodes as we go
        while nodes:
            key, node = nodes.popitem()
            if node:
                blobs[key] = pack_node(node)
                _classify(key, node, origin, cuts, dnames)
                if NSEC3 in node:
                    nsec3_owners.append(key)
        return snapshot_from_blobs(
            origin, blobs, cuts, dnames, nsec3_owners, record_count=self.record_count
        )


def snapshot_from_blobs(
    origin: bytes,
    blobs: dict[bytes, bytes],
    cuts: set[bytes],
    dnames: set[bytes],
    nsec3_owners: Iterable[bytes],
    *,
    record_count: int,
) -> Snapshot:
    """A Snapshot from packed owners whose cuts, DNAMEs and NSEC3 owners are known;
    computes the empty non-terminals and the canonical order."""
    ents, order = _ents_and_order(origin, blobs)
    # Only owners holding NSEC3 matter; the caller saw their types without unpacking.
    hashes, owners = _nsec3_index({key: blobs[key] for key in nsec3_owners})
    return Snapshot(
        origin,
        blobs,
        cuts=frozenset(cuts),
        dnames=frozenset(dnames),
        ents=frozenset(ents),
        order=order,
        nsec3_hashes=hashes,
        nsec3_owners=owners,
        record_count=record_count,
    )


def _ents_and_order(origin: bytes, blobs: dict[bytes, bytes]) -> tuple[set[bytes], list[bytes]]:
    """Empty non-terminals and the sorted canonical keys of every owner.

    One pass, one slice and a few dict lookups per owner: the walk up to find empty
    non-terminals stops at the first ancestor already known, and the canonical key of
    a name is its parent's (cached: owners share few parents) plus its own label.
    """
    ents: set[bytes] = set()
    prefixes: dict[bytes, bytes] = {}
    order: list[bytes] = []
    append = order.append
    for key in blobs:
        if key == origin:
            append(names.canonical_key(key))
            continue
        up = key[key[0] + 1 :]
        prefix = prefixes.get(up)
        if prefix is None:
            prefix = prefixes[up] = names.canonical_key(up)
        label = key[1 : key[0] + 1]
        if b"\x00" in label or b"\x01" in label:
            append(names.canonical_key(key))
        else:
            append(prefix + label + b"\x00")
        while up != origin and up not in blobs and up not in ents:
            ents.add(up)
            up = up[up[0] + 1 :]
    order.sort()
    return ents, order
