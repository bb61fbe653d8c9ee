"""DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018, version 1).

A server cookie is 16 octets: version 1, three reserved octets (zero when we make
one), a 32-bit timestamp (seconds, serial arithmetic) and an 8-octet SipHash-2-4 of
client cookie | version | reserved | timestamp | client IP under a 16-octet secret.
Every worker and every authd host given the same secret makes and accepts the same
cookies; a second (previous) secret is accepted during a rollover, never used to make
new ones.

Verdicts for a query's COOKIE option (the length has been checked by edns.py):
  CLIENT_ONLY  8 octets: answer normally with a fresh server cookie (RFC 7873 5.2.3)
  VALID        a server cookie we made, at most an hour old and at most five minutes
               ahead: answer; echo it while under half an hour old, else a fresh one
  BAD          anything else: BADCOOKIE over UDP (5.2.2/5.4), a normal answer over TCP

Cost: one SipHash is ~10 us in pure Python (no installed library exposes SipHash).
A client sends the same cookie for up to half an hour, so verdicts and fresh cookies
are remembered per (cookie, client address) in a small bounded table: a repeat costs
a dict lookup. The table is cleared when full; that only costs recomputation.
"""

from __future__ import annotations

import secrets
import socket
import sys
from typing import Final

from authd.config import CookiesConfig

CLIENT_ONLY, VALID, BAD = 0, 1, 2

VERSION: Final = 1
MAX_AGE = 3600  # older server cookies are BAD (RFC 9018 4.3)
MAX_AHEAD = 300  # clock skew allowed between servers sharing a secret
REFRESH_AGE = 1800  # older valid ones are replaced by a fresh cookie in the answer
TABLE_SIZE = 8192

_M64 = 0xFFFFFFFFFFFFFFFF
_M32 = 0xFFFFFFFF
_AF_INET_RAW = socket.AF_INET.to_bytes(2, sys.byteorder)
_AF_INET6_RAW = socket.AF_INET6.to_bytes(2, sys.byteorder)


def siphash24(key: bytes, message: bytes) -> bytes:
    """SipHash-2-4 of message under a 16-octet key, as 8 octets (little-endian, as the
    reference implementation outputs it)."""
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:16], "little")
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    n = len(message)
    whole = n - n % 8
    # The last block: the remaining octets, zero-padded, with the length in the top octet.
    last = int.from_bytes(message[whole:], "little") | ((n & 0xFF) << 56)
    blocks = [int.from_bytes(message[i : i + 8], "little") for i in range(0, whole, 8)]
    blocks.append(last)
    for m in blocks:
        v3 ^= m
        for _ in range(2):
            v0 = (v0 + v1) & _M64
            v1 = ((v1 << 13) | (v1 >> 51)) & _M64
            v1 ^= v0
            v0 = ((v0 << 32) | (v0 >> 32)) & _M64
            v2 = (v2 + v3) & _M64
            v3 = ((v3 << 16) | (v3 >> 48)) & _M64
            v3 ^= v2
            v0 = (v0 + v3) & _M64
            v3 = ((v3 << 21) | (v3 >> 43)) & _M64
            v3 ^= v0
            v2 = (v2 + v1) & _M64
            v1 = ((v1 << 17) | (v1 >> 47)) & _M64
            v1 ^= v2
            v2 = ((v2 << 32) | (v2 >> 32)) & _M64
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(4):
        v0 = (v0 + v1) & _M64
        v1 = ((v1 << 13) | (v1 >> 51)) & _M64
        v1 ^= v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _M64
        v2 = (v2 + v3) & _M64
        v3 = ((v3 << 16) | (v3 >> 48)) & _M64
        v3 ^= v2
        v0 = (v0 + v3) & _M64
        v3 = ((v3 << 21) | (v3 >> 43)) & _M64
        v3 ^= v0
        v2 = (v2 + v1) & _M64
        v1 = ((v1 << 17) | (v1 >> 47)) & _M64
        v1 ^= v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _M64
    return (v0 ^ v1 ^ v2 ^ v3).to_bytes(8, "little")


def server_cookie(secret: bytes, client_cookie: bytes, client_ip: bytes, timestamp: int) -> bytes:
    """A version-1 server cookie made at `timestamp` (RFC 9018 4.2)."""
    head = b"\x01\x00\x00\x00" + (timestamp & 0xFFFFFFFF).to_bytes(4)
    return head + siphash24(secret, client_cookie + head + client_ip)


def matches(secret: bytes, client_cookie: bytes, server: bytes, client_ip: bytes) -> bool:
    """Whether `server` (16 octets, version 1) hashes right under `secret`; the reserved
    octets are hashed as received (RFC 9018 appendix A.3)."""
    return siphash24(secret, client_cookie + server[:8] + client_ip) == server[8:]


def age(timestamp: int, now: int) -> int:
    """now - timestamp in 32-bit serial arithmetic (negative: stamped in the future)."""
    diff = (now - timestamp) & 0xFFFFFFFF
    return diff - 0x100000000 if diff >= 0x80000000 else diff


def client_ip(client: object) -> bytes:
    """The client's address as 4 or 16 octets, from raw sockaddr bytes (batched UDP) or
    an address tuple; b"" when unknown (tests without a peer)."""
    if isinstance(client, bytes):
        if client[:2] == _AF_INET_RAW and len(client) >= 8:
            return client[4:8]
        if client[:2] == _AF_INET6_RAW and len(client) >= 24:
            return client[8:24]
        return b""
    if isinstance(client, tuple) and client:
        host = str(client[0]).split("%", 1)[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            return socket.inet_pton(family, host)
        except OSError:
            return b""
    return b""


class CookieJar:
    """Verdicts and fresh server cookies for one worker, under shared secrets."""

    __slots__ = ("_fresh", "_valid", "counts", "previous", "secret")

    def __init__(self, secret: bytes, previous: bytes | None = None) -> None:
        if len(secret) != 16 or (previous is not None and len(previous) != 16):
            raise ValueError("a cookie secret is 16 octets")
        self.secret = secret
        self.previous = previous
        # (client cookie, ip) -> (our server cookie, its timestamp), made with `secret`.
        self._fresh: dict[tuple[bytes, bytes], tuple[bytes, int]] = {}
        # (whole cookie, ip) -> the server cookie's timestamp, once it verified.
        self._valid: dict[tuple[bytes, bytes], int] = {}
        self.counts = [0, 0, 0]  # by verdict: client-only, valid, bad

    def check(self, cookie: bytes, ip: bytes, now: int) -> tuple[int, bytes]:
        """(verdict, the COOKIE option value to answer with) for a well-formed cookie."""
        # The common cases first, from the tables: a client we answered recently, or a
        # server cookie that verified and needs no renewal yet.
        if len(cookie) == 8:
            made = self._fresh.get((cookie, ip))
            if made is not None and (now - made[1]) & _M32 <= REFRESH_AGE // 2:
                self.counts[CLIENT_ONLY] += 1
                return CLIENT_ONLY, cookie + made[0]
        else:
            stamp = self._valid.get((cookie, ip))
            if stamp is not None:
                elapsed = (now - stamp) & _M32
                if elapsed <= REFRESH_AGE or elapsed >= _M32 + 1 - MAX_AHEAD:
                    self.counts[VALID] += 1
                    return VALID, cookie
        return self._check(cookie, ip, now)

    def _check(self, cookie: bytes, ip: bytes, now: int) -> tuple[int, bytes]:
        client = cookie[:8]
        if len(cookie) == 8:
            self.counts[CLIENT_ONLY] += 1
            return CLIENT_ONLY, client + self._fresh_for(client, ip, now)
        key = (cookie, ip)
        stamp = self._valid.get(key)
        if stamp is None and len(cookie) == 24 and cookie[8] == VERSION:
            server = cookie[8:]
            current = matches(self.secret, client, server, ip)
            if current or (
                self.previous is not None and matches(self.previous, client, server, ip)
            ):
                stamp = int.from_bytes(cookie[12:16])
                if current:
                    valid = self._valid
                    if len(valid) >= TABLE_SIZE:
                        valid.clear()
                    valid[key] = stamp
                elif -MAX_AHEAD <= age(stamp, now) <= MAX_AGE:
                    # Made with the previous secret: valid, and replaced in the answer.
                    self.counts[VALID] += 1
                    return VALID, client + self._fresh_for(client, ip, now)
        if stamp is None or not -MAX_AHEAD <= age(stamp, now) <= MAX_AGE:
            self.counts[BAD] += 1
            return BAD, client + self._fresh_for(client, ip, now)
        self.counts[VALID] += 1
        if age(stamp, now) > REFRESH_AGE:
            return VALID, client + self._fresh_for(client, ip, now)
        return VALID, cookie

    def _fresh_for(self, client: bytes, ip: bytes, now: int) -> bytes:
        key = (client, ip)
        made = self._fresh.get(key)
        if made is not None and 0 <= age(made[1], now) <= REFRESH_AGE // 2:
            return made[0]
        server = server_cookie(self.secret, client, ip, now)
        fresh = self._fresh
        if len(fresh) >= TABLE_SIZE:
            fresh.clear()
        fresh[key] = (server, now)
        return server


def random_secret() -> bytes:
    """A secret for a server without one configured: made once in the main process, before
    the workers fork, so that they all share it (cookies then die with a restart)."""
    return secrets.token_bytes(16)


def jar_for(config: CookiesConfig, unconfigured_secret: bytes) -> CookieJar | None:
    """The worker's CookieJar for [cookies] (None when cookies are off)."""
    if not config.enabled:
        return None
    return CookieJar(config.secret or unconfigured_secret, config.previous_secret)
