"""Response Rate Limiting (RRL) for UDP answers, in the manner of BIND, NSD and Knot DNS.

Why: a UDP query with a spoofed source makes us send the answer to a victim. RRL bounds
how many answers of one kind one client network receives per second, so authd cannot be
used as an amplifier, while real clients behind that network still get through: every
`slip`-th limited answer goes out truncated (TC=1), and a real resolver retries over TCP,
which cannot be spoofed and is never limited.

The model (decided on the response bytes, after the responder ran):
- key = (client network, response class, imputed name). The network is the source
  address cut to `ipv4-prefix` / `ipv6-prefix` bits. The class and name come from the
  header and at most two bytes past the question, never from a full parse:
    ANSWER    NOERROR with answers              name: qname + qtype (lowercased)
    REFERRAL  NOERROR, no answers, AA=0         name: the delegation (first authority owner)
    NODATA    NOERROR, no answers, AA=1         name: the zone (the SOA owner)
    NXDOMAIN  rcode 3                           name: the zone when the SOA comes first
    ERROR     any other rcode                   name: none
  Keying negative answers and referrals on the zone or delegation (as Knot and BIND do)
  means a random-subdomain flood cannot escape by varying the qname.
- a token bucket per key: `rate` tokens per second, holding at most one second's worth
  (kept as one float per key, the time the bucket is full again: GCRA).
- past the limit the response is dropped, except every `slip`-th limited one (counted per
  worker, not per bucket), which is sent as header + question (+ the OPT when it is the
  last record) with TC=1.
  slip = 0 drops them all; slip = 1 truncates them all.
- `exempt` networks are never limited, nor a query whose DNS Cookie verified (its source
  cannot be spoofed; as NSD and Knot): the responder names that query in
  `valid_cookie_query`, read only once the answer is over the limit.
- with several workers SO_REUSEPORT spreads a spoofed flood over them and each worker
  has its own table, so each worker allows rate / workers (the rate is divided, the
  state is not shared).
- the table is bounded (`table_size` buckets per worker). When full, buckets idle long
  enough to be full again are forgotten (forgetting them changes nothing); if that frees
  too little, the oldest-created eighth goes. A flood from random spoofed sources thus
  costs a fixed amount of memory, and evicting the victim's bucket needs `table_size`
  other keys for each `rate` extra answers.

Known limit: wildcard answers are keyed on the qname (the synthesized owner), so random
names under a wildcard each get their own bucket; BIND keys them on the wildcard.

With `rate = 0` (the default) `install()` returns the responder itself: RRL then costs
nothing on the hot path.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Protocol

from authd.clock import SYSTEM_CLOCK, Clock, SystemClock
from authd.config import RrlConfig

RespondFn = Callable[[bytes, bool, object], "bytes | None"]

ANSWER, REFERRAL, NODATA, NXDOMAIN, ERROR = range(5)
CLASS_NAMES = ("answer", "referral", "nodata", "nxdomain", "error")

DEFAULT_TABLE_SIZE = 65536

_AF_INET_RAW = socket.AF_INET.to_bytes(2, sys.byteorder)
_AF_INET6_RAW = socket.AF_INET6.to_bytes(2, sys.byteorder)
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_EMPTY_COUNTS = b"\x00\x00\x00\x00"  # ANCOUNT = NSCOUNT = 0
_OPT_TYPE = b"\x00\x29"
_MARKERS = tuple(bytes((0xC0 + cls,)) for cls in range(5))  # never a label length


class _Responder(Protocol):
    def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None: ...


def classify(response: bytes) -> tuple[int, bytes]:
    """(class, imputed name) of a response of at least 12 bytes; see the module docstring."""
    rcode = response[3] & 0x0F
    if rcode != 0 and rcode != 3:
        return ERROR, b""
    end = _question_end(response)
    if end < 0:
        return ERROR, b""
    if rcode == 0 and response[6:8] != b"\x00\x00":
        return ANSWER, response[12:end].translate(_LOWER)
    if rcode == 3:
        cls = NXDOMAIN
        if response[6:8] != b"\x00\x00":
            return cls, b""  # NXDOMAIN at the end of a CNAME chain: no zone at hand
    else:
        cls = NODATA if response[2] & 0x04 else REFERRAL
    return cls, _first_authority_owner(response, end)


def _question_end(response: bytes) -> int:
    """Where the question ends, as far as keying needs it: after the first zero byte past
    the header, plus QTYPE and QCLASS; -1 without one.

    This is the true end for every name without zero bytes inside its labels. For names
    with them it is still a function of the question bytes alone, so equal questions
    still share a bucket; a crafted name only lands in some other bucket of its class,
    and the authority owner check then finds no pointer into the question.
    """
    if response[4:6] == b"\x00\x00":
        return -1
    zero = response.find(0, 12)
    if zero < 0 or zero + 5 > len(response):
        return -1
    return zero + 5


def question_end(response: bytes) -> int:
    """Offset after the (single) question, 12 without one, -1 when it does not parse."""
    n = len(response)
    if response[4:6] == b"\x00\x00":
        return 12
    pos = 12
    while pos < n:
        length = response[pos]
        if length == 0:
            end = pos + 5
            return end if end <= n else -1
        if length > 63:
            return -1
        pos += length + 1
    return -1


def _first_authority_owner(response: bytes, qend: int) -> bytes:
    """The owner of the first authority record when it points into the question (our
    renderer compresses the zone's SOA and a delegation's NS owner that way), else b""."""
    if len(response) < qend + 2 or response[8:10] == b"\x00\x00":
        return b""
    high = response[qend]
    if high & 0xC0 != 0xC0:
        return b"\x00" if high == 0 else b""  # the root zone, or an uncompressed owner
    offset = ((high & 0x3F) << 8) | response[qend + 1]
    if not 12 <= offset < qend - 4:
        return b""
    return response[offset : qend - 4].translate(_LOWER)


def truncated(response: bytes) -> bytes:
    """The slip answer: the response's header with TC=1, its question, and its OPT if any."""
    end = question_end(response)
    if end < 0:
        end = 12
    opt = _trailing_opt(response, end)
    head = response[0:2] + bytes((response[2] | 0x02, response[3])) + response[4:6]
    return head + _EMPTY_COUNTS + (b"\x00\x01" if opt else b"\x00\x00") + response[12:end] + opt


def _trailing_opt(response: bytes, qend: int) -> bytes:
    """The OPT record of a response (b"" if none): the last record when we rendered it."""
    if response[10:12] == b"\x00\x00":
        return b""
    tail = response[-11:]
    if len(tail) == 11 and tail[0] == 0 and tail[1:3] == _OPT_TYPE and tail[9:11] == b"\x00\x00":
        return tail
    return _find_opt(response, qend)


def _find_opt(response: bytes, pos: int) -> bytes:
    """Walk every record after the question looking for the OPT (options present: rare)."""
    n = len(response)
    count = sum(int.from_bytes(response[i : i + 2]) for i in (6, 8, 10))
    for _ in range(count):
        start = pos
        while pos < n:  # skip the owner name
            length = response[pos]
            if length & 0xC0 == 0xC0:
                pos += 2
                break
            pos += length + 1
            if length == 0:
                break
        if pos + 10 > n:
            return b""
        rdlen = int.from_bytes(response[pos + 8 : pos + 10])
        end = pos + 10 + rdlen
        if response[pos : pos + 2] == _OPT_TYPE and response[start] == 0 and end <= n:
            return response[start:end]
        pos = end
    return b""


def client_network(client: object, v4_bits: int, v6_bits: int) -> int | None:
    """The client's address cut to its prefix, as an int (IPv6 ones negative), or None.

    `client` is the raw sockaddr bytes (batched UDP) or an address tuple (fallback path).
    """
    if isinstance(client, bytes):
        family = client[:2]
        if family == _AF_INET_RAW and len(client) >= 8:
            return int.from_bytes(client[4:8]) >> (32 - v4_bits)
        if family == _AF_INET6_RAW and len(client) >= 24:
            return ~(int.from_bytes(client[8:24]) >> (128 - v6_bits))
        return None
    address = client_ip(client)
    if address is None:
        return None
    if address.version == 4:
        return int(address) >> (32 - v4_bits)
    return ~(int(address) >> (128 - v6_bits))


def client_ip(client: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's full address from raw sockaddr bytes or an address tuple, or None."""
    try:
        if isinstance(client, bytes):
            if client[:2] == _AF_INET_RAW and len(client) >= 8:
                return ipaddress.IPv4Address(client[4:8])
            if client[:2] == _AF_INET6_RAW and len(client) >= 24:
                return ipaddress.IPv6Address(client[8:24])
            return None
        if isinstance(client, tuple) and client:
            host = str(client[0]).split("%", 1)[0]  # drop an IPv6 zone index
            return ipaddress.ip_address(host)
    except ValueError:
        return None
    return None


class RateLimiter:
    """Wraps a responder's respond(): UDP answers over the rate are dropped or slipped."""

    def __init__(
        self,
        inner_respond: RespondFn,
        config: RrlConfig,
        workers: int = 1,
        clock: Clock = SYSTEM_CLOCK,
        *,
        table_size: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        if config.rate <= 0:
            raise ValueError("RRL needs a positive rate; with rate 0 do not install it")
        self._inner = inner_respond
        # The system clock's method adds a Python call per answer: read time directly.
        self._monotonic = time.monotonic if isinstance(clock, SystemClock) else clock.monotonic
        self.rate = config.rate / max(1, workers)  # answers per second in this worker
        self.capacity = max(1.0, self.rate)  # burst: one second's worth, at least one answer
        # The bucket is kept as one float per key (GCRA): the time at which it would be
        # full again. An answer moves that time `_interval` on; it may go out while the
        # time stays within `_window` of now. Half an interval of slack absorbs float error.
        self._interval = 1.0 / self.rate
        self._window = (self.capacity + 0.5) * self._interval
        self.slip = config.slip
        self._v4_bits = config.ipv4_prefix
        # End of the network bytes in a raw sockaddr_in (0: prefix not whole bytes).
        self._v4_end = 4 + config.ipv4_prefix // 8 if config.ipv4_prefix % 8 == 0 else 0
        self._v6_bits = config.ipv6_prefix
        self._exempt = config.exempt
        self.table_size = max(8, table_size)
        self._buckets: dict[object, float] = {}  # key -> full-again time; insertion-ordered
        self.inner: _Responder | None = None  # set by install(), read by unwrap()
        self.limited = 0  # over the rate: dropped or slipped
        self.slipped = 0  # of those, sent truncated
        self.exempted = 0  # over the rate but exempt, sent anyway

    def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None:
        response = self._inner(query, tcp, client)
        if tcp or response is None or len(response) < 12:
            return response
        key: object
        if self._v4_end and isinstance(client, bytes) and client[:2] == _AF_INET_RAW:
            # The common case, inline: IPv4 from the batched path with a whole-byte prefix.
            # The key is one bytes object: network bytes + lowercased question, or network
            # bytes + a class marker (above any label length) + the imputed name.
            if response[3] & 0x0F == 0 and response[6:8] != b"\x00\x00":
                zero = response.find(0, 12)
                key = client[4 : self._v4_end] + response[12 : zero + 5].translate(_LOWER)
            else:
                cls, name = classify(response)
                key = client[4 : self._v4_end] + _MARKERS[cls] + name
        else:
            network = client_network(client, self._v4_bits, self._v6_bits)
            if network is None:
                return response
            key = (network, *classify(response))
        now = self._monotonic()
        buckets = self._buckets
        full_at = buckets.get(key)
        if full_at is None:
            if len(buckets) >= self.table_size:
                self._make_room(now)
            buckets[key] = now + self._interval
            return response
        if full_at < now:
            full_at = now
        full_at += self._interval
        if full_at - now <= self._window:
            buckets[key] = full_at
            return response
        return self._over_limit(query, response, client)

    def _over_limit(self, query: bytes, response: bytes, client: object) -> bytes | None:
        if getattr(self.inner, "valid_cookie_query", None) is query or (
            self._exempt and self._is_exempt(client)
        ):
            self.exempted += 1
            return response
        self.limited += 1
        if self.slip and self.limited % self.slip == 0:
            self.slipped += 1
            return truncated(response)
        return None

    def _is_exempt(self, client: object) -> bool:
        address = client_ip(client)
        return address is not None and any(address in network for network in self._exempt)

    def _make_room(self, now: float) -> None:
        """Forget buckets that are full again; if too few, the oldest-created eighth."""
        buckets = self._buckets
        stale = [key for key, full_at in buckets.items() if full_at <= now]
        for key in stale:
            del buckets[key]
        excess = len(buckets) - (self.table_size - self.table_size // 8)
        if excess > 0:
            for key in list(islice(buckets, excess)):
                del buckets[key]

    @property
    def buckets(self) -> int:
        return len(self._buckets)

    @property
    def wrapped(self) -> _Responder | None:
        """The responder inside (the name app.worker_counters unwraps layers by)."""
        return self.inner


def install(
    responder: _Responder,
    config: RrlConfig,
    workers: int,
    clock: Clock = SYSTEM_CLOCK,
) -> _Responder:
    """The responder to serve with: `responder` itself when RRL is off, else a RateLimiter."""
    if config.rate <= 0:
        return responder
    limiter = RateLimiter(responder.respond, config, workers, clock)
    limiter.inner = responder
    return limiter


def unwrap(responder: _Responder) -> _Responder:
    """The responder a RateLimiter wraps (for its own counters), or `responder` itself."""
    if isinstance(responder, RateLimiter) and responder.inner is not None:
        return responder.inner
    return responder


def with_rrl_counters(
    read: Callable[[_Responder], Mapping[str, int]],
) -> Callable[[_Responder], dict[str, int]]:
    """A worker counter reader for a possibly wrapped responder: `read` on the responder
    inside, plus the "rrl.*" counters when RRL is on."""

    def both(responder: _Responder) -> dict[str, int]:
        return {**read(unwrap(responder)), **rrl_counters(responder)}

    return both


def rrl_counters(responder: object) -> dict[str, int]:
    """The worker's RRL counters as flat "rrl.<action>" ints ({} when RRL is off).

    `responder` may be the RateLimiter or any layer around it that names the layer inside
    `wrapped` (the query log does)."""
    for _ in range(8):  # a handful of layers at most
        if isinstance(responder, RateLimiter):
            return {
                "rrl.limited": responder.limited,
                "rrl.slipped": responder.slipped,
                "rrl.exempted": responder.exempted,
            }
        responder = getattr(responder, "wrapped", None)
        if responder is None:
            break
    return {}
