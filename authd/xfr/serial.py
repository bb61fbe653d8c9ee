"""SOA serial arithmetic (RFC 1982, SERIAL_BITS = 32).

Serials live on a circle of 2^32 values. `a` is newer than `b` when it lies less
than half the circle ahead of it. Exactly half way (2^31 apart) RFC 1982 leaves
the comparison undefined; authd treats that as "not newer" and lets the caller
log it, as Knot and NSD do.
"""

from __future__ import annotations

from enum import Enum

SERIAL_BITS = 32
_MODULUS = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)


class Order(Enum):
    """How a serial relates to another one."""

    EQUAL = "equal"
    NEWER = "newer"
    OLDER = "older"
    UNDEFINED = "undefined"  # exactly 2^31 apart


def compare(a: int, b: int) -> Order:
    """Where serial `a` stands relative to serial `b`."""
    if not (0 <= a < _MODULUS and 0 <= b < _MODULUS):
        raise ValueError(f"serials must be 32-bit unsigned integers, got {a} and {b}")
    distance = (a - b) % _MODULUS
    if distance == 0:
        return Order.EQUAL
    if distance == _HALF:
        return Order.UNDEFINED
    return Order.NEWER if distance < _HALF else Order.OLDER


def is_newer(a: int, b: int) -> bool:
    """True only when `a` is strictly newer than `b`; the undefined case is not newer."""
    return compare(a, b) is Order.NEWER


def add(serial: int, increment: int) -> int:
    """RFC 1982 3.1 serial addition; the increment must lie in [0, 2^31 - 1]."""
    if not 0 <= increment < _HALF:
        raise ValueError(f"a serial increment must be in [0, 2^31 - 1], got {increment}")
    return (serial + increment) % _MODULUS
