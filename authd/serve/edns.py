"""EDNS options of a query, read in one pass, and the options we answer with.

One pass over the OPT RDATA, a few integer operations per option: the cost is linear in
the packet and nothing is kept but what the answer needs (a 65535-octet OPT of 16k empty
options costs one loop, no allocation per option). The first occurrence of each option
counts; repeats are ignored (RFC 7873 and RFC 7828 say nothing of repeats), except that
any malformed COOKIE makes the query a FORMERR (as knotd 3.2 answers it).

FORMERR, where the RFCs ask for it:
- a COOKIE whose length is not 8 or 16..40 (RFC 7873 5.2.2), wherever it is;
- an edns-tcp-keepalive with a TIMEOUT (length not 0) over TCP (RFC 7828 3.2.1); over
  UDP the option is ignored.
A non-empty ZONEVERSION is ignored (RFC 9660 3.2). An EXPIRE of any length asks for the
zone's expire time (RFC 7314 2: a query's is empty; Knot answers whatever the length).
Options we do not know are ignored (RFC 6891 6.1.2).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

NSID = 3
EXPIRE = 9
COOKIE = 10
KEEPALIVE = 11
EDE = 15
ZONEVERSION = 19

# Extended DNS Error codes (RFC 8914) we send.
EDE_STALE_ANSWER = 3
EDE_NOT_READY = 14
EDE_PROHIBITED = 18
EDE_NOT_AUTHORITATIVE = 20
EDE_NOT_SUPPORTED = 21
EDE_INVALID_DATA = 24

ZONEVERSION_SOA_SERIAL = 0

_OPTION_HEAD = struct.Struct(">HH")


class Options(NamedTuple):
    nsid: bool
    cookie: bytes | None  # the first COOKIE's value (length already checked)
    keepalive: int  # -1 absent, else the option's length (0 = a proper query option)
    zoneversion: bool  # an empty ZONEVERSION was asked
    formerr: bool  # a malformed COOKIE
    expire: bool = False  # EXPIRE was asked (RFC 7314)


NO_OPTIONS = Options(False, None, -1, False, False)


def parse(rdata: bytes) -> Options | None:
    """The options we act on, or None when the RDATA is not a sequence of options."""
    end = len(rdata)
    pos = 0
    nsid = zoneversion = formerr = expire = False
    cookie: bytes | None = None
    keepalive = -1
    while pos < end:
        if pos + 4 > end:
            return None
        code = (rdata[pos] << 8) | rdata[pos + 1]
        length = (rdata[pos + 2] << 8) | rdata[pos + 3]
        start = pos + 4
        pos = start + length
        if pos > end:
            return None
        if code == COOKIE:
            if length == 8 or 16 <= length <= 40:
                if cookie is None:
                    cookie = rdata[start:pos]
            else:
                formerr = True
        elif code == NSID:
            nsid = True
        elif code == KEEPALIVE:
            if keepalive < 0:
                keepalive = length
        elif code == ZONEVERSION:
            zoneversion = zoneversion or length == 0
        elif code == EXPIRE:
            expire = True
    return Options(nsid, cookie, keepalive, zoneversion, formerr, expire)


def option(code: int, value: bytes) -> bytes:
    return _OPTION_HEAD.pack(code, len(value)) + value


def ede(code: int, text: str = "") -> bytes:
    """An Extended DNS Error option (RFC 8914): INFO-CODE and optional EXTRA-TEXT."""
    return option(EDE, code.to_bytes(2) + text.encode())


def keepalive(idle_timeout: float) -> bytes:
    """edns-tcp-keepalive with the idle timeout in units of 100 ms (RFC 7828 3.1)."""
    return option(KEEPALIVE, min(0xFFFF, max(0, round(idle_timeout * 10))).to_bytes(2))


def zoneversion(origin_key: bytes, serial: int) -> bytes:
    """ZONEVERSION of type SOA-SERIAL (RFC 9660 2): the zone's label count (root not
    counted), the type, the serial."""
    labels = 0
    pos = 0
    while origin_key[pos]:
        labels += 1
        pos += origin_key[pos] + 1
    return option(ZONEVERSION, bytes((labels, ZONEVERSION_SOA_SERIAL)) + serial.to_bytes(4))


def expire(seconds: int) -> bytes:
    """EXPIRE with the seconds left before the zone expires (RFC 7314 3), capped to 32 bits."""
    return option(EXPIRE, min(0xFFFFFFFF, max(0, seconds)).to_bytes(4))


def expire_seconds(
    now: float, expires_at: float | None, signatures_until: float | None, soa_rdata: bytes
) -> int:
    """What EXPIRE says for a zone at `now`, as Knot computes it: a secondary zone
    (`expires_at` set) has until the earlier of its expire deadline and its earliest RRSIG
    expiration, 0 once past; a zone served from a file (a primary, no expire timer) says its
    SOA EXPIRE field (RFC 7314 3.1; Knot sends the same). O(1): two comparisons."""
    if expires_at is None:
        return int.from_bytes(soa_rdata[-8:-4])
    until = expires_at if signatures_until is None else min(expires_at, signatures_until)
    return max(0, int(until - now))


def asked_expire(edns_rdata: bytes | None) -> bool:
    """True when a query's OPT RDATA holds an EXPIRE option."""
    if not edns_rdata:
        return False
    options = parse(edns_rdata)
    return options is not None and options.expire


def with_opt(message: bytes, payload: int, options: bytes) -> bytes:
    """`message` (without OPT or TSIG) with an OPT holding `options` as its last additional
    record: EDNS version 0, no flags, `payload` as our UDP size."""
    arcount = ((message[10] << 8) | message[11]) + 1
    opt = b"\x00\x00\x29" + payload.to_bytes(2) + b"\x00\x00\x00\x00" + len(options).to_bytes(2)
    return message[:10] + arcount.to_bytes(2) + message[12:] + opt + options


def add_to_opt(response: bytes, opt_rdlen: int, extra: bytes) -> bytes:
    """`response`, whose last record is an OPT with `opt_rdlen` octets of RDATA, with the
    options `extra` appended to that OPT (no re-rendering: only its RDLENGTH changes)."""
    at = len(response) - opt_rdlen - 2
    return response[:at] + (opt_rdlen + len(extra)).to_bytes(2) + response[at + 2 :] + extra
