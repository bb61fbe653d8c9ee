"""RFC 1982 serial arithmetic, including the wrap at 2^32 and the undefined half-way point."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authd.xfr.serial import Order, add, compare, is_newer

serials = st.integers(min_value=0, max_value=2**32 - 1)


def test_plain_order() -> None:
    assert compare(2, 1) is Order.NEWER
    assert compare(1, 2) is Order.OLDER
    assert compare(7, 7) is Order.EQUAL


def test_wrap_around_at_2_32() -> None:
    assert is_newer(0, 2**32 - 1)
    assert is_newer(5, 2**32 - 10)
    assert not is_newer(2**32 - 1, 0)


def test_exactly_half_way_is_undefined_and_not_newer() -> None:
    assert compare(2**31, 0) is Order.UNDEFINED
    assert compare(0, 2**31) is Order.UNDEFINED
    assert not is_newer(2**31, 0)
    assert not is_newer(0, 2**31)


def test_just_under_half_way_is_newer() -> None:
    assert is_newer(2**31 - 1, 0)
    assert compare(2**31 + 1, 0) is Order.OLDER


@given(serials, serials)
def test_antisymmetric(a: int, b: int) -> None:
    forward, backward = compare(a, b), compare(b, a)
    mirror = {Order.NEWER: Order.OLDER, Order.OLDER: Order.NEWER}
    assert mirror.get(forward, forward) is backward


@given(serials, st.integers(min_value=1, max_value=2**31 - 1))
def test_addition_makes_newer(serial: int, increment: int) -> None:
    assert is_newer(add(serial, increment), serial)


def test_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        compare(2**32, 0)
    with pytest.raises(ValueError):
        add(1, 2**31)
