"""Prebuilt responses for one published zone version.

A ResponseCache belongs to one PublishedZone (one snapshot), so publishing a new
version starts a fresh cache and no entry can outlive the data it was built
from. Keys are built from the raw question (name lowercased, type and class
as sent) and everything else the response depends on: EDNS present, DO,
NSID asked, and the size limit (the UDP limit, or 65535 for TCP). Values are
complete responses with ID 0, RD clear and the question as first seen; `patch`
makes one fit a new query by copying in its ID, RD bit and question bytes
(same length, so every compression pointer stays valid).

Bounded: when full, the oldest entry goes (insertion order), O(1) per insert.
"""

from __future__ import annotations

DEFAULT_ENTRIES = 100_000

_EDNS, _DO, _NSID = 1, 2, 4


def variant(edns: bool, do: bool, nsid: bool, limit: int) -> bytes:
    """The part of the key that is not the question."""
    bits = (_EDNS if edns else 0) | (_DO if do else 0) | (_NSID if nsid else 0)
    return bytes((bits, limit >> 8, limit & 0xFF))


def make_key(qkey: bytes, type_class: bytes, edns: bool, do: bool, nsid: bool, limit: int) -> bytes:
    """qkey: lowercased qname; type_class: the 4 octets after it in the query."""
    return qkey + type_class + variant(edns, do, nsid, limit)


_BYTE = tuple(bytes((value,)) for value in range(256))


def patch(cached: bytes, query: bytes, question_end: int) -> bytes:
    """The cached response with the query's ID, RD bit and question bytes."""
    return (
        query[:2]
        + _BYTE[cached[2] | (query[2] & 0x01)]
        + cached[3:12]
        + query[12:question_end]
        + cached[question_end:]
    )


def prepare(response: bytes) -> bytes:
    """A response as the cache stores it: ID 0 and RD clear."""
    return b"\x00\x00" + bytes((response[2] & 0xFE,)) + response[3:]


class ResponseCache:
    __slots__ = ("entries", "evictions", "max_entries")

    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self.entries: dict[bytes, bytes] = {}
        self.max_entries = max_entries
        self.evictions = 0

    def get(self, key: bytes) -> bytes | None:
        return self.entries.get(key)

    def put(self, key: bytes, response: bytes) -> None:
        entries = self.entries
        if key not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
            self.evictions += 1
        entries[key] = prepare(response)

    def __len__(self) -> int:
        return len(self.entries)
