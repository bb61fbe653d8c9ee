"""Tests of zone/fastparse.py against dnspython, its reference.

The contract: for any input, a converter either declines (None) or returns exactly
the bytes dnspython produces; it never accepts what dnspython rejects. And it declines
only what the module leaves to dnspython on purpose (declined_on_purpose below): every
other spelling dnspython accepts must be converted, or the fast path is not doing its job.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authd.zone import fastparse

ORIGIN = dns.name.from_text("Example.COM.")
ORIGIN_WIRE = ORIGIN.to_wire() or b""


def reference(rtype: str, text: str) -> bytes | None:
    """dnspython's wire RDATA for `text`, or None when dnspython rejects it."""
    try:
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text, ORIGIN, False, None
        )
    except (dns.exception.DNSException, ValueError, TypeError):
        return None
    return rdata.to_wire()


def fast(rtype: str, text: str) -> bytes | None:
    """The fast converter on the same text, tokenized as the fast reader does."""
    tokens: list[str] = []
    depth = fastparse._tokenize_line(text, tokens, 0)
    if depth != 0:
        return None
    converted = fastparse.rdata_wire(rtype, tokens, ORIGIN_WIRE)
    return None if converted is None else converted[1]


# Fields that are names or character-strings, by type: the only places where the fast path
# reads backslash escapes (and, for character-strings, quoted tokens). None: every field.
NAME_FIELDS: dict[str, frozenset[int]] = {
    "NS": frozenset({0}),
    "CNAME": frozenset({0}),
    "PTR": frozenset({0}),
    "DNAME": frozenset({0}),
    "MX": frozenset({1}),
    "SRV": frozenset({3}),
    "SOA": frozenset({0, 1}),
    "RRSIG": frozenset({7}),
    "NSEC": frozenset({0}),
}
STRING_FIELDS: dict[str, frozenset[int] | None] = {"TXT": None, "CAA": frozenset({1, 2})}


def declined_on_purpose(rtype: str, text: str) -> str | None:
    """Why the fast path leaves `text` to dnspython by design (fastparse.py's docstrings),
    or None when it must convert whatever dnspython accepts."""
    if not text.isascii():
        return "non-ASCII text (IDNA, UTF-8) is dnspython's"
    tokens: list[str] = []
    if fastparse._tokenize_line(text, tokens, 0) != 0:
        return "not certainly tokenizable (open quote or parenthesis)"
    if tokens and tokens[0] == "\\#":
        return "RFC 3597 generic syntax"
    strings = STRING_FIELDS.get(rtype, frozenset())
    names = NAME_FIELDS.get(rtype, frozenset())
    for index, token in enumerate(tokens):
        is_string = strings is None or index in strings
        if isinstance(token, fastparse.Quoted) and not is_string:
            return "a quoted token where no character-string is expected"
        if "\\" in token and not is_string and index not in names:
            return "an escape in a number, type, algorithm or base16/32/64 field"
    if rtype == "AAAA" and any("." in t or "%" in t for t in tokens):
        return "IPv6 with embedded IPv4 or a scope"
    return None


def agrees(rtype: str, text: str) -> bytes | None:
    """The fast result equals dnspython's; a decline only where dnspython rejects the text
    or the fast path declines it on purpose."""
    expected = reference(rtype, text)
    got = fast(rtype, text)
    if got is None:
        assert expected is None or declined_on_purpose(rtype, text), (
            f"the fast path declined {rtype} {text!r}, which dnspython accepts"
        )
    else:
        assert got == expected, (rtype, text, got, expected)
    return got


# Valid spellings of every converted type: the fast path must take each of them.
ACCEPTED = [
    ("A", "192.0.2.1"),
    ("A", "0.0.0.0"),
    ("A", "255.255.255.255"),
    ("AAAA", "2001:db8::1"),
    ("AAAA", "::"),
    ("AAAA", "::1"),
    ("AAAA", "1::"),
    ("AAAA", "1:2:3:4:5:6:7::"),
    ("AAAA", "::2:3:4:5:6:7:8"),
    ("AAAA", "2001:DB8:0:0:0:0:0:FFFF"),
    ("NS", "ns1"),
    ("NS", "NS1.Example.ORG."),
    ("NS", "@"),
    ("CNAME", "a\\.b.c"),
    ("CNAME", "\\065\\.x"),
    ("CNAME", "*.wild"),
    ("PTR", "host.example.net."),
    ("DNAME", "target"),
    ("MX", "10 mail"),
    ("MX", "0 ."),
    ("SRV", "0 5 5060 sip.example.com."),
    ("TXT", '"hello world"'),
    ("TXT", 'unquoted "two" ""'),
    ("TXT", '"esc\\"aped\\;\\010\\255"'),
    ("TXT", '"a;b(c)d"'),
    ("SOA", "ns1 hostmaster 2026010101 3600 900 1209600 300"),
    ("SOA", "ns1 host.master. 1 1h 15m 2w 5M"),
    ("DS", "60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118"),
    ("DS", "20303 ECDSAP256SHA256 2 " + "ab" * 16 + " " + "CD" * 16),
    (
        "DNSKEY",
        "257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0d xCjjnopKl+GqJxpVXckHAeF+KkxLbxIL "
        + "fDLUT0rAK9iUzy1L53eKGQ==",
    ),
    ("RRSIG", "A 13 2 3600 20400101000000 20260101000000 20303 example.com. " + "Zm9v" * 16),
    ("RRSIG", "NSEC3 ECDSAP256SHA256 3 300 2208988800 1700000000 1 example.com. AAAA"),
    ("NSEC", "b.example.com. A NS SOA RRSIG NSEC DNSKEY TYPE65534 CAA"),
    ("NSEC", "next"),
    ("NSEC3", "1 0 0 - 0p9mhaveqvm6t7vbl5lop2u3t2rp3tom A RRSIG"),
    ("NSEC3", "1 1 10 AABBCCDD 0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM"),
    ("NSEC3PARAM", "1 0 0 -"),
    ("NSEC3PARAM", "1 0 10 aabbccdd"),
    ("CAA", '0 issue "letsencrypt.org"'),
    ("CAA", "128 iodef mailto:security@example.com"),
    ("TLSA", "3 1 1 " + "0a" * 32),
    ("SSHFP", "4 2 " + "12" * 32),
]

# Spellings dnspython rejects (or that need dnspython's care): the fast path declines them.
DECLINED = [
    ("A", "192.0.2.01"),
    ("A", "192.0.2"),
    ("A", "192.0.2.256"),
    ("A", "1.2.3.4 5"),
    ("A", '"192.0.2.1"'),
    ("AAAA", "1::2::3"),
    ("AAAA", "1:2:3:4:5:6:7:8::"),
    ("AAAA", "1:2:3:4::5:6:7:8"),
    ("AAAA", "::ffff:192.0.2.1"),
    ("AAAA", "fe80::1%eth0"),
    ("AAAA", "12345::"),
    ("NS", "a..b"),
    ("NS", "a" * 64),
    ("NS", ".".join(["a" * 60] * 5)),
    ("NS", "\\256x"),
    ("NS", "\\1x"),
    ("NS", "\\# 0"),
    ("MX", "65536 mail"),
    ("MX", "-1 mail"),
    ("MX", "10"),
    ("TXT", '"' + "x" * 256 + '"'),
    ("TXT", '"bad \\2 escape"'),
    ("SOA", "ns1 hostmaster 4294967296 3600 900 1209600 300"),
    ("SOA", "ns1 hostmaster 1 3600 900 1209600"),
    ("SOA", "ns1 hostmaster 1 1x 900 1209600 300"),
    ("DS", "60485 5 1 2BB183AF"),
    ("DS", "60485 5 0 2BB183AF"),
    ("DS", "60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A29211"),
    ("DNSKEY", "257 3 13 not-base64!"),
    ("DNSKEY", "257 3 13 QUJ"),
    ("DNSKEY", "257 3 BOGUSALG QUJD"),
    ("RRSIG", "A 13 2 3600 20400101000000 20260101000000 20303 example.com."),
    ("RRSIG", "A 13 256 3600 20400101000000 20260101000000 20303 example.com. QUJD"),
    ("RRSIG", "A 13 2 3600 20401301000000 20260101000000 20303 example.com. QUJD"),
    ("RRSIG", "A 13 2 3600 99999999999 20260101000000 20303 example.com. QUJD"),
    ("RRSIG", "BOGUS 13 2 3600 20400101000000 20260101000000 20303 example.com. QUJD"),
    ("NSEC", "next TYPE0"),
    ("NSEC", "next BOGUS"),
    ("NSEC3", "1 0 0 - 0p9mhaveqvm6t7vbl5lop2u3t2rp3tox A"),
    ("NSEC3", "1 0 0 - 0p9mhaveqvm6t7vbl5lop2u3t2rp3to= A"),
    ("NSEC3", "1 0 0 - 01 A"),
    ("NSEC3", "1 0 0 - 0 A"),
    ("NSEC3", "1 0 0 abc 0p9mhaveqvm6t7vbl5lop2u3t2rp3tom A"),
    ("NSEC3PARAM", "1 0 65536 -"),
    ("CAA", "0 is-sue x"),
    ("CAA", '0 "" x'),
    ("CAA", "256 issue x"),
    ("TLSA", "3 1 1 0"),
    ("TLSA", "3 1 1 abcd"),
    ("SSHFP", "4 2 abcd"),
    ("TLSA", "3 1 1"),
    ("SSHFP", "4 2 zz"),
]


@pytest.mark.parametrize(("rtype", "text"), ACCEPTED)
def test_common_spellings_are_converted_exactly(rtype: str, text: str) -> None:
    assert reference(rtype, text) is not None, "the sample must be valid for dnspython"
    assert agrees(rtype, text) is not None, "the fast path should take this spelling"


@pytest.mark.parametrize(("rtype", "text"), DECLINED)
def test_doubtful_spellings_are_declined(rtype: str, text: str) -> None:
    assert fast(rtype, text) is None
    agrees(rtype, text)


def test_every_converted_type_is_covered_by_the_samples() -> None:
    assert {rtype for rtype, _ in ACCEPTED} == set(fastparse.CONVERTERS)


def test_case_is_kept_in_rdata_names_and_lowered_in_keys() -> None:
    wire = fast("NS", "NS1.Example.ORG.")
    assert wire == b"\x03NS1\x07Example\x03ORG\x00"
    assert fastparse.key_of(wire) == b"\x03ns1\x07example\x03org\x00"
    assert fast("NS", "ns1") == b"\x03ns1" + ORIGIN_WIRE


label_chars = st.sampled_from([*"abcXYZ019-_*.\\@", "\\.", "\\065", "\\255", "\\300"])


@settings(max_examples=300, deadline=None)
@given(st.lists(label_chars, min_size=1, max_size=12).map("".join))
def test_names_agree_with_dnspython(text: str) -> None:
    agrees("NS", text)
    agrees("CNAME", text + ".")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789abcdefABCDEF:.%x")), max_size=42).map("".join))
def test_addresses_agree_with_dnspython(text: str) -> None:
    if text.strip():
        agrees("AAAA", text)
        agrees("A", text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(['"', "a", " ", "\\", "0", "9", ";", "(", ")", "é"]), max_size=16))
def test_text_agrees_with_dnspython(chars: list[str]) -> None:
    text = "".join(chars)
    if text.strip() and "\n" not in text:
        agrees("TXT", text)
        agrees("CAA", "0 tag " + text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["0", "1", "13", "255", "256", "65535", "65536", "1h", "-", "ab", "x"]),
        min_size=1,
        max_size=8,
    )
)
def test_numeric_fields_agree_with_dnspython(fields: list[str]) -> None:
    text = " ".join(fields)
    for rtype in ("MX", "SRV", "NSEC3PARAM", "TLSA", "SSHFP", "DS", "SOA"):
        agrees(rtype, text + " ab")


def test_ttl_spellings() -> None:
    assert fastparse.parse_ttl("3600") == 3600
    assert fastparse.parse_ttl("1w2d3h4m5s") == 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5
    assert fastparse.parse_ttl("4294967295") == 2**32 - 1
    assert fastparse.parse_ttl("4294967296") is None
    assert fastparse.parse_ttl("1x") is None
    assert fastparse.parse_ttl("h1") is None
    assert fastparse.parse_ttl(fastparse.Quoted("5")) is None


def test_entries_follow_parentheses_comments_and_quotes() -> None:
    lines = [
        "; only a comment",
        "",
        "www  IN  A 192.0.2.1 ; trailing",
        "@ IN SOA ns1 host ( 1 ; serial",
        "   2 3 4 5 )",
        '  IN TXT "a ( ; b" c',
        'x IN TXT "open',
    ]
    entries = list(fastparse.iter_entries(lines))
    assert entries[0] == (3, 3, False, ["www", "IN", "A", "192.0.2.1"], False)
    assert entries[1][:3] == (4, 5, False)
    assert entries[1][3] == ["@", "IN", "SOA", "ns1", "host", "1", "2", "3", "4", "5"]
    assert entries[2][:3] == (6, 6, True)
    assert entries[2][3] == ["IN", "TXT", "a ( ; b", "c"]
    assert isinstance(entries[2][3][2], fastparse.Quoted)
    # An unterminated quote: the rest of the file is dnspython's.
    assert entries[3] == (7, 7, False, None, True)


any_token = st.sampled_from(
    [
        "0", "1", "3", "8", "13", "255", "65535", "300", "1h", "20400101000000", "-",
        "ns1", "@", "a.b.", "ECDSAP256SHA256", "A", "NSEC", "TYPE65534", "TYPE0",
        "0p9mhaveqvm6t7vbl5lop2u3t2rp3tom", "ab", "AABB", "QUJD", "Zm9vYg==", "issue",
        '"txt"', '""', "\\#", "192.0.2.1", "::1", "x\\065",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(fastparse.CONVERTERS)), st.lists(any_token, max_size=10))
def test_any_tokens_agree_with_dnspython(rtype: str, tokens: list[str]) -> None:
    agrees(rtype, " ".join(tokens))


# -- every record dnspython prints must come back through the fast path --------------------

label = st.binary(min_size=1, max_size=8)
wire_name = st.lists(label, max_size=3).map(
    lambda labels: b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
)
u8, u16, u32 = (st.integers(0, 2**bits - 1) for bits in (8, 16, 32))
known_types = st.sampled_from([1, 2, 5, 6, 15, 16, 28, 33, 43, 46, 47, 48, 50, 99, 257, 65534])
bitmap = st.sets(known_types, max_size=6).map(
    lambda codes: fastparse.type_bitmap([dns.rdatatype.to_text(c) for c in sorted(codes)]) or b""
)
string = st.binary(max_size=40).map(lambda b: bytes([len(b)]) + b)


def _packed(fmt: str) -> Callable[..., bytes]:
    return lambda *values: struct.pack(fmt, *values)


def _digest(lengths: dict[int, int]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(sorted(lengths.items())).flatmap(
        lambda kind: st.binary(min_size=kind[1], max_size=kind[1]).map(
            lambda data: bytes([kind[0]]) + data
        )
    )


# Wire RDATA of each converted type, valid by construction (lengths within the RFCs' rules).
WIRE: dict[str, st.SearchStrategy[bytes]] = {
    "A": st.binary(min_size=4, max_size=4),
    "AAAA": st.binary(min_size=16, max_size=16),
    "NS": wire_name,
    "CNAME": wire_name,
    "PTR": wire_name,
    "DNAME": wire_name,
    "MX": st.tuples(st.builds(_packed(">H"), u16), wire_name).map(b"".join),
    "SRV": st.tuples(st.builds(_packed(">HHH"), u16, u16, u16), wire_name).map(b"".join),
    "TXT": st.lists(string, min_size=1, max_size=3).map(b"".join),
    "SOA": st.tuples(wire_name, wire_name, st.binary(min_size=20, max_size=20)).map(b"".join),
    "DS": st.tuples(
        st.builds(_packed(">HB"), u16, st.integers(1, 16)),
        _digest({1: 20, 2: 32, 4: 48}),
    ).map(b"".join),
    "SSHFP": st.tuples(st.builds(_packed(">B"), st.integers(1, 4)), _digest({1: 20, 2: 32})).map(
        b"".join
    ),
    "RRSIG": st.tuples(
        st.builds(_packed(">HBBIIIH"), known_types, st.integers(1, 16), u8, u32, u32, u32, u16),
        wire_name,
        st.binary(min_size=1, max_size=64),
    ).map(b"".join),
    "NSEC": st.tuples(wire_name, bitmap).map(b"".join),
    "DNSKEY": st.tuples(
        st.builds(_packed(">HBB"), u16, st.just(3), st.integers(1, 16)),
        st.binary(min_size=1, max_size=64),
    ).map(b"".join),
    "NSEC3": st.tuples(
        st.builds(_packed(">BBH"), st.just(1), u8, u16),
        st.binary(max_size=8).map(lambda b: bytes([len(b)]) + b),
        st.binary(min_size=20, max_size=20).map(lambda b: b"\x14" + b),
        bitmap,
    ).map(b"".join),
    "NSEC3PARAM": st.tuples(
        st.builds(_packed(">BBH"), st.just(1), u8, u16),
        st.binary(max_size=8).map(lambda b: bytes([len(b)]) + b),
    ).map(b"".join),
    "TLSA": st.tuples(st.builds(_packed(">BB"), u8, u8), _digest({0: 40, 1: 32, 2: 64})).map(
        b"".join
    ),
    "CAA": st.tuples(
        st.builds(_packed(">B"), u8),
        st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12).map(
            lambda tag: bytes([len(tag)]) + tag.encode()
        ),
        st.binary(max_size=40),
    ).map(b"".join),
}


def test_every_converted_type_has_a_wire_strategy() -> None:
    assert set(WIRE) == set(fastparse.CONVERTERS)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(sorted(WIRE)).flatmap(lambda rtype: st.tuples(st.just(rtype), WIRE[rtype])),
    st.booleans(),
)
def test_what_dnspython_prints_is_converted(case: tuple[str, bytes], relativize: bool) -> None:
    """A valid record in dnspython's own presentation form (escapes, relative names, dates)
    is converted to the same bytes unless it is one of the on-purpose declines."""
    rtype, wire = case
    rdata = dns.rdata.from_wire(
        dns.rdataclass.IN, dns.rdatatype.from_text(rtype), wire, 0, len(wire)
    )
    text = rdata.to_text(origin=ORIGIN, relativize=relativize)
    expected = rdata.to_wire()
    got = agrees(rtype, text)
    assert got == expected or declined_on_purpose(rtype, text), (rtype, text)


def test_a_parser_that_declines_everything_fails_the_agreement_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fastparse, "rdata_wire", lambda *args: None)
    for rtype, text in ACCEPTED:
        with pytest.raises(AssertionError, match="declined"):
            agrees(rtype, text)
    for prop in (test_what_dnspython_prints_is_converted, test_any_tokens_agree_with_dnspython):
        with pytest.raises(AssertionError, match="declined"):
            prop()
    # Declining on purpose is still allowed: the checks are not just "never None".
    assert agrees("AAAA", "::ffff:192.0.2.1") is None
