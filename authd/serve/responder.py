"""Query bytes in, response bytes out: one code path for UDP and TCP.

The hot path (`respond`) recognises the common query shape on raw bytes (one
question, opcode QUERY, no records but an optional plain OPT), finds the zone
and returns a patched copy of a cached response. Anything else, and every cache
miss, goes through `wire.parse_query` and the full decision list, which follows
Knot DNS (see issue 2): malformed input, EDNS version, malformed options,
BADCOOKIE, TSIG, opcode, transfer qtypes, class (CHAOS), zone lookup, zone state,
and finally answer.lookup() rendered under the size limit and stored in the
zone's cache.

EDNS options (edns.py): a cached response holds only what every query of its
shape gets (NSID when asked, the zone's Extended DNS Error while it is served
stale). What varies per query (a COOKIE, TCP keepalive, ZONEVERSION, EXPIRE) is appended
to the cached bytes' OPT (edns.add_to_opt), never rendered into the cache; when
that would overflow the UDP limit, the answer is rendered again with the options
reserved. A query whose OPT holds one COOKIE and nothing else, what resolvers
send, is a raw cache hit too (`_cookie_hit`). Queries without options take
exactly the path they took before options were read.

Counters are plain ints and dicts, read by the metrics code; nothing here does
I/O except logging an internal error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from authd import wire
from authd.clock import SYSTEM_CLOCK, Clock, SystemClock
from authd.serve import cache as response_cache
from authd.serve import cookies as cookie_verdicts
from authd.serve import edns as edns_options
from authd.serve.cache import Entry
from authd.serve.cookies import CookieJar
from authd.serve.edns import NO_OPTIONS, Options
from authd.serve.render import compression_names, render, render_empty
from authd.serve.zonetable import PublishedZone, ZoneTable
from authd.zone.answer import (
    FORMERR,
    NOERROR,
    NOTAUTH,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    Result,
    RRsetOut,
    lookup,
    nxdomain_class,
)

log = logging.getLogger(__name__)

TXT = 16
IXFR, AXFR = 251, 252
BADVERS = 16  # extended rcode: 1 in the OPT, 0 in the header
BADKEY = 17  # TSIG error
BADCOOKIE = 23  # RFC 7873: 7 in the header, 1 in the OPT
EDE_NOT_AUTHORITATIVE = edns_options.EDE_NOT_AUTHORITATIVE  # RFC 8914, as Knot with REFUSED

_CLIENT_COOKIE_HEAD = b"\x00\x0a\x00\x08"  # COOKIE, 8 octets: a client cookie alone
_FULL_COOKIE_HEAD = b"\x00\x0a\x00\x18"  # COOKIE, 24 octets: with a version-1 server cookie
_KNOWN_OPCODES = (wire.OPCODE_QUERY, wire.OPCODE_NOTIFY, wire.OPCODE_UPDATE)
_EDE_PROHIBITED = edns_options.ede(edns_options.EDE_PROHIBITED)  # a refused NOTIFY ends so
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00"  # QDCOUNT=1, ANCOUNT=0, NSCOUNT=0, ARCOUNT hi
_TCP_LIMIT = 65535
_IDENTITY_NAMES = frozenset(
    {b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"},
)
_VERSION_NAMES = frozenset({b"\x07version\x04bind\x00", b"\x07version\x06server\x00"})

NotifyHandler = Callable[[bytes, wire.Query, object], "bytes | None"]
"""(query bytes, parsed query, client address) -> response bytes, or None to send nothing."""


class XfrHandler(Protocol):
    """Outbound AXFR/IXFR (serve/xfr_edge.py): the answer, a xfrout.MessageStream over TCP."""

    def __call__(
        self, data: bytes, query: wire.Query, tcp: bool, client: object
    ) -> bytes | None: ...

    def counters(self) -> dict[str, int]: ...

    def signed_query(
        self,
        data: bytes,
        query: wire.Query,
        answer: Callable[[bytes, str | None], bytes | None],
    ) -> bytes | None:
        """A TSIG-signed query (a downstream's SOA check): verified, `answer`ed unsigned
        (with the name of the key that signed it), then signed with the same key (RFC 8945
        5.3)."""
        ...

    def allows_query(self, origin: bytes, client: object, key: str | None) -> bool:
        """Whether provide-xfr lets `client` (signed with `key`, None: unsigned) read the
        zone `origin`: the only clients a catalog zone answers."""
        ...


def txt_rdata(text: str) -> bytes:
    """TXT RDATA holding text, split into character-strings of at most 255 octets."""
    raw = text.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return b"".join(bytes((len(chunk),)) + chunk for chunk in chunks)


def tsig_error_record(tsig: wire.Tsig, error: int) -> bytes:
    """An unsigned TSIG RR reporting `error` (RFC 8945 5.3.2), as Knot sends for BADKEY."""
    rdata = tsig.rdata
    alg_len = wire.question_name_end(rdata, 0)
    fixed = rdata[alg_len:]
    time_fudge = fixed[:8]
    mac_size = (fixed[8] << 8) | fixed[9]
    original_id = fixed[10 + mac_size : 12 + mac_size]
    out = rdata[:alg_len] + time_fudge + b"\x00\x00" + original_id + error.to_bytes(2) + b"\x00\x00"
    return tsig.key_name + b"\x00\xfa\x00\xff\x00\x00\x00\x00" + len(out).to_bytes(2) + out


class Responder:
    def __init__(
        self,
        zones: ZoneTable,
        *,
        identity: str,
        version: str,
        nsid: bytes,
        udp_payload: int,
        cookies: CookieJar | None = None,
        tcp_idle_timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.zones = zones
        self.identity = txt_rdata(identity) if identity else None
        self.version = txt_rdata(version) if version else None
        self.nsid = nsid
        self.udp_payload = max(512, min(udp_payload, 65535))
        self.notify_handler: NotifyHandler | None = None
        self.cookies = cookies
        self._keepalive = edns_options.keepalive(tcp_idle_timeout)
        # A method call per cookie query is measurable: read the system clock directly.
        self._now = time.time if isinstance(clock, SystemClock) else clock.now
        # The last UDP query whose server cookie verified (RRL exempts it: rrl.py).
        self.valid_cookie_query: bytes | None = None
        self._extra = b""  # per-query options of the query on the full path
        self._cookie_memo: tuple[bytes, int, int, bytes] = (b"", -1, -1, b"")
        self.xfr_handler: XfrHandler | None = None
        # Catalog zones (RFC 9432 3: not for resolution): REFUSED, EDE 20, unless
        # provide-xfr allows the client (a downstream's SOA check); never cached.
        self.catalogs: frozenset[bytes] = frozenset()
        # Counters (read by metrics): index = rcode incl. extended ones (BADVERS=16).
        self.rcodes = [0] * 32
        self.qtypes: dict[int, int] = {}
        self.zone_queries: dict[bytes, int] = {}
        self.udp_queries = 0
        self.tcp_queries = 0
        self.truncated = 0
        self.dropped = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.internal_errors = 0
        self.ede: dict[int, int] = {}  # Extended DNS Errors sent, by INFO-CODE

    # -- hot path -----------------------------------------------------------------

    def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None:
        """The response to one query message, or None when nothing must be sent."""
        if tcp:
            self.tcp_queries += 1
        else:
            self.udp_queries += 1
        n = len(query)
        if n >= 17 and not query[2] & 0xF8 and query[4:11] == _PLAIN_COUNTS:
            # A plain QUERY: guess where the name ends (type and class, plus an OPT without
            # options) and look the raw bytes up; see cache.py for why a hit needs no parse.
            shape = query[11]
            if shape == response_cache.PLAIN:
                split = n - 4
            elif shape == response_cache.EDNS and n >= 28:
                split = n - 15
            else:
                return self._respond_slow(query, tcp, client)
            qkey = query[12:split].translate(_LOWER)
            try:
                zone = self.zones.find(qkey)
            except IndexError:  # the guess cut a label: not a plain shape after all
                zone = None
            if zone is not None:
                cache = zone.cache
                key = qkey + query[split:]
                entry = (cache.tcp if tcp else cache.udp)[shape].get(key)
                if entry is None:
                    entry = (cache.tcp_negative if tcp else cache.udp_negative)[shape].get(key)
                if entry is not None:
                    self.cache_hits += 1
                    self.rcodes[entry.rcode] += 1
                    qtype = (query[split] << 8) | query[split + 1]
                    qtypes = self.qtypes
                    qtypes[qtype] = qtypes.get(qtype, 0) + 1
                    zone_queries = self.zone_queries
                    zone_queries[zone.origin] = zone_queries.get(zone.origin, 0) + 1
                    if entry.truncated:
                        self.truncated += 1
                    if entry.ede:
                        self.ede[entry.ede] = self.ede.get(entry.ede, 0) + 1
                    return (
                        query[:2]
                        + (entry.head_rd if query[2] & 0x01 else entry.head)
                        + query[12 : split + 4]
                        + entry.tail
                    )
            if shape == response_cache.EDNS and self.cookies is not None:
                response = self._cookie_hit(query, n, tcp, client)
                if response is not None:
                    return response
            response = self._plain_miss(query, n, tcp, client)
            if response is not None:
                return response
        return self._respond_slow(query, tcp, client)

    def _cookie_hit(self, query: bytes, n: int, tcp: bool, client: object) -> bytes | None:
        """A cache hit for a query whose OPT holds one COOKIE and nothing else (what
        resolvers send), found without a parse: guess where the name ends from the cookie's
        length, as respond() does, and look up the option-less key. The key only matches
        bytes stored from a query that passed the full parser; the OPT's RDLENGTH and the
        option's header are checked here, so a hit is as good as a parse."""
        if query[n - 12 : n - 8] == _CLIENT_COOKIE_HEAD and query[n - 14 : n - 12] == b"\x00\x0c":
            cookie = query[n - 8 :]
            split = n - 27
        elif query[n - 28 : n - 24] == _FULL_COOKIE_HEAD and query[n - 30 : n - 28] == b"\x00\x1c":
            cookie = query[n - 24 :]
            split = n - 43
        else:
            return None
        if split < 13:
            return None
        qkey = query[12:split].translate(_LOWER)
        try:
            zone = self.zones.find(qkey)
        except IndexError:
            return None
        if zone is None:
            return None
        cache = zone.cache
        key = qkey + query[split : split + 13] + b"\x00\x00"
        maps = cache.tcp if tcp else cache.udp
        entry = maps[response_cache.EDNS].get(key)
        if entry is None:
            entry = (cache.tcp_negative if tcp else cache.udp_negative)[response_cache.EDNS].get(
                key
            )
            if entry is None:
                return None
        opt_rdlen = entry.opt_rdlen
        qend = split + 4
        if opt_rdlen < 0 or qend + len(entry.tail) + 28 > (
            _TCP_LIMIT if tcp else _udp_limit(query, qend, self.udp_payload)
        ):
            return None
        verdict, value = self._cookie_verdict(query, cookie, client)
        if verdict == cookie_verdicts.BAD and not tcp:
            return None  # BADCOOKIE, from the full path
        if verdict == cookie_verdicts.VALID and not tcp:
            self.valid_cookie_query = query
        self.cache_hits += 1
        response = self._serve(query, qend, zone, entry)
        at = len(response) - opt_rdlen - 2
        return (
            response[:at]
            + (opt_rdlen + 28).to_bytes(2)
            + response[at + 2 :]
            + b"\x00\x0a\x00\x18"
            + value
        )

    def _cookie_verdict(self, query: bytes, cookie: bytes, client: object) -> tuple[int, bytes]:
        """The cookie's verdict and answer value, checked (and counted) once per query even
        when a faster path gives the query up to a slower one."""
        memo = self._cookie_memo
        seq = self.udp_queries + self.tcp_queries  # this query's number: respond() counts it
        if memo[0] is query and memo[1] == seq:
            return memo[2], memo[3]
        assert self.cookies is not None
        verdict, value = self.cookies.check(
            cookie, cookie_verdicts.client_ip(client), int(self._now())
        )
        self._cookie_memo = (query, seq, verdict, value)
        return verdict, value

    def _plain_miss(self, query: bytes, n: int, tcp: bool, client: object) -> bytes | None:
        """A plain QUERY the raw lookup missed: an OPT with options (normalised key), or a
        negative answer shared by its class; None leaves it to the full path.

        Options that vary per query (COOKIE, keepalive, ZONEVERSION, EXPIRE) are appended to the
        cached bytes (edns.add_to_opt), never rendered into them."""
        parsed = _parse_plain(query, n)
        if parsed is None:
            return None
        name_end, shape, key_tail, options = parsed
        qend = name_end + 4
        qkey = query[12:name_end].translate(_LOWER)
        zone = self.zones.find(qkey)
        if zone is None or zone.origin in self.catalogs:
            return None
        extra = b""
        if options is not NO_OPTIONS:
            if options.formerr or (tcp and options.keepalive > 0):
                return None  # FORMERR, from the full path
            if options.cookie is not None and self.cookies is not None:
                verdict, value = self._cookie_verdict(query, options.cookie, client)
                if verdict == cookie_verdicts.BAD and not tcp:
                    return None  # BADCOOKIE, from the full path
                if verdict == cookie_verdicts.VALID and not tcp:
                    self.valid_cookie_query = query
                extra = edns_options.option(edns_options.COOKIE, value)
            if tcp and options.keepalive == 0:
                extra += self._keepalive
        key = qkey + key_tail
        cache = zone.cache
        entry: Entry | None = None
        if len(key_tail) != n - name_end:  # options present: answered as without them
            entry = cache.maps(tcp)[shape].get(key) or cache.negative_maps(tcp)[shape].get(key)
            if entry is not None:
                self.cache_hits += 1
        if entry is None:
            entry = self._negative_for(query, qend, qkey, zone, shape, key_tail, tcp)
            if entry is None:
                return None
        if options.zoneversion and entry.head[0] & 0x04 and zone.snapshot is not None:
            extra += edns_options.zoneversion(zone.origin, zone.snapshot.serial)
        if options.expire and zone.snapshot is not None:
            extra += self._expire(zone)
        if not extra:
            return self._serve(query, qend, zone, entry)
        if entry.opt_rdlen < 0:
            return None
        limit = _TCP_LIMIT if tcp else _udp_limit(query, qend, self.udp_payload)
        if qend + len(entry.tail) + len(extra) > limit:
            return None  # rendered again with the options reserved, on the full path
        return edns_options.add_to_opt(
            self._serve(query, qend, zone, entry), entry.opt_rdlen, extra
        )

    def _negative_for(
        self,
        query: bytes,
        qend: int,
        qkey: bytes,
        zone: PublishedZone,
        shape: int,
        key_tail: bytes,
        tcp: bool,
    ) -> Entry | None:
        """The NXDOMAIN entry of a plain query from its class's rendering, or None."""
        snapshot = zone.snapshot
        name_end = qend - 4
        qtype = (query[name_end] << 8) | query[name_end + 1]
        qclass = (query[name_end + 2] << 8) | query[name_end + 3]
        if (
            snapshot is None
            or zone.servfail
            or qclass not in (wire.CLASS_IN, wire.CLASS_ANY)
            or qtype in (0, AXFR, IXFR)
        ):
            return None
        do = shape != response_cache.PLAIN and bool(query[qend + 7] & 0x80)
        klass = nxdomain_class(snapshot, qkey, do)
        if klass is None:
            return None
        entry = self._negative(query, qend, qkey, zone, klass, (tcp, shape, key_tail[4:]))
        if entry is None:
            return None
        if entry.rcode == NXDOMAIN:  # never a SERVFAIL from a failed lookup
            zone.cache.put_negative_name(tcp, shape, qkey + key_tail, entry)
        return entry

    def _negative(
        self,
        query: bytes,
        qend: int,
        qkey: bytes,
        zone: PublishedZone,
        klass: tuple[object, ...],
        variant: tuple[bool, int, bytes],
    ) -> Entry | None:
        """The NXDOMAIN answer of qkey from the rendering shared by its class.

        render.compression_names says which suffixes of the name matter to the bytes
        after the question; with the name's length they complete the key.
        """
        cache = zone.cache
        shape_names = cache.shape_of(klass)
        built: Entry | None = None
        if shape_names is None:
            built, result = self._build(query, qend, zone, variant[0])
            if built is None:
                return None
            shape_names = compression_names(result)
            cache.put_shape(klass, shape_names)
        matched = []
        pos = 0
        while qkey[pos]:
            suffix = qkey[pos:]
            if suffix in shape_names:
                matched.append(suffix)
            pos += qkey[pos] + 1
        key = (klass, variant, len(qkey), tuple(matched))
        entry = cache.negative.get(key)
        if entry is None:
            if built is None:
                built, _ = self._build(query, qend, zone, variant[0])
                if built is None:
                    return None
            entry = built
            self.cache_misses += 1
            if entry.rcode == NXDOMAIN:  # never keep a SERVFAIL from a failed lookup
                cache.put_negative(key, entry)
        else:
            self.cache_hits += 1
        return entry

    def _build(
        self, query: bytes, qend: int, zone: PublishedZone, tcp: bool
    ) -> tuple[Entry | None, Result]:
        parsed = wire.parse_query(query)
        if parsed is None:  # cannot happen for a plain shape; stay on the safe side
            return None, Result()
        response, result, opt_rdlen = self._lookup_render(query, parsed, zone, tcp)
        return response_cache.make_entry(response, qend, opt_rdlen, self._zone_ede(zone)), result

    def _serve(self, query: bytes, qend: int, zone: PublishedZone, entry: Entry) -> bytes:
        """Count a response taken from the cache and patch it for this query."""
        self.rcodes[entry.rcode] += 1
        qtype = (query[qend - 4] << 8) | query[qend - 3]
        self.qtypes[qtype] = self.qtypes.get(qtype, 0) + 1
        self.zone_queries[zone.origin] = self.zone_queries.get(zone.origin, 0) + 1
        if entry.truncated:
            self.truncated += 1
        if entry.ede:
            self.ede[entry.ede] = self.ede.get(entry.ede, 0) + 1
        return response_cache.patch(entry, query, qend)

    # -- everything else ------------------------------------------------------------

    def _respond_slow(self, data: bytes, tcp: bool, client: object) -> bytes | None:
        query = wire.parse_query(data)
        if query is None:
            self.dropped += 1
            return None
        if query.qdcount:
            self.qtypes[query.qtype] = self.qtypes.get(query.qtype, 0) + 1
        self._extra = b""
        response, rcode = self._answer(data, query, tcp, client)
        if response is None:
            self.dropped += 1
            return None
        self.rcodes[rcode] += 1
        if response[2] & 0x02:
            self.truncated += 1
        return response

    def _opt(
        self,
        edns: wire.Edns | None,
        ext_rcode: int = 0,
        ede: int | None = None,
        zone: PublishedZone | None = None,
    ) -> bytes:
        """Our OPT record for a query with `edns` (b"" without EDNS): NSID when asked, an
        EDE (`ede`, or the zone's own when it is served stale), then `self._extra`."""
        if edns is None:
            return b""
        return wire.opt_record(
            self.udp_payload, ext_rcode, edns.do, self._base_options(edns, zone, ede) + self._extra
        )

    def _base_options(
        self, edns: wire.Edns, zone: PublishedZone | None, ede: int | None = None
    ) -> bytes:
        """The options every answer to this query shape carries (what a cache entry holds)."""
        options = b""
        if edns.nsid and self.nsid:
            options += wire.edns_option(wire.OPTION_NSID, self.nsid)
        if ede is not None:
            self.ede[ede] = self.ede.get(ede, 0) + 1
            options += edns_options.ede(ede)
        elif zone is not None and zone.expired_at is not None:
            options += edns_options.ede(edns_options.EDE_STALE_ANSWER, _expired_text(zone))
        return options

    @staticmethod
    def _zone_ede(zone: PublishedZone) -> int:
        """The EDE code answers from `zone` carry (0: none)."""
        return edns_options.EDE_STALE_ANSWER if zone.expired_at is not None else 0

    def _empty(
        self, data: bytes, query: wire.Query, rcode: int, ede: int | None = None
    ) -> tuple[bytes, int]:
        opt = self._opt(query.edns, ext_rcode=rcode >> 4, ede=ede)
        question = data[12 : query.question_end]
        response = render_empty(query.id, query.flags, question, rcode, opt, 1 if opt else 0)
        return response, rcode

    def _query_options(
        self, data: bytes, query: wire.Query, tcp: bool, client: object
    ) -> tuple[Options, int]:
        """The query's options, and its cookie verdict (-1: no cookie looked at); sets
        self._extra to the per-query options of the answer."""
        edns = query.edns
        if edns is None or not edns.options:
            return NO_OPTIONS, -1
        options = edns_options.parse(edns.options) or NO_OPTIONS
        verdict = -1
        extra = b""
        if options.cookie is not None and self.cookies is not None:
            verdict, value = self._cookie_verdict(data, options.cookie, client)
            if verdict == cookie_verdicts.VALID and not tcp:
                self.valid_cookie_query = data
            extra = edns_options.option(edns_options.COOKIE, value)
        if tcp and options.keepalive == 0:
            extra += self._keepalive
        self._extra = extra
        return options, verdict

    def _answer(
        self, data: bytes, query: wire.Query, tcp: bool, client: object, key: str | None = None
    ) -> tuple[bytes | None, int]:
        """The answer and its rcode; `key`: the TSIG key that signed the query (already
        verified and removed), None when unsigned."""
        edns = query.edns
        if query.formerr:
            # RFC 1035 4.1.1: an opcode we do not implement is NOTIMP before anything else
            # is judged (as Knot answers `dig +opcode=15 +header-only`).
            if query.opcode not in _KNOWN_OPCODES:
                return self._empty(data, query, NOTIMP, edns_options.EDE_NOT_SUPPORTED)
            return self._empty(data, query, FORMERR)
        question = data[12 : query.question_end]
        if edns is not None and edns.version != 0:
            # BADVERS = 16: 0 in the header, 1 in the OPT's extended rcode (RFC 6891 6.1.3).
            opt = self._opt(edns, ext_rcode=BADVERS >> 4)  # NSID too, when asked (as Knot)
            return render_empty(query.id, query.flags, question, 0, opt, 1), BADVERS
        options, verdict = self._query_options(data, query, tcp, client)
        if options.formerr or (tcp and options.keepalive > 0):
            self._extra = b""
            return self._empty(data, query, FORMERR)
        if verdict == cookie_verdicts.BAD and not tcp:
            # A fresh cookie and nothing else (RFC 7873 5.2.2, 5.4).
            return self._empty(data, query, BADCOOKIE)
        opcode = query.opcode
        if opcode == wire.OPCODE_NOTIFY and self.notify_handler is not None:
            response = self.notify_handler(data, query, client)
            if response is not None and response.endswith(_EDE_PROHIBITED):
                self.ede[edns_options.EDE_PROHIBITED] = self.ede.get(18, 0) + 1
            return response, (response[3] & 0xF) if response else 0
        if (
            self.xfr_handler is not None
            and opcode == wire.OPCODE_QUERY
            and query.qtype in (AXFR, IXFR)
            and query.qclass == wire.CLASS_IN
        ):
            response = self.xfr_handler(data, query, tcp, client)
            rcode = (response[3] & 0xF) if response else 0
            if rcode == REFUSED and edns is not None:  # refused transfers carry EDE 18
                self.ede[edns_options.EDE_PROHIBITED] = self.ede.get(18, 0) + 1
            return response, rcode
        if query.tsig is not None and self.xfr_handler is not None:
            response = self.xfr_handler.signed_query(
                data,
                query,
                lambda unsigned, key: self._answer_unsigned(unsigned, tcp, client, key),
            )
            return response, (response[3] & 0xF) if response else 0
        if query.tsig is not None:
            # We hold no keys for queries: unknown key (RFC 8945 5.2.1), reply unsigned.
            trailer = self._opt(edns) + tsig_error_record(query.tsig, BADKEY)
            count = 2 if edns is not None else 1
            return render_empty(query.id, query.flags, question, NOTAUTH, trailer, count), NOTAUTH
        if opcode == wire.OPCODE_NOTIFY:
            return self._empty(data, query, NOTAUTH)
        if opcode == wire.OPCODE_UPDATE:
            return self._empty(data, query, NOTAUTH, edns_options.EDE_NOT_SUPPORTED)
        if opcode != wire.OPCODE_QUERY:
            return self._empty(data, query, NOTIMP, edns_options.EDE_NOT_SUPPORTED)
        qtype = query.qtype
        if qtype == AXFR:
            if tcp:  # we serve no transfers (Knot: NOTAUTH for a refused one)
                return self._empty(data, query, NOTAUTH, edns_options.EDE_PROHIBITED)
            return self._empty(data, query, NOTIMP)
        if qtype == IXFR:
            return self._empty(data, query, NOTAUTH, edns_options.EDE_PROHIBITED)
        if qtype == 0:
            return self._empty(data, query, NOTIMP)
        qclass = query.qclass
        if qclass == wire.CLASS_CH:
            return self._chaos(data, query, tcp)
        if qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            return self._empty(data, query, REFUSED, edns_options.EDE_NOT_SUPPORTED)
        zone = self.zones.find(query.qkey)
        if zone is None or (
            zone.origin in self.catalogs and not self._may_read_catalog(zone, client, key)
        ):
            return self._empty(data, query, REFUSED, ede=EDE_NOT_AUTHORITATIVE)
        self.zone_queries[zone.origin] = self.zone_queries.get(zone.origin, 0) + 1
        if zone.snapshot is None:
            return self._empty(data, query, SERVFAIL, edns_options.EDE_NOT_READY)
        if zone.servfail:  # expired, with on-expire = "servfail"
            return self._zone_servfail(data, query, zone)
        self.cache_misses += 1
        return self._from_zone(data, query, zone, tcp, options)

    def _zone_servfail(
        self, data: bytes, query: wire.Query, zone: PublishedZone
    ) -> tuple[bytes, int]:
        """SERVFAIL with EDE 24 Invalid Data (and when it expired, as EXTRA-TEXT)."""
        edns = query.edns
        opt = b""
        if edns is not None:
            code = edns_options.EDE_INVALID_DATA
            self.ede[code] = self.ede.get(code, 0) + 1
            text = _expired_text(zone) if zone.expired_at is not None else "zone expired"
            options = self._base_options(edns, None) + edns_options.ede(code, text)
            opt = wire.opt_record(self.udp_payload, 0, edns.do, options + self._extra)
        question = data[12 : query.question_end]
        response = render_empty(query.id, query.flags, question, SERVFAIL, opt, 1 if opt else 0)
        return response, SERVFAIL

    def _answer_unsigned(
        self, data: bytes, tcp: bool, client: object, key: str | None
    ) -> bytes | None:
        """The answer to a query signed with `key` once its TSIG is checked and removed."""
        query = wire.parse_query(data)
        if query is None or query.tsig is not None:
            return None
        response, _ = self._answer(data, query, tcp, client, key)
        return response

    def _may_read_catalog(self, zone: PublishedZone, client: object, key: str | None) -> bool:
        """A catalog zone answers only what provide-xfr allows to transfer it, as Knot
        answers a catalog only to its ACL (knotd 3.2 refuses every UDP query to one)."""
        handler = self.xfr_handler
        return handler is not None and handler.allows_query(zone.origin, client, key)

    def _from_zone(
        self, data: bytes, query: wire.Query, zone: PublishedZone, tcp: bool, options: Options
    ) -> tuple[bytes, int]:
        extra = self._extra
        self._extra = b""  # rendered without the per-query options: they are not cached
        response, result, opt_rdlen = self._lookup_render(data, query, zone, tcp)
        self._extra = extra
        n = len(data)
        entry: Entry | None = None
        if result.rcode != SERVFAIL:
            entry = response_cache.make_entry(
                response, query.question_end, opt_rdlen, self._zone_ede(zone)
            )
            if entry.ede:
                self.ede[entry.ede] = self.ede.get(entry.ede, 0) + 1
            if (
                not data[2] & 0xF8
                and data[4:11] == _PLAIN_COUNTS
                and data[11] <= 1
                and zone.origin not in self.catalogs  # answered to some clients only
            ):
                parsed = _parse_plain(data, n)
                if parsed is not None:
                    _, shape, key_tail, _ = parsed
                    zone.cache.put(tcp, shape, query.qkey + key_tail, entry)
        if options.zoneversion and response[2] & 0x04 and zone.snapshot is not None:
            extra += edns_options.zoneversion(zone.origin, zone.snapshot.serial)
            self._extra = extra
        if options.expire and result.rcode != SERVFAIL:
            extra += self._expire(zone)
            self._extra = extra
        if extra and opt_rdlen >= 0:
            limit = _TCP_LIMIT if tcp else wire.udp_limit(query.edns, self.udp_payload)
            if len(response) + len(extra) <= limit:
                response = edns_options.add_to_opt(response, opt_rdlen, extra)
            else:  # no room left: render again with the options reserved (not cached)
                response, result, _ = self._lookup_render(data, query, zone, tcp)
        return response, result.rcode

    def _expire(self, zone: PublishedZone) -> bytes:
        """EDNS EXPIRE for an answer from `zone`'s data (RFC 7314; per query, never cached:
        it counts down). As Knot: every answer from the zone's data when asked, whatever
        the type (SOA, AXFR and IXFR are where secondaries read it)."""
        snapshot = zone.snapshot
        assert snapshot is not None
        seconds = edns_options.expire_seconds(
            self._now(), zone.expires_at, zone.signatures_until, snapshot.soa_rdata
        )
        return edns_options.expire(seconds)

    def _lookup_render(
        self, data: bytes, query: wire.Query, zone: PublishedZone, tcp: bool
    ) -> tuple[bytes, Result, int]:
        """answer.lookup() rendered for this query (SERVFAIL if the lookup fails), and
        the RDATA length of its OPT (-1: no OPT)."""
        snapshot = zone.snapshot
        assert snapshot is not None
        edns = query.edns
        do = edns is not None and edns.do
        try:
            result = lookup(snapshot, query.qkey, query.qtype, do)
        except Exception:
            # A bug in the lookup must cost one answer, not the server (Knot: SERVFAIL).
            self.internal_errors += 1
            if self.internal_errors <= 10 or self.internal_errors % 1000 == 0:
                log.exception("lookup failed for %r type %d", query.qkey, query.qtype)
            response, _ = self._empty(data, query, SERVFAIL)
            return response, Result(rcode=SERVFAIL), -1
        opt = self._opt(edns, zone=zone)
        return self._render(data, query, tcp, result, opt), result, len(opt) - 11 if opt else -1

    def _render(
        self, data: bytes, query: wire.Query, tcp: bool, result: Result, opt: bytes, rclass: int = 1
    ) -> bytes:
        """A lookup result as the response to `query`, within the transport's size limit."""
        edns = query.edns
        limit = _TCP_LIMIT if tcp else wire.udp_limit(edns, self.udp_payload)
        question = data[12 : query.question_end]
        return render(
            query.flags,
            question,
            query.qkey,
            result,
            limit,
            opt,
            1 if opt else 0,
            ident=query.id,
            rclass=rclass,
        )

    def _chaos(self, data: bytes, query: wire.Query, tcp: bool) -> tuple[bytes, int]:
        """CH TXT id.server/hostname.bind and version.bind/version.server; else REFUSED."""
        value: bytes | None = None
        if query.qtype == TXT:
            if query.qkey in _IDENTITY_NAMES:
                value = self.identity
            elif query.qkey in _VERSION_NAMES:
                value = self.version
        if value is None:
            return self._empty(data, query, REFUSED)
        result = Result(rcode=NOERROR, aa=False, answer=[RRsetOut(query.qkey, TXT, 0, (value,))])
        opt = self._opt(query.edns)
        return self._render(data, query, tcp, result, opt, wire.CLASS_CH), NOERROR


def _expired_text(zone: PublishedZone) -> str:
    """EXTRA-TEXT for an answer past the zone's expiry: when it expired, in UTC."""
    assert zone.expired_at is not None
    when = datetime.fromtimestamp(zone.expired_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"zone expired at {when}"


def _udp_limit(query: bytes, qend: int, our_payload: int) -> int:
    """wire.udp_limit on raw bytes: the OPT after the question holds the client's size."""
    return min(max(512, (query[qend + 3] << 8) | query[qend + 4]), our_payload)


def _parse_plain(query: bytes, n: int) -> tuple[int, int, bytes, Options] | None:
    """Validate a plain QUERY (header already checked): one uncompressed question, then
    nothing or one EDNS(0) OPT with a root owner ending the message.

    Returns (end of the name, shape, key tail, options): the cache key is the lowercased name
    and the key tail, which is the rest of the query, except that an OPT with options
    is keyed as the same OPT without them (NSID, which changes the answer, has a map
    of its own); None when the query needs the full parser.
    """
    pos = 12
    length = query[12]
    while length:
        if length > 63:
            return None
        pos += length + 1
        if pos >= n:
            return None
        length = query[pos]
    name_end = pos + 1
    if name_end > 12 + wire.MAX_NAME:
        return None
    qend = name_end + 4
    if not query[11]:
        return (name_end, response_cache.PLAIN, query[name_end:], NO_OPTIONS) if qend == n else None
    if (
        n < qend + 11
        or query[qend] != 0
        or query[qend + 1] != 0
        or query[qend + 2] != 41
        or query[qend + 6] != 0  # EDNS version: anything else is BADVERS, never cached
    ):
        return None
    rdlen = (query[qend + 9] << 8) | query[qend + 10]
    if qend + 11 + rdlen != n:
        return None
    if not rdlen:
        return name_end, response_cache.EDNS, query[name_end:], NO_OPTIONS
    options = edns_options.parse(query[qend + 11 :])
    if options is None:
        return None
    if options.nsid:
        return name_end, response_cache.NSID, query[name_end : qend + 9], options
    return name_end, response_cache.EDNS, query[name_end : qend + 9] + b"\x00\x00", options
