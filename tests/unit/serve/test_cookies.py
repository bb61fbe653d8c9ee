"""authd.serve.cookies: SipHash-2-4 and RFC 9018 server cookies, verdicts by age and secret."""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

import pytest

from authd.config import CookiesConfig
from authd.serve import cookies
from authd.serve.cookies import BAD, CLIENT_ONLY, VALID, CookieJar

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
V4 = ipaddress.ip_address("198.51.100.100").packed
CLIENT = bytes.fromhex("2464c4abcf10c957")


def test_siphash_reference_vectors() -> None:
    # The reference implementation's vectors: key 00..0f, message 00..(n-1).
    key = bytes(range(16))
    assert cookies.siphash24(key, b"").hex() == "310e0edd47db6f72"
    assert cookies.siphash24(key, bytes(range(7))).hex() == "37d1018bf50002ab"
    assert cookies.siphash24(key, bytes(range(8))).hex() == "6224939a79f5f593"
    assert cookies.siphash24(key, bytes(range(15))).hex() == "e545be4961ca29a1"
    assert cookies.siphash24(key, bytes(range(16))).hex() == "db9bc2577fcc2a3f"


@pytest.mark.parametrize(
    ("secret", "client", "ip", "at", "want"),
    [
        # RFC 9018 appendix A.1, A.2, A.3 and A.4.
        (SECRET, CLIENT, "198.51.100.100", 1559731985, "010000005cf79f111f8130c3eee29480"),
        (SECRET, CLIENT, "198.51.100.100", 1559734385, "010000005cf7a871d4a564a1442aca77"),
        (
            SECRET,
            "fc93fc62807ddb86",
            "203.0.113.203",
            1559734700,
            "010000005cf7a9acf73a7810aca2381e",
        ),
        (
            bytes.fromhex("445536bcd2513298075a5d379663c962"),
            "22681ab97d52c298",
            "2001:db8:220:1:59de:d0f4:8769:82b8",
            1559741961,
            "010000005cf7c609a6bb79d16625507a",
        ),
    ],
)
def test_rfc9018_vectors(secret: bytes, client: bytes | str, ip: str, at: int, want: str) -> None:
    client_bytes = bytes.fromhex(client) if isinstance(client, str) else client
    packed = ipaddress.ip_address(ip).packed
    assert cookies.server_cookie(secret, client_bytes, packed, at).hex() == want


def test_rfc9018_a3_reserved_octets_are_hashed_as_received() -> None:
    cookie = bytes.fromhex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    ip = ipaddress.ip_address("203.0.113.203").packed
    assert cookies.matches(SECRET, cookie[:8], cookie[8:], ip)
    assert not cookies.matches(SECRET, cookie[:8], cookie[8:], V4)


def test_client_only_gets_a_fresh_cookie_that_then_verifies() -> None:
    jar = CookieJar(SECRET)
    verdict, value = jar.check(CLIENT, V4, 1559731985)
    assert verdict == CLIENT_ONLY
    assert value.hex() == "2464c4abcf10c957010000005cf79f111f8130c3eee29480"
    assert jar.check(value, V4, 1559731985 + 60) == (VALID, value)  # echoed: under 30 min
    assert jar.check(value, b"\xc0\x00\x02\x01", 1559731985 + 60)[0] == BAD  # another client
    assert jar.counts == [1, 1, 1]


def test_age_window() -> None:
    jar = CookieJar(SECRET)
    made = 1559731985
    cookie = CLIENT + cookies.server_cookie(SECRET, CLIENT, V4, made)
    verdict, value = jar.check(cookie, V4, made + 1801)  # valid, but renewed in the answer
    assert verdict == VALID and value != cookie and value[:8] == CLIENT
    assert int.from_bytes(value[12:16]) == made + 1801
    assert jar.check(cookie, V4, made + 3600)[0] == VALID
    assert jar.check(cookie, V4, made + 3601)[0] == BAD  # over an hour old
    assert jar.check(cookie, V4, made - 300)[0] == VALID  # five minutes of skew
    assert jar.check(cookie, V4, made - 301)[0] == BAD


def test_age_wraps_with_serial_arithmetic() -> None:
    assert cookies.age(0xFFFFFFF0, 0x10) == 0x20
    assert cookies.age(0x10, 0xFFFFFFF0) == -0x20


def test_rollover_previous_secret_verifies_and_is_replaced() -> None:
    new = bytes(range(16))
    now = 1559731985
    old_cookie = CLIENT + cookies.server_cookie(SECRET, CLIENT, V4, now)
    jar = CookieJar(new, previous=SECRET)
    verdict, value = jar.check(old_cookie, V4, now + 10)
    assert verdict == VALID
    assert value == CLIENT + cookies.server_cookie(new, CLIENT, V4, now + 10)
    assert CookieJar(new).check(old_cookie, V4, now + 10)[0] == BAD  # once the old one is gone


def test_foreign_and_unknown_version_cookies_are_bad() -> None:
    jar = CookieJar(SECRET)
    assert jar.check(CLIENT + bytes(8), V4, 1559731985)[0] == BAD  # 8-octet server cookie
    good = CLIENT + cookies.server_cookie(SECRET, CLIENT, V4, 1559731985)
    assert jar.check(CLIENT + b"\x02" + good[9:], V4, 1559731985)[0] == BAD
    assert jar.check(CLIENT + bytes(32), V4, 1559731985)[0] == BAD


def test_tables_are_bounded() -> None:
    jar = CookieJar(SECRET)
    for i in range(cookies.TABLE_SIZE + 10):
        jar.check(i.to_bytes(8), V4, 1559731985)
    assert len(jar._fresh) <= cookies.TABLE_SIZE


def test_client_ip_from_sockaddr_bytes_and_tuples() -> None:
    raw4 = socket.AF_INET.to_bytes(2, sys.byteorder) + struct.pack(">H", 53) + V4 + bytes(8)
    assert cookies.client_ip(raw4) == V4
    v6 = ipaddress.ip_address("2001:db8::1").packed
    raw6 = socket.AF_INET6.to_bytes(2, sys.byteorder) + bytes(6) + v6 + bytes(4)
    assert cookies.client_ip(raw6) == v6
    assert cookies.client_ip(("198.51.100.100", 5353)) == V4
    assert cookies.client_ip(("fe80::1%lo", 53, 0, 1)) == ipaddress.ip_address("fe80::1").packed
    assert cookies.client_ip(None) == b""


def test_jar_for_config() -> None:
    assert cookies.jar_for(CookiesConfig(enabled=False), SECRET) is None
    jar = cookies.jar_for(CookiesConfig(), SECRET)
    assert jar is not None and jar.secret == SECRET
    mine = bytes(16)
    jar = cookies.jar_for(CookiesConfig(secret=mine, previous_secret=SECRET), bytes(range(16)))
    assert jar is not None and (jar.secret, jar.previous) == (mine, SECRET)
    with pytest.raises(ValueError):
        CookieJar(b"short")
