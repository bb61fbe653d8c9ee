"""Outbound zone transfers: the messages of an AXFR or IXFR answer, as wire bytes. Pure.

The caller (the TCP server, after the `provide-xfr` ACL and TSIG) writes each message with
its two-octet length, TSIG-signing every message (RFC 8945 5.3.1 allows gaps; signing each
costs little and spares downstreams the 99-message rule).

AXFR (RFC 5936): the SOA, every RRset of the version (owners in canonical order, the RRSIGs
of an owner after its data), the SOA again. Messages are filled up to `budget` octets;
an RRset that does not fit the rest of a message starts the next one, and one larger than
a whole message is split between records (RFC 5936 2.2 allows it).

IXFR (RFC 1995): the newest SOA, then per step the old SOA, the records deleted, the new
SOA, the records added, and the newest SOA again. When the requested serial is not in the
journal the caller answers AXFR-style (RFC 1995 4: the whole version between two SOAs,
which is exactly an AXFR stream); when the client is current, a single SOA.

The question is written in the first message only (RFC 5936 2.2.1: later ones MAY omit it),
and each message compresses names against itself, as Knot does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from authd import wire
from authd.serve.render import _Writer as RecordWriter
from authd.zone import names
from authd.zone.snapshot import SOA, Record, Snapshot, is_sig_type, unpack_node

RRSIG = 46
MESSAGE_BUDGET = 65535 - 512  # room for the TSIG record the caller appends
RRsetRow = tuple[bytes, int, int, tuple[bytes, ...]]  # owner, type, ttl, rdatas


@dataclass(frozen=True, slots=True)
class IxfrStep:
    """One journal entry: the SOA RDATA before and after, and what changed between them."""

    from_soa: bytes
    to_soa: bytes
    deleted: Sequence[Record]
    added: Sequence[Record]


def _version_rrsets(snapshot: Snapshot) -> Iterator[RRsetRow]:
    """Every RRset but the apex SOA, in canonical order; signatures after each owner's data."""
    for canonical in snapshot.order:
        owner = names.key_from_canonical(canonical)
        blob = snapshot.blob(owner)
        if blob is None:
            continue
        node = unpack_node(blob)
        sigs: list[RRsetRow] = []
        for rtype in sorted(node):
            ttl, rdatas = node[rtype]
            if owner == snapshot.origin and rtype == SOA:
                continue
            if is_sig_type(rtype):
                sigs.append((owner, RRSIG, ttl, rdatas))
            else:
                yield owner, rtype, ttl, rdatas
        yield from sigs


def _soa_row(snapshot: Snapshot, rdata: bytes | None = None) -> RRsetRow:
    return snapshot.origin, SOA, snapshot.soa_ttl, (rdata or snapshot.soa_rdata,)


def _records_as_rows(records: Iterable[Record]) -> Iterator[RRsetRow]:
    """Journal records, one RRset row per run of the same owner and type."""
    run: list[bytes] = []
    key: tuple[bytes, int, int] | None = None
    for owner, rtype, ttl, rdata in records:
        if key is not None and (owner, rtype) != key[:2]:
            yield key[0], key[1], key[2], tuple(run)
            run = []
        key = (owner, rtype, ttl)
        run.append(rdata)
    if key is not None:
        yield key[0], key[1], key[2], tuple(run)


class _Messages:
    """Fills messages with RRsets; each finished message is header, question, records.

    `add` returns the messages it finished (at most a few), so callers can hand them out
    one by one while the rest of the version is still unread (a lazy stream).
    """

    def __init__(
        self, ident: int, query_flags: int, question: bytes, qkey: bytes, budget: int
    ) -> None:
        self.ident = ident
        self.flags = wire.response_flags(query_flags, aa=True)
        self.question, self.qkey = question, qkey
        self.budget = budget
        self.started = 0
        self.done: list[bytes] = []
        self._start()

    def _start(self) -> None:
        first = not self.started
        self.started += 1
        question, qkey = (self.question, self.qkey) if first else (b"", b"")
        self.writer = RecordWriter(question, qkey, self.budget)
        self.count = 0

    def add(self, row: RRsetRow) -> list[bytes]:
        owner, rtype, ttl, rdatas = row
        if self._put(owner, rtype, ttl, rdatas):
            return self._take()
        for rdata in rdatas:  # larger than a whole message: split between records
            one = (rdata,)
            if self._put(owner, rtype, ttl, one):
                continue
            self._widen()  # a record larger than the usual message: one of the largest size
            if not self.writer.rrset(owner, rtype, wire.CLASS_IN, ttl, one):
                raise ValueError("a single record is larger than a transfer message")
            self.count += 1
        return self._take()

    def _put(self, owner: bytes, rtype: int, ttl: int, rdatas: tuple[bytes, ...]) -> bool:
        """Add the records to this message, or to a new one when this one has records and
        they do not fit; False when they fit in neither."""
        if self.writer.rrset(owner, rtype, wire.CLASS_IN, ttl, rdatas):
            self.count += len(rdatas)
            return True
        if self.count:
            self._finish()
            self._start()
            if self.writer.rrset(owner, rtype, wire.CLASS_IN, ttl, rdatas):
                self.count += len(rdatas)
                return True
        return False

    def _widen(self) -> None:
        """Give the current (empty) message the largest budget."""
        question, qkey = (self.question, self.qkey) if self.started == 1 else (b"", b"")
        self.writer = RecordWriter(question, qkey, max(self.budget, MESSAGE_BUDGET))

    def _take(self) -> list[bytes]:
        if not self.done:
            return self.done
        finished, self.done = self.done, []
        return finished

    def _finish(self) -> None:
        question = self.question if self.started == 1 else b""
        head = wire.header(self.ident, self.flags, 1 if question else 0, self.count, 0, 0)
        self.done.append(b"".join((head, question, *self.writer.parts)))

    def close(self) -> list[bytes]:
        self._finish()
        return self._take()


def axfr_messages(
    snapshot: Snapshot,
    ident: int,
    query_flags: int,
    question: bytes,
    qkey: bytes,
    *,
    budget: int = MESSAGE_BUDGET,
) -> Iterator[bytes]:
    """The messages of an AXFR answer (also the AXFR-style answer to an IXFR), built
    one at a time as the caller asks: a large zone never sits in memory as messages."""
    messages = _Messages(ident, query_flags, question, qkey, budget)
    yield from messages.add(_soa_row(snapshot))
    for row in _version_rrsets(snapshot):
        yield from messages.add(row)
    yield from messages.add(_soa_row(snapshot))
    yield from messages.close()


def ixfr_messages(
    snapshot: Snapshot,
    steps: Sequence[IxfrStep],
    ident: int,
    query_flags: int,
    question: bytes,
    qkey: bytes,
    *,
    budget: int = MESSAGE_BUDGET,
) -> Iterator[bytes]:
    """The messages of an incremental answer; no steps means "you are current": one SOA."""
    messages = _Messages(ident, query_flags, question, qkey, budget)
    yield from messages.add(_soa_row(snapshot))
    for step in steps:
        yield from messages.add(_soa_row(snapshot, step.from_soa))
        for row in _records_as_rows(step.deleted):
            yield from messages.add(row)
        yield from messages.add(_soa_row(snapshot, step.to_soa))
        for row in _records_as_rows(step.added):
            yield from messages.add(row)
    if steps:
        yield from messages.add(_soa_row(snapshot))
    yield from messages.close()


def axfr(
    snapshot: Snapshot,
    ident: int,
    query_flags: int,
    question: bytes,
    qkey: bytes,
    *,
    budget: int = MESSAGE_BUDGET,
) -> list[bytes]:
    """Every message of an AXFR answer at once (tests, small zones)."""
    return list(axfr_messages(snapshot, ident, query_flags, question, qkey, budget=budget))


def ixfr(
    snapshot: Snapshot,
    steps: Sequence[IxfrStep],
    ident: int,
    query_flags: int,
    question: bytes,
    qkey: bytes,
    *,
    budget: int = MESSAGE_BUDGET,
) -> list[bytes]:
    """Every message of an incremental answer at once."""
    return list(ixfr_messages(snapshot, steps, ident, query_flags, question, qkey, budget=budget))


def diff(old: Snapshot, new: Snapshot) -> tuple[list[Record], list[Record]]:
    """The records deleted and added from `old` to `new` (for IXFR after an AXFR came in,
    as Knot's ixfr-from-axfr), the apex SOA left out: the IXFR step carries both SOAs."""
    deleted: list[Record] = []
    added: list[Record] = []
    owners = sorted(set(old.owners()) | set(new.owners()))
    for owner in owners:
        before, after = old.blob(owner), new.blob(owner)
        if before == after:
            continue
        old_node = unpack_node(before) if before is not None else {}
        new_node = unpack_node(after) if after is not None else {}
        for rtype in sorted(set(old_node) | set(new_node)):
            if owner == old.origin and rtype == SOA:
                continue
            wire_type = RRSIG if is_sig_type(rtype) else rtype
            old_ttl, old_rdatas = old_node.get(rtype, (0, ()))
            new_ttl, new_rdatas = new_node.get(rtype, (0, ()))
            if old_ttl != new_ttl:  # a TTL change replaces the whole RRset
                gone, came = set(old_rdatas), set(new_rdatas)
            else:
                gone, came = set(old_rdatas) - set(new_rdatas), set(new_rdatas) - set(old_rdatas)
            deleted.extend((owner, wire_type, old_ttl, r) for r in old_rdatas if r in gone)
            added.extend((owner, wire_type, new_ttl, r) for r in new_rdatas if r in came)
    return deleted, added


class MessageStream(bytes):
    """A multi-message TCP answer: the first message is the bytes value (what counters,
    RRL and the query log read); `rest` yields the later ones lazily, pulled by the TCP
    connection as its write buffer drains (tcp.py), so a large transfer is never built
    whole and never holds the event loop for more than one message at a time."""

    rest: Iterator[bytes]

    def __new__(cls, first: bytes, rest: Iterator[bytes]) -> MessageStream:
        stream = super().__new__(cls, first)
        stream.rest = rest
        return stream
