"""Prebuilt responses for one published zone version.

A ResponseCache belongs to one PublishedZone (one snapshot), so publishing a new
version starts a fresh cache and no entry can outlive the data it was built
from.

Positive (and NODATA) answers are kept per question, keyed by the raw bytes of
the query after the header with the name lowercased: the question's type and
class and, for EDNS queries, the whole OPT record. That is every input the
response depends on (the client's payload size, DO, version), so the hot path
needs no parsing at all: it guesses where the name ends from the message length
(4 octets of type and class, plus 11 of an option-less OPT) and looks the bytes
up. A guess can only match a key stored from a query that passed the full
parser with the same length, additional count and transport, so a hit is as
good as a parse. Each transport (UDP, TCP) has three maps, by query shape:
no OPT, OPT without options, OPT with options (normalised: the options are
dropped unless NSID is asked, which gets a map of its own).

Negative answers are rendered per *class* of question instead of per name, so
a random-name flood hits the cache instead of filling it (see responder.py and
answer.nxdomain_class); they are also kept per name in maps of their own,
bounded apart, so a repeated name is a plain hit and a flood of new names evicts
only other negative answers.

An Entry holds the response split around the question: the header after the ID
with RD clear and with RD set, and everything after the question. `patch`
puts the query's ID, its header variant and its question (same length, so
every compression pointer stays valid) around them.

Bounded: at most max_entries per-question entries and max_entries negative
ones; when full, the oldest entry of the map being filled goes (insertion
order), O(1) per insert.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_ENTRIES = 100_000

# Query shapes: index into ResponseCache.udp / .tcp.
PLAIN, EDNS, NSID = 0, 1, 2


class Entry(NamedTuple):
    head: bytes  # response[2:12] with RD clear
    head_rd: bytes  # the same with RD set
    tail: bytes  # everything after the question
    rcode: int
    truncated: bool
    opt_rdlen: int = -1  # RDATA length of the OPT ending the response; -1: no OPT
    ede: int = 0  # the Extended DNS Error the response carries (0: none), for the counters


def make_entry(response: bytes, question_end: int, opt_rdlen: int = -1, ede: int = 0) -> Entry:
    """The cache form of a complete response whose question ends at question_end.

    `opt_rdlen` locates the OPT (always the last record of a cached response), so that
    per-query options can be appended to it (edns.add_to_opt) without re-rendering."""
    flags = response[2] & 0xFE
    head = bytes((flags,)) + response[3:12]
    head_rd = bytes((flags | 0x01,)) + response[3:12]
    return Entry(
        head,
        head_rd,
        response[question_end:],
        response[3] & 0x0F,
        bool(flags & 0x02),
        opt_rdlen,
        ede if opt_rdlen >= 0 else 0,
    )


def patch(entry: Entry, query: bytes, question_end: int) -> bytes:
    """The cached response with the query's ID, RD bit and question bytes."""
    return (
        query[:2]
        + (entry.head_rd if query[2] & 0x01 else entry.head)
        + query[12:question_end]
        + entry.tail
    )


class ResponseCache:
    __slots__ = (
        "evictions",
        "max_entries",
        "negative",
        "negative_names_size",
        "negative_shapes",
        "size",
        "tcp",
        "tcp_negative",
        "udp",
        "udp_negative",
    )

    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        # Per question, by transport and query shape (PLAIN, EDNS, NSID).
        self.udp: tuple[dict[bytes, Entry], ...] = ({}, {}, {})
        self.tcp: tuple[dict[bytes, Entry], ...] = ({}, {}, {})
        # Negative answers per question too (repeated names are hits), kept apart and
        # bounded apart, so that a random-name flood never evicts a positive answer.
        self.udp_negative: tuple[dict[bytes, Entry], ...] = ({}, {}, {})
        self.tcp_negative: tuple[dict[bytes, Entry], ...] = ({}, {}, {})
        self.negative_names_size = 0
        # Per class of negative question (responder.py builds the keys).
        self.negative: dict[object, Entry] = {}
        # Names each negative class writes, for compression (render.compression_names).
        self.negative_shapes: dict[object, frozenset[bytes]] = {}
        self.max_entries = max_entries
        self.size = 0  # entries in the per-question maps
        self.evictions = 0

    def maps(self, tcp: bool) -> tuple[dict[bytes, Entry], ...]:
        return self.tcp if tcp else self.udp

    def put(self, tcp: bool, shape: int, key: bytes, entry: Entry) -> None:
        entries = (self.tcp if tcp else self.udp)[shape]
        if key not in entries:
            if self.size >= self.max_entries:
                self._evict(entries)
            self.size += 1
        entries[key] = entry

    def _evict(self, preferred: dict[bytes, Entry]) -> None:
        """Drop the oldest entry of the map being filled (or of the fullest one)."""
        victim = preferred if preferred else max((*self.udp, *self.tcp), key=len)
        del victim[next(iter(victim))]
        self.size -= 1
        self.evictions += 1

    def negative_maps(self, tcp: bool) -> tuple[dict[bytes, Entry], ...]:
        return self.tcp_negative if tcp else self.udp_negative

    def put_negative_name(self, tcp: bool, shape: int, key: bytes, entry: Entry) -> None:
        entries = (self.tcp_negative if tcp else self.udp_negative)[shape]
        if key not in entries:
            if self.negative_names_size >= self.max_entries:
                victim = (
                    entries if entries else max((*self.udp_negative, *self.tcp_negative), key=len)
                )
                del victim[next(iter(victim))]
                self.negative_names_size -= 1
                self.evictions += 1
            self.negative_names_size += 1
        entries[key] = entry

    def put_negative(self, key: object, entry: Entry) -> None:
        negative = self.negative
        if key not in negative and len(negative) >= self.max_entries:
            del negative[next(iter(negative))]
            self.evictions += 1
        negative[key] = entry

    def shape_of(self, key: object) -> frozenset[bytes] | None:
        return self.negative_shapes.get(key)

    def put_shape(self, key: object, shape: frozenset[bytes]) -> None:
        shapes = self.negative_shapes
        if key not in shapes and len(shapes) >= self.max_entries:
            del shapes[next(iter(shapes))]
        shapes[key] = shape

    def __len__(self) -> int:
        return self.size + self.negative_names_size + len(self.negative)
