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

Bounded per zone: at most max_entries per-question entries and max_entries negative
ones; when full, the oldest entry of the map being filled goes (insertion
order), O(1) per insert.

Bounded overall: every cache of one zone table (one worker process) draws on one
CacheBudget of DEFAULT_TOTAL_ENTRIES entries, so memory does not grow with the number of
zones. When the budget is spent, a new entry evicts the oldest one of its own cache, or,
when its cache is empty, one of another cache's (round robin over the caches holding
entries), O(1) per insert. A cache replaced by a new version gives its entries back.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_ENTRIES = 100_000  # per zone version, per kind (per question / negative)
DEFAULT_TOTAL_ENTRIES = 200_000  # per process, over every zone (~100 MB at ~500 B an entry)

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


_LOOK = 8  # caches looked at for one above its fair share, per eviction


class CacheBudget:
    """Entries held by all the caches of one zone table, capped at `limit`."""

    __slots__ = ("_holders", "limit", "used")

    def __init__(self, limit: int = DEFAULT_TOTAL_ENTRIES) -> None:
        if limit < 1:
            raise ValueError("a cache budget needs at least one entry")
        self.limit = limit
        self.used = 0
        self._holders: dict[int, ResponseCache] = {}  # caches that took entries, round robin

    def admit(self, cache: ResponseCache) -> None:
        """Count one new entry of `cache`, evicting one first when the budget is spent.

        A cache above its fair share (limit / caches holding entries) evicts its own oldest
        entry, so a flood of new names in one zone only churns that zone's cache; a cache
        below it takes one from the next cache above it, round robin (a bounded look).
        """
        self._holders.setdefault(id(cache), cache)
        if self.used >= self.limit:
            share = self.limit // len(self._holders)
            if not (cache.held() > share and cache.evict_one()):
                self._evict_elsewhere(share)
        self.used += 1

    def _evict_elsewhere(self, share: int) -> None:
        fallback: tuple[int, ResponseCache] | None = None
        for _ in range(min(_LOOK, len(self._holders))):
            key = next(iter(self._holders))
            victim = self._holders.pop(key)
            if not victim.held():
                continue  # it gave everything back: forget it until it takes entries again
            self._holders[key] = victim  # to the back: the next eviction is elsewhere
            if victim.held() > share:
                victim.evict_one()
                return
            fallback = fallback or (key, victim)
        if fallback is not None:
            fallback[1].evict_one()

    def release(self, cache: ResponseCache, count: int) -> None:
        self.used -= count
        if cache.budget is None:
            self._holders.pop(id(cache), None)


class ResponseCache:
    __slots__ = (
        "budget",
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

    def __init__(
        self, max_entries: int = DEFAULT_ENTRIES, budget: CacheBudget | None = None
    ) -> None:
        self.budget = budget
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
            if self.budget is not None:
                self.budget.admit(self)
            self.size += 1
        entries[key] = entry

    def _evict(self, preferred: dict[bytes, Entry]) -> None:
        """Drop the oldest entry of the map being filled (or of the fullest one)."""
        victim = preferred if preferred else max((*self.udp, *self.tcp), key=len)
        del victim[next(iter(victim))]
        self.size -= 1
        self._evicted()

    def _evicted(self) -> None:
        self.evictions += 1
        if self.budget is not None:
            self.budget.release(self, 1)

    def evict_one(self) -> bool:
        """Drop one entry (for the overall budget): a negative one first, else the oldest
        of the largest positive map. False when the cache holds nothing."""
        for maps in (self.udp_negative, self.tcp_negative):
            victim = max(maps, key=len)
            if victim:
                del victim[next(iter(victim))]
                self.negative_names_size -= 1
                self._evicted()
                return True
        for kind in (self.negative, self.negative_shapes):
            if kind:
                del kind[next(iter(kind))]
                self._evicted()
                return True
        if self.size:
            self._evict({})
            return True
        return False

    def held(self) -> int:
        return self.size + self.negative_names_size + len(self.negative) + len(self.negative_shapes)

    def release(self) -> None:
        """This cache's version was replaced: give its entries back to the budget."""
        budget, self.budget = self.budget, None
        if budget is not None:
            budget.release(self, self.held())

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
                self._evicted()
            if self.budget is not None:
                self.budget.admit(self)
            self.negative_names_size += 1
        entries[key] = entry

    def put_negative(self, key: object, entry: Entry) -> None:
        negative = self.negative
        if key not in negative:
            if len(negative) >= self.max_entries:
                del negative[next(iter(negative))]
                self._evicted()
            if self.budget is not None:
                self.budget.admit(self)
        negative[key] = entry

    def shape_of(self, key: object) -> frozenset[bytes] | None:
        return self.negative_shapes.get(key)

    def put_shape(self, key: object, shape: frozenset[bytes]) -> None:
        shapes = self.negative_shapes
        if key not in shapes:
            if len(shapes) >= self.max_entries:
                del shapes[next(iter(shapes))]
                if self.budget is not None:
                    self.budget.release(self, 1)
            if self.budget is not None:
                self.budget.admit(self)
        shapes[key] = shape

    def __len__(self) -> int:
        return self.size + self.negative_names_size + len(self.negative)
