"""authd.serve.cache: keys, patching a stored response for a new query, bounds."""

from __future__ import annotations

import dns.message
import dns.rrset

from authd.serve import cache


def response_for(name: str, ident: int, rd: bool) -> bytes:
    query = dns.message.make_query(name, "A")
    query.id = ident
    if not rd:
        query.flags &= ~dns.flags.RD
    msg = dns.message.make_response(query)
    msg.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.1"))
    return msg.to_wire()


def test_patch_copies_id_rd_and_question_case() -> None:
    stored = cache.prepare(response_for("www.example.test.", 4321, rd=True))
    assert stored[:2] == b"\x00\x00" and not stored[2] & 0x01
    query = dns.message.make_query("WWW.eXample.TEST.", "A")
    query.id = 0xBEEF
    data = query.to_wire()
    qend = len(data)
    patched = cache.patch(stored, data, qend)
    msg = dns.message.from_wire(patched)
    assert msg.id == 0xBEEF and msg.flags & dns.flags.RD
    assert str(msg.question[0].name) == "WWW.eXample.TEST."
    # The answer owner is a pointer to the question, so it carries the new case too.
    assert str(msg.answer[0].name) == "WWW.eXample.TEST."
    query.flags &= ~dns.flags.RD
    msg = dns.message.from_wire(cache.patch(stored, query.to_wire(), qend))
    assert not msg.flags & dns.flags.RD


def test_keys_separate_everything_the_response_depends_on() -> None:
    qkey = b"\x03www\x07example\x04test\x00"
    base = cache.make_key(qkey, b"\x00\x01\x00\x01", True, False, False, 1232)
    others = {
        cache.make_key(qkey, b"\x00\x61\x00\x01", True, False, False, 1232),  # type 97
        cache.make_key(qkey, b"\x00\x41\x00\x01", True, False, False, 1232),  # type 65
        cache.make_key(qkey, b"\x00\x01\x00\xff", True, False, False, 1232),  # class ANY
        cache.make_key(qkey, b"\x00\x01\x00\x01", False, False, False, 1232),
        cache.make_key(qkey, b"\x00\x01\x00\x01", True, True, False, 1232),
        cache.make_key(qkey, b"\x00\x01\x00\x01", True, False, True, 1232),
        cache.make_key(qkey, b"\x00\x01\x00\x01", True, False, False, 512),
        cache.make_key(qkey, b"\x00\x01\x00\x01", True, False, False, 65535),
    }
    assert base not in others and len(others) == 8


def test_cache_is_bounded_and_evicts_oldest_first() -> None:
    store = cache.ResponseCache(max_entries=3)
    response = response_for("a.example.test.", 1, rd=False)
    for i in range(5):
        store.put(bytes([i]), response)
    assert len(store) == 3 and store.evictions == 2
    assert store.get(b"\x00") is None and store.get(b"\x01") is None
    assert store.get(b"\x04") == cache.prepare(response)
    store.put(b"\x04", response)  # replacing an entry evicts nothing
    assert store.evictions == 2
