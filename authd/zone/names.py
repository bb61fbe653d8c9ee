"""Domain names as raw wire bytes.

A *key* is an absolute name in uncompressed wire form with every ASCII letter
lowercased (b"\\x03www\\x07example\\x00"). Keys are what the zone is indexed by;
they compare and hash fast and need no dnspython object on the hot path.

A *canonical key* orders names as RFC 4034 section 6.1 does, with plain byte
comparison: labels are written root-first, lowercased, each followed by a 0x00
separator; 0x00 and 0x01 inside a label are escaped so the separator stays the
smallest byte. A descendant's canonical key starts with its ancestor's.
"""

from __future__ import annotations

import dns.name

_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
ROOT = b"\x00"
WILDCARD_LABEL = b"\x01*"


def lower(wire: bytes) -> bytes:
    """Lowercase ASCII letters only (DNS case-insensitivity, RFC 4343)."""
    return wire.translate(_LOWER)


def key_from_text(text: str) -> bytes:
    return lower(dns.name.from_text(text).to_wire() or b"\x00")


def key_from_name(name: dns.name.Name) -> bytes:
    wire = name.to_wire()
    assert wire is not None
    return lower(wire)


def to_name(key: bytes) -> dns.name.Name:
    return dns.name.from_wire(key, 0)[0]


def to_text(key: bytes) -> str:
    return to_name(key).to_text()


def display(key: bytes) -> str:
    """The name as messages show it: no trailing dot ("www.example.com"), the root "."."""
    text = to_text(key)
    return text if text == "." else text.rstrip(".")


def labels(key: bytes) -> list[bytes]:
    """The labels of a key, leftmost first, without the root label."""
    out: list[bytes] = []
    pos = 0
    while True:
        length = key[pos]
        if length == 0:
            return out
        out.append(key[pos + 1 : pos + 1 + length])
        pos += 1 + length


def label_count(key: bytes) -> int:
    count = 0
    pos = 0
    while key[pos]:
        pos += key[pos] + 1
        count += 1
    return count


def parent(key: bytes) -> bytes:
    """The key one label up; the root is its own parent."""
    return key[key[0] + 1 :] if key[0] else key


def is_subdomain(key: bytes, ancestor: bytes) -> bool:
    """True if key is ancestor or below it (both keys, so already lowercase)."""
    if not key.endswith(ancestor):
        return False
    cut = len(key) - len(ancestor)
    if cut == 0:
        return True
    # The suffix must start on a label boundary of key.
    pos = 0
    while pos < cut:
        pos += key[pos] + 1
    return pos == cut


def ancestors(key: bytes, stop: bytes) -> list[bytes]:
    """Keys strictly between stop and key, nearest to stop first.

    stop must be an ancestor of key (or key itself, giving []).
    """
    out: list[bytes] = []
    current = key
    while len(current) > len(stop):
        current = parent(current)
        if len(current) > len(stop):
            out.append(current)
    out.reverse()
    return out


def _escape(label: bytes) -> bytes:
    if b"\x00" in label or b"\x01" in label:
        label = label.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")
    return label


def canonical_key(key: bytes) -> bytes:
    """A byte string whose order is the RFC 4034 canonical order of names."""
    parts = labels(key)
    if not parts:
        return b""
    parts.reverse()
    joined = b"\x00".join(parts)
    # One join is 2.5x faster than escaping label by label; escape only the rare
    # names holding 0x00 or 0x01 (a 500k-owner zone builds 0.9 s faster).
    if b"\x01" in joined or joined.count(b"\x00") != len(parts) - 1:
        return b"".join(_escape(label) + b"\x00" for label in parts)
    return joined + b"\x00"


def _unescape(label: bytes) -> bytes:
    if b"\x01" in label:
        label = label.replace(b"\x01\x01", b"\x00").replace(b"\x01\x02", b"\x01")
    return label


def key_from_canonical(canonical: bytes) -> bytes:
    if not canonical:
        return ROOT
    parts = canonical[:-1].split(b"\x00")
    return b"".join(bytes([len(p)]) + p for p in map(_unescape, reversed(parts))) + b"\x00"


def wire_name_length(data: bytes | memoryview, offset: int) -> int:
    """Length of an uncompressed wire name starting at offset."""
    pos = offset
    while data[pos]:
        pos += data[pos] + 1
    return pos + 1 - offset
