"""authd.serve.edns: one pass over the options, FORMERR cases, the options we send."""

from __future__ import annotations

import pytest

from authd.serve import edns
from authd.serve.edns import Options


def opt(code: int, value: bytes = b"") -> bytes:
    return edns.option(code, value)


def test_no_options_and_unknown_ones() -> None:
    assert edns.parse(b"") == edns.NO_OPTIONS
    assert edns.parse(opt(100, b"x" * 10) + opt(65535)) == edns.NO_OPTIONS


def test_structure_errors() -> None:
    assert edns.parse(b"\x00\x0a\x00") is None  # a header cut short
    assert edns.parse(opt(10, bytes(8))[:-1]) is None  # a value past the end


@pytest.mark.parametrize(
    ("length", "ok"),
    [
        (0, False),
        (7, False),
        (8, True),
        (9, False),
        (15, False),
        (16, True),
        (24, True),
        (40, True),
        (41, False),
    ],
)
def test_cookie_lengths(length: int, ok: bool) -> None:
    parsed = edns.parse(opt(edns.COOKIE, bytes(length)))
    assert parsed is not None
    assert parsed.formerr is not ok
    assert (parsed.cookie is not None) is ok


def test_first_occurrence_counts() -> None:
    first = bytes(range(8))
    parsed = edns.parse(opt(edns.COOKIE, first) + opt(edns.COOKIE, bytes(16)))
    assert parsed == Options(False, first, -1, False, False)
    parsed = edns.parse(opt(edns.COOKIE, first) + opt(edns.COOKIE, bytes(3)))
    assert parsed is not None and parsed.formerr  # a malformed one anywhere
    parsed = edns.parse(opt(edns.KEEPALIVE) + opt(edns.KEEPALIVE, b"\x00\x10"))
    assert parsed is not None and parsed.keepalive == 0
    parsed = edns.parse(opt(edns.KEEPALIVE, b"\x00\x10") + opt(edns.KEEPALIVE))
    assert parsed is not None and parsed.keepalive == 2


def test_zoneversion_only_when_empty() -> None:
    assert edns.parse(opt(edns.ZONEVERSION)) == Options(False, None, -1, True, False)
    assert edns.parse(opt(edns.ZONEVERSION, b"\x01")) == edns.NO_OPTIONS


def test_option_storm_fills_a_whole_opt() -> None:
    # 16383 empty options: the largest OPT RDATA a message can hold, read in one pass.
    storm = opt(100) * 16382 + opt(edns.NSID)
    assert len(storm) == 65532
    parsed = edns.parse(storm)
    assert parsed is not None and parsed.nsid
    one_big = opt(100, bytes(65531))
    assert edns.parse(one_big) == edns.NO_OPTIONS


def test_built_options() -> None:
    assert edns.ede(20) == b"\x00\x0f\x00\x02\x00\x14"
    assert edns.ede(3, "x") == b"\x00\x0f\x00\x03\x00\x03x"
    assert edns.keepalive(10.0) == b"\x00\x0b\x00\x02\x00\x64"  # 100 units of 100 ms
    assert edns.keepalive(1e9) == b"\x00\x0b\x00\x02\xff\xff"
    origin = b"\x07example\x04test\x00"
    assert edns.zoneversion(origin, 2026112201) == (
        b"\x00\x13\x00\x06\x02\x00" + (2026112201).to_bytes(4)
    )
    assert edns.zoneversion(b"\x00", 1)[4] == 0  # the root zone: no labels


def test_add_to_opt_changes_only_rdlength_and_appends() -> None:
    body = b"\x12\x34" + bytes(10)
    opt_rr = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x06" + edns.ede(20)
    out = edns.add_to_opt(body + opt_rr, 6, b"ABCD")
    assert out == body + opt_rr[:9] + b"\x00\x0a" + edns.ede(20) + b"ABCD"
    empty = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    assert edns.add_to_opt(body + empty, 0, b"AB") == body + empty[:9] + b"\x00\x02AB"
