"""authd.serve.cache: entries, patching a stored response for a new query, bounds."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rrset
import pytest

from authd.serve import cache
from authd.serve.zonetable import ZoneTable


def response_for(name: str, ident: int, rd: bool, tc: bool = False) -> bytes:
    query = dns.message.make_query(name, "A")
    query.id = ident
    if not rd:
        query.flags &= ~dns.flags.RD
    msg = dns.message.make_response(query)
    msg.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.1"))
    if tc:
        msg.flags |= dns.flags.TC
    return msg.to_wire()


def qend_of(data: bytes) -> int:
    pos = 12
    while data[pos]:
        pos += data[pos] + 1
    return pos + 5


def test_patch_copies_id_rd_and_question_case() -> None:
    response = response_for("www.example.test.", 4321, rd=True)
    entry = cache.make_entry(response, qend_of(response))
    assert entry.rcode == 0 and not entry.truncated
    assert not entry.head[0] & 0x01 and entry.head_rd[0] & 0x01
    query = dns.message.make_query("WWW.eXample.TEST.", "A")
    query.id = 0xBEEF
    data = query.to_wire()
    patched = cache.patch(entry, data, len(data))
    msg = dns.message.from_wire(patched)
    assert msg.id == 0xBEEF and msg.flags & dns.flags.RD
    assert str(msg.question[0].name) == "WWW.eXample.TEST."
    # The answer owner is a pointer to the question, so it carries the new case too.
    assert str(msg.answer[0].name) == "WWW.eXample.TEST."
    query.flags &= ~dns.flags.RD
    msg = dns.message.from_wire(cache.patch(entry, query.to_wire(), len(data)))
    assert not msg.flags & dns.flags.RD
    assert patched[2:] == response[2:12] + data[12:] + response[len(data) :]


def test_entry_keeps_rcode_and_truncation() -> None:
    response = bytearray(response_for("a.example.test.", 1, rd=False, tc=True))
    response[3] = (response[3] & 0xF0) | 3
    entry = cache.make_entry(bytes(response), qend_of(bytes(response)))
    assert entry.rcode == 3 and entry.truncated


def test_cache_is_bounded_and_evicts_oldest_first() -> None:
    store = cache.ResponseCache(max_entries=3)
    response = response_for("a.example.test.", 1, rd=False)
    entry = cache.make_entry(response, qend_of(response))
    for i in range(5):
        store.put(False, cache.EDNS, bytes([i]), entry)
    assert len(store) == 3 and store.evictions == 2
    entries = store.maps(False)[cache.EDNS]
    assert b"\x00" not in entries and b"\x01" not in entries and entries[b"\x04"] is entry
    store.put(False, cache.EDNS, b"\x04", entry)  # replacing an entry evicts nothing
    assert store.evictions == 2
    # Another map being filled while full takes from the fullest one.
    store.put(True, cache.PLAIN, b"\x09", entry)
    assert len(store) == 3 and store.evictions == 3 and store.maps(True)[cache.PLAIN]
    assert b"\x02" not in entries


def test_transports_and_shapes_are_separate_maps() -> None:
    store = cache.ResponseCache()
    response = response_for("a.example.test.", 1, rd=False)
    entry = cache.make_entry(response, qend_of(response))
    store.put(False, cache.PLAIN, b"k", entry)
    assert b"k" not in store.maps(True)[cache.PLAIN]
    assert all(b"k" not in store.maps(False)[shape] for shape in (cache.EDNS, cache.NSID))


def test_negative_entries_are_bounded_apart() -> None:
    store = cache.ResponseCache(max_entries=2)
    response = response_for("a.example.test.", 1, rd=False)
    entry = cache.make_entry(response, qend_of(response))
    store.put(False, cache.PLAIN, b"k", entry)
    for i in range(4):
        store.put_negative(("class", i), entry)
    assert len(store.negative) == 2 and ("class", 3) in store.negative
    assert b"k" in store.maps(False)[cache.PLAIN]  # a flood of negatives evicts no answer


def test_negative_names_are_bounded_apart_from_answers() -> None:
    store = cache.ResponseCache(max_entries=2)
    response = response_for("a.example.test.", 1, rd=False)
    entry = cache.make_entry(response, qend_of(response))
    store.put(False, cache.EDNS, b"answer", entry)
    for i in range(5):
        store.put_negative_name(False, cache.EDNS, bytes([i]), entry)
    negatives = store.negative_maps(False)[cache.EDNS]
    assert store.negative_names_size == 2 and list(negatives) == [b"\x03", b"\x04"]
    assert b"answer" in store.maps(False)[cache.EDNS]


def _entry() -> cache.Entry:
    response = response_for("a.example.test.", 1, rd=False)
    return cache.make_entry(response, qend_of(response))


def test_the_caches_of_every_zone_share_one_capped_budget() -> None:
    table = ZoneTable(cache_entries=1_000, cache_total=50)
    origins = [bytes([1, 0x61 + i % 26, 1, 0x61 + i // 26, 0]) for i in range(200)]
    entry = _entry()
    for origin in origins:
        table.add_zone(origin)
        zone = table.get(origin)
        assert zone is not None
        for n in range(5):
            zone.cache.put(False, cache.EDNS, bytes([n]), entry)
            zone.cache.put_negative_name(True, cache.PLAIN, bytes([n]), entry)
    held = sum(zone.cache.held() for zone in map(table.get, origins) if zone is not None)
    assert table.cache_budget.used == held <= 50  # 200 zones x 10 entries asked for
    # Replaced and removed versions give their entries back.
    table.remove_zone(origins[-1])
    table.set_state(origins[-2], servfail=True)
    held = sum(zone.cache.held() for zone in map(table.get, origins) if zone is not None)
    assert table.cache_budget.used == held


def test_a_flood_in_one_zone_churns_its_own_cache_not_the_others() -> None:
    budget = cache.CacheBudget(100)
    quiet = cache.ResponseCache(budget=budget)
    flooded = cache.ResponseCache(budget=budget)
    entry = _entry()
    for n in range(20):
        quiet.put(False, cache.PLAIN, bytes([n]), entry)
    for n in range(5_000):
        flooded.put_negative_name(False, cache.PLAIN, n.to_bytes(2, "big"), entry)
    assert budget.used == 100 == quiet.held() + flooded.held()
    assert quiet.held() == 20  # under its fair share (50): never a victim
    assert flooded.evictions >= 5_000 - 80


def test_a_cache_under_its_share_takes_room_from_one_above_it() -> None:
    budget = cache.CacheBudget(10)
    big = cache.ResponseCache(budget=budget)
    small = cache.ResponseCache(budget=budget)
    entry = _entry()
    for n in range(10):
        big.put(False, cache.PLAIN, bytes([n]), entry)
    for n in range(4):
        small.put(False, cache.PLAIN, bytes([n]), entry)
    assert (big.held(), small.held(), budget.used) == (6, 4, 10)
    with pytest.raises(ValueError, match="at least one entry"):
        cache.CacheBudget(0)
