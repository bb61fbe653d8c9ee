"""A fast reader for the common shapes of master-file records (RFC 1035 section 5).

dnspython's zone-file Reader is exact but reads 4-5k records per second. This
module handles the lines that make up almost every real zone (owner, TTL and
class in either order, the frequent types) and converts them straight to wire
RDATA. It is deliberately conservative: every function returns None when it is
not certain to produce exactly what dnspython would, and the caller
(zone/loader.py) then hands that entry to dnspython, which either parses it or
raises the error an operator should see. So the fast path may decline anything,
but must never accept what dnspython rejects or produce different bytes; the
differential tests check exactly that.

Pure functions on text: no files, no dnspython parsing on the fast path.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import struct
from collections.abc import Callable, Iterator

import dns.dnssectypes
import dns.exception
import dns.rdatatype
import dns.ttl

MAX_TTL = 2**32 - 1
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_LENGTH = [bytes((n,)) for n in range(256)]


class Quoted(str):
    """A token that was a quoted string (dnspython's QUOTED_STRING)."""

    __slots__ = ()


# -- entries: one record or directive, possibly spanning lines in parentheses ------------

# Printable ASCII without the characters that need the careful tokenizer: " ( ) ; \
_NOT_PLAIN = re.compile(r"[^\t\x20\x21\x23-\x27\x2a-\x3a\x3c-\x5b\x5d-\x7e]")
_TOKEN = re.compile(
    r"""[ \t]+|"((?:[^"\\]|\\.)*)"|;.*|(\()|(\))|((?:[^ \t;()"\\]|\\.)+)|(.)""",
    re.DOTALL,
)


Entry = tuple[int, int, bool, "list[str] | None", bool]
"""(first, last, blank_owner, tokens, rest): lines first..last (1-based) of one record
or directive, whether it starts with blank space (the previous owner), its tokens.

tokens is None when the entry cannot be tokenized with certainty (a bad byte,
a quoted string left open, a stray parenthesis, non-ASCII text); `rest` is then
True when even the entry's extent is unknown, so everything from `first` on
needs dnspython. A plain tuple: one is made per record.
"""


def _tokenize_line(line: str, tokens: list[str], depth: int) -> int | None:
    """Append the tokens of one line; returns the parenthesis depth after it, or None."""
    for match in _TOKEN.finditer(line):
        quoted, opened, closed, word, bad = match.groups()
        if word is not None:
            tokens.append(word)
        elif quoted is not None:
            tokens.append(Quoted(quoted))
        elif opened is not None:
            depth += 1
        elif closed is not None:
            depth -= 1
            if depth < 0:
                return None
        elif bad is not None:
            return None
    return depth


def iter_entries(lines: list[str]) -> Iterator[Entry]:
    """The entries of a file split into lines (without their newlines).

    Blank lines and lines holding only a comment produce nothing, as in dnspython.
    """
    index = 0
    count = len(lines)
    not_plain = _NOT_PLAIN.search
    while index < count:
        line = lines[index]
        index += 1
        if not line:
            continue
        blank_owner = line[0] == " " or line[0] == "\t"
        if not_plain(line) is None:
            tokens = line.split()
            if tokens:
                yield (index, index, blank_owner, tokens, False)
            continue
        first = index
        if not line.isascii():
            # IDNA names and UTF-8 text are dnspython's business; the extent is still ours.
            tokens = []
            depth = _tokenize_line(line, tokens, 0)
            while depth and index < count:
                depth = _tokenize_line(lines[index], tokens, depth)
                index += 1
            if depth != 0:
                yield (first, count, blank_owner, None, True)
                return
            yield (first, index, blank_owner, None, False)
            continue
        tokens = []
        depth = _tokenize_line(line, tokens, 0)
        while depth and index < count:
            following = lines[index]
            index += 1
            if not following.isascii():
                depth = None
                break
            depth = _tokenize_line(following, tokens, depth)
        if depth != 0:
            yield (first, count, blank_owner, None, True)
            return
        if tokens:
            yield (first, index, blank_owner, tokens, False)


# -- names --------------------------------------------------------------------------------


def name_wire(text: str, origin: bytes) -> bytes | None:
    """The uncompressed wire form of a name (case kept), relative names below origin."""
    if isinstance(text, Quoted) or not text:
        return None
    if text == "@":
        return origin
    if "." not in text and "\\" not in text:
        # One relative label: the most frequent owner spelling.
        size = len(text)
        if size > 63 or size + 1 + len(origin) > 255:
            return None
        return _LENGTH[size] + text.encode() + origin
    if "\\" in text:
        raw = _unescape_name(text)
        if raw is None:
            return None
        labels, absolute = raw
    else:
        if text == ".":
            return b"\x00"
        absolute = text[-1] == "."
        labels = (text[:-1] if absolute else text).encode().split(b".")
    wire = b"".join([_LENGTH[len(label)] + label for label in labels if 0 < len(label) < 64])
    if len(wire) != sum(len(label) + 1 for label in labels):
        return None  # an empty or overlong label: dnspython's error to report
    wire += b"\x00" if absolute else origin
    return wire if len(wire) <= 255 else None


def _unescape_name(text: str) -> tuple[list[bytes], bool] | None:
    """Labels of a name holding \\DDD or \\X escapes, and whether it is absolute."""
    labels: list[bytes] = []
    label = bytearray()
    pos = 0
    end = len(text)
    while pos < end:
        char = text[pos]
        pos += 1
        if char == "\\":
            escaped = _escape_at(text, pos)
            if escaped is None:
                return None
            octets, pos = escaped
            label += octets
        elif char == ".":
            if not label:
                return None
            labels.append(bytes(label))
            label = bytearray()
        else:
            label += char.encode()
    if label:
        labels.append(bytes(label))
        return labels, False
    return labels, True


def key_of(wire: bytes) -> bytes:
    """The lowercase key of a wire name (names.py)."""
    return wire.translate(_LOWER)


# -- numbers, TTLs, strings ---------------------------------------------------------------


def parse_ttl(text: str) -> int | None:
    """A TTL as dns.ttl.from_text reads it (plain seconds or 1w2d3h4m5s)."""
    if isinstance(text, Quoted):
        return None
    if text.isdigit():
        value = int(text)
        return value if value <= MAX_TTL else None
    if not text or not text[0].isdigit():
        return None
    try:
        return dns.ttl.from_text(text)
    except dns.exception.DNSException:
        return None


def _uint(text: str, maximum: int) -> int | None:
    if isinstance(text, Quoted) or not text.isdigit():
        return None
    value = int(text)
    return value if value <= maximum else None


def unescape_text(text: str) -> bytes | None:
    """A character-string's bytes as dnspython's unescape_to_bytes gives them."""
    if "\\" not in text:
        return text.encode()
    out = bytearray()
    pos = 0
    end = len(text)
    while pos < end:
        char = text[pos]
        pos += 1
        if char != "\\":
            out += char.encode()
            continue
        escaped = _escape_at(text, pos)
        if escaped is None:
            return None
        octets, pos = escaped
        out += octets
    return bytes(out)


def _escape_at(text: str, pos: int) -> tuple[bytes, int] | None:
    """The octets of the escape after a backslash at pos-1 (\\DDD or \\X), and where it ends."""
    if pos >= len(text):
        return None
    char = text[pos]
    if not char.isdigit():
        return char.encode(), pos + 1
    digits = text[pos : pos + 3]
    if len(digits) != 3 or not digits.isdigit() or int(digits) > 255:
        return None
    return bytes([int(digits)]), pos + 3


def _hex(tokens: list[str]) -> bytes | None:
    """concatenate_remaining_identifiers() then unhexlify."""
    if not tokens or any(isinstance(t, Quoted) or "\\" in t for t in tokens):
        return None
    try:
        return binascii.unhexlify("".join(tokens))
    except (binascii.Error, ValueError):
        return None


def _base64(tokens: list[str]) -> bytes | None:
    if not tokens or any(isinstance(t, Quoted) or "\\" in t for t in tokens):
        return None
    try:
        return base64.b64decode("".join(tokens).encode(), validate=True)
    except (binascii.Error, ValueError):
        return None


_type_codes: dict[str, int | None] = {}
_algorithms: dict[str, int | None] = {}
_sigtimes: dict[str, int | None] = {}


def _type_code(text: str) -> int | None:
    """dns.rdatatype.from_text, remembered per spelling."""
    if isinstance(text, Quoted) or "\\" in text:
        return None
    code = _type_codes.get(text, -1)
    if code == -1:
        try:
            code = int(dns.rdatatype.from_text(text))
        except (dns.exception.DNSException, ValueError):
            code = None
        _type_codes[text] = code
    return code


def _algorithm(text: str) -> int | None:
    """dns.dnssectypes.Algorithm.from_text (mnemonic or number), remembered per spelling."""
    if isinstance(text, Quoted) or "\\" in text:
        return None
    code = _algorithms.get(text, -1)
    if code == -1:
        try:
            code = int(dns.dnssectypes.Algorithm.from_text(text))
        except (dns.exception.DNSException, ValueError):
            code = None
        if code is not None and not 0 <= code <= 255:
            code = None
        _algorithms[text] = code
    return code


def _sigtime(text: str) -> int | None:
    """An RRSIG time: seconds since the epoch, or YYYYMMDDHHmmSS (UTC)."""
    value = _sigtimes.get(text, -1)
    if value == -1:
        value = _compute_sigtime(text)
        _sigtimes[text] = value
    return value


def _compute_sigtime(text: str) -> int | None:
    import datetime

    if isinstance(text, Quoted) or not text.isdigit():
        return None
    if len(text) <= 10:
        value = int(text)
    elif len(text) == 14:
        try:
            moment = datetime.datetime(
                int(text[0:4]),
                int(text[4:6]),
                int(text[6:8]),
                int(text[8:10]),
                int(text[10:12]),
                int(text[12:14]),
                tzinfo=datetime.UTC,
            )
        except ValueError:
            return None
        value = int(moment.timestamp())
    else:
        return None
    return value if 0 <= value <= 0xFFFFFFFF else None


# -- RDATA converters: tokens after the type -> wire bytes, or None ----------------------

Converter = Callable[[list[str], bytes], "bytes | None"]


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def _a(tokens: list[str], origin: bytes) -> bytes | None:
    # dnspython wants exactly four decimal parts without leading zeros; so does the
    # pattern, and on that form inet_aton agrees.
    if len(tokens) != 1 or isinstance(tokens[0], Quoted) or _IPV4.fullmatch(tokens[0]) is None:
        return None
    return socket.inet_aton(tokens[0])


_IPV6_GROUPS = re.compile(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}")
_IPV6_SHORT = re.compile(
    r"((?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?)::((?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?)"
)


def _aaaa(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) != 1 or isinstance(tokens[0], Quoted):
        return None
    text = tokens[0]
    if _IPV6_GROUPS.fullmatch(text) is None:
        short = _IPV6_SHORT.fullmatch(text)
        if short is None:
            return None  # embedded IPv4, scopes and errors: dnspython decides
        head, tail = short.groups()
        groups = (head.count(":") + 1 if head else 0) + (tail.count(":") + 1 if tail else 0)
        if groups > 7:
            return None
    return socket.inet_pton(socket.AF_INET6, text)


def _one_name(tokens: list[str], origin: bytes) -> bytes | None:
    return name_wire(tokens[0], origin) if len(tokens) == 1 else None


def _mx(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) != 2:
        return None
    preference = _uint(tokens[0], 0xFFFF)
    exchange = name_wire(tokens[1], origin)
    if preference is None or exchange is None:
        return None
    return preference.to_bytes(2, "big") + exchange


def _srv(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) != 4:
        return None
    numbers = [_uint(t, 0xFFFF) for t in tokens[:3]]
    target = name_wire(tokens[3], origin)
    if None in numbers or target is None:
        return None
    return struct.pack(">HHH", *numbers) + target


def _txt(tokens: list[str], origin: bytes) -> bytes | None:
    if not tokens:
        return None
    out = []
    for token in tokens:
        value = unescape_text(token)
        if value is None or len(value) > 255:
            return None
        out.append(_LENGTH[len(value)] + value)
    return b"".join(out)


def _soa(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) != 7:
        return None
    mname = name_wire(tokens[0], origin)
    rname = name_wire(tokens[1], origin)
    serial = _uint(tokens[2], 0xFFFFFFFF)
    timers = [parse_ttl(t) for t in tokens[3:]]
    if mname is None or rname is None or serial is None or None in timers:
        return None
    return mname + rname + struct.pack(">IIIII", serial, *timers)


def soa_minimum(rdata: bytes) -> int:
    return int.from_bytes(rdata[-4:], "big")


_DS_DIGEST_LENGTHS = {1: 20, 2: 32, 3: 32, 4: 48}


def _ds(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) < 4:
        return None
    key_tag = _uint(tokens[0], 0xFFFF)
    algorithm = _algorithm(tokens[1])
    digest_type = _uint(tokens[2], 255)
    digest = _hex(tokens[3:])
    if key_tag is None or algorithm is None or digest_type is None or digest is None:
        return None
    expected = _DS_DIGEST_LENGTHS.get(digest_type)
    if digest_type == 0 or (expected is not None and len(digest) != expected):
        return None
    return struct.pack(">HBB", key_tag, algorithm, digest_type) + digest


def _dnskey(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) < 4:
        return None
    flags = _uint(tokens[0], 0xFFFF)
    protocol = _uint(tokens[1], 255)
    algorithm = _algorithm(tokens[2])
    key = _base64(tokens[3:])
    if flags is None or protocol is None or algorithm is None or key is None:
        return None
    return struct.pack(">HBB", flags, protocol, algorithm) + key


def _rrsig(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) < 9:
        return None
    covered = _type_code(tokens[0])
    algorithm = _algorithm(tokens[1])
    labels = _uint(tokens[2], 255)
    original_ttl = parse_ttl(tokens[3])
    expiration = _sigtime(tokens[4])
    inception = _sigtime(tokens[5])
    key_tag = _uint(tokens[6], 0xFFFF)
    signer = name_wire(tokens[7], origin)
    signature = _base64(tokens[8:])
    if (
        covered is None
        or algorithm is None
        or labels is None
        or original_ttl is None
        or expiration is None
        or inception is None
        or key_tag is None
        or signer is None
        or signature is None
    ):
        return None
    header = struct.pack(
        ">HBBIIIH", covered, algorithm, labels, original_ttl, expiration, inception, key_tag
    )
    return header + signer + signature


def type_bitmap(tokens: list[str]) -> bytes | None:
    """The RFC 4034 4.1.2 type bitmap of a list of type mnemonics."""
    codes = []
    for token in tokens:
        code = _type_code(token)
        if not code:  # unknown, or type 0 (an error in dnspython)
            return None
        codes.append(code)
    windows: dict[int, bytearray] = {}
    for code in codes:
        window = windows.setdefault(code >> 8, bytearray(32))
        window[(code & 0xFF) >> 3] |= 0x80 >> (code & 7)
    out = bytearray()
    for number in sorted(windows):
        bitmap = windows[number].rstrip(b"\x00")
        out.append(number)
        out.append(len(bitmap))
        out += bitmap
    return bytes(out)


def _nsec(tokens: list[str], origin: bytes) -> bytes | None:
    if not tokens:
        return None
    following = name_wire(tokens[0], origin)
    bitmap = type_bitmap(tokens[1:])
    if following is None or bitmap is None:
        return None
    return following + bitmap


def _salt(text: str) -> bytes | None:
    if isinstance(text, Quoted) or "\\" in text:
        return None
    if text == "-":
        return b""
    try:
        salt = binascii.unhexlify(text.encode("ascii"))
    except (binascii.Error, ValueError):
        return None
    return salt if len(salt) <= 255 else None


_BASE32HEX = re.compile(r"[0-9A-Va-v]+")


def _nsec3(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) < 5:
        return None
    algorithm = _uint(tokens[0], 255)
    flags = _uint(tokens[1], 255)
    iterations = _uint(tokens[2], 0xFFFF)
    salt = _salt(tokens[3])
    text = tokens[4]
    if isinstance(text, Quoted) or _BASE32HEX.fullmatch(text) is None:
        return None
    upper = text.upper().encode()
    try:
        hashed = base64.b32hexdecode(upper + b"=" * (-len(upper) % 8))
    except (binascii.Error, ValueError):
        return None
    if base64.b32hexencode(hashed).rstrip(b"=") != upper or len(hashed) > 255:
        return None
    bitmap = type_bitmap(tokens[5:])
    if algorithm is None or flags is None or iterations is None or salt is None or bitmap is None:
        return None
    return (
        struct.pack(">BBHB", algorithm, flags, iterations, len(salt))
        + salt
        + _LENGTH[len(hashed)]
        + hashed
        + bitmap
    )


def _nsec3param(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) != 4:
        return None
    algorithm = _uint(tokens[0], 255)
    flags = _uint(tokens[1], 255)
    iterations = _uint(tokens[2], 0xFFFF)
    salt = _salt(tokens[3])
    if algorithm is None or flags is None or iterations is None or salt is None:
        return None
    return struct.pack(">BBHB", algorithm, flags, iterations, len(salt)) + salt


def _caa(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) != 3:
        return None
    flags = _uint(tokens[0], 255)
    tag = unescape_text(tokens[1])
    value = unescape_text(tokens[2])
    if flags is None or tag is None or value is None:
        return None
    if not tag or len(tag) > 255 or not tag.isalnum():
        return None
    return _LENGTH[flags] + _LENGTH[len(tag)] + tag + value


_TLSA_LENGTHS = {1: 32, 2: 64}  # matching type -> digest length (RFC 6698 2.1.3)
_SSHFP_LENGTHS = {1: 20, 2: 32}  # fingerprint type -> digest length (RFC 4255, RFC 6594)


def _tlsa(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) < 4:
        return None
    fields = [_uint(t, 255) for t in tokens[:3]]
    data = _hex(tokens[3:])
    if None in fields or data is None:
        return None
    if len(data) != _TLSA_LENGTHS.get(fields[2], len(data)):  # type: ignore[arg-type]
        return None
    return bytes(fields) + data  # type: ignore[arg-type]


def _sshfp(tokens: list[str], origin: bytes) -> bytes | None:
    if len(tokens) < 3:
        return None
    fields = [_uint(t, 255) for t in tokens[:2]]
    data = _hex(tokens[2:])
    if None in fields or data is None:
        return None
    if len(data) != _SSHFP_LENGTHS.get(fields[1], len(data)):  # type: ignore[arg-type]
        return None
    return bytes(fields) + data  # type: ignore[arg-type]


CONVERTERS: dict[str, tuple[int, Converter]] = {
    "A": (1, _a),
    "NS": (2, _one_name),
    "CNAME": (5, _one_name),
    "SOA": (6, _soa),
    "PTR": (12, _one_name),
    "MX": (15, _mx),
    "TXT": (16, _txt),
    "AAAA": (28, _aaaa),
    "SRV": (33, _srv),
    "DNAME": (39, _one_name),
    "DS": (43, _ds),
    "SSHFP": (44, _sshfp),
    "RRSIG": (46, _rrsig),
    "NSEC": (47, _nsec),
    "DNSKEY": (48, _dnskey),
    "NSEC3": (50, _nsec3),
    "NSEC3PARAM": (51, _nsec3param),
    "TLSA": (52, _tlsa),
    "CAA": (257, _caa),
}
"""Types converted here, by their upper-case mnemonic; every other type goes to dnspython."""

SOA_TYPE = 6

NOT_IN_CLASSES = frozenset({"RESERVED0", "CH", "CHAOS", "HS", "HESIOD", "NONE", "ANY"})
"""Class mnemonics other than IN: dnspython reports them (a zone holds one class)."""


def rdata_wire(type_text: str, tokens: list[str], origin: bytes) -> tuple[int, bytes] | None:
    """(type code, wire RDATA) for a record of a converted type, or None."""
    found = CONVERTERS.get(type_text.upper())
    if found is None or (tokens and tokens[0] == "\\#"):
        return None  # other types, and RFC 3597 generic syntax, are dnspython's
    code, convert = found
    wire = convert(tokens, origin)
    return None if wire is None else (code, wire)
