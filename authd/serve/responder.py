"""Query bytes in, response bytes out: one code path for UDP and TCP.

The hot path (`respond`) recognises the common query shape on raw bytes (one
question, opcode QUERY, no records but an optional plain OPT), finds the zone
and returns a patched copy of a cached response. Anything else, and every cache
miss, goes through `wire.parse_query` and the full decision list, which follows
Knot DNS (see issue 2): malformed input, EDNS version, TSIG, opcode, transfer
qtypes, class (CHAOS), zone lookup, zone state, and finally answer.lookup()
rendered under the size limit and stored in the zone's cache.

Counters are plain ints and dicts, read by the metrics code; nothing here does
I/O except logging an internal error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from authd import wire
from authd.serve import cache as response_cache
from authd.serve.render import render, render_empty
from authd.serve.zonetable import PublishedZone, ZoneTable
from authd.zone.answer import (
    FORMERR,
    NOERROR,
    NOTAUTH,
    NOTIMP,
    REFUSED,
    SERVFAIL,
    Result,
    RRsetOut,
    lookup,
)

log = logging.getLogger(__name__)

TXT = 16
IXFR, AXFR = 251, 252
BADVERS = 16  # extended rcode: 1 in the OPT, 0 in the header
BADKEY = 17  # TSIG error
EDE_NOT_AUTHORITATIVE = 20  # RFC 8914, sent by Knot with REFUSED

_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00"  # QDCOUNT=1, ANCOUNT=0, NSCOUNT=0, ARCOUNT hi
_TCP_LIMIT = 65535
_IDENTITY_NAMES = frozenset(
    {b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"},
)
_VERSION_NAMES = frozenset({b"\x07version\x04bind\x00", b"\x07version\x06server\x00"})

NotifyHandler = Callable[[bytes, wire.Query, object], "bytes | None"]
"""(query bytes, parsed query, client address) -> response bytes, or None to send nothing."""


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
    ) -> None:
        self.zones = zones
        self.identity = txt_rdata(identity) if identity else None
        self.version = txt_rdata(version) if version else None
        self.nsid = nsid
        self.udp_payload = max(512, min(udp_payload, 65535))
        self.notify_handler: NotifyHandler | None = None
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

    # -- hot path -----------------------------------------------------------------

    def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None:
        """The response to one query message, or None when nothing must be sent."""
        if tcp:
            self.tcp_queries += 1
        else:
            self.udp_queries += 1
        n = len(query)
        if n >= 17 and not query[2] & 0xF8 and query[4:11] == _PLAIN_COUNTS and query[11] <= 1:
            hit = self._cached(query, n, tcp)
            if hit is not None:
                return hit
        return self._respond_slow(query, tcp, client)

    def _cached(self, query: bytes, n: int, tcp: bool) -> bytes | None:
        """A cache hit for a plain QUERY, or None (not plain, or a miss)."""
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
        if query[11]:
            # One additional record: accept only a plain EDNS(0) OPT ending the message.
            if (
                n < qend + 11
                or query[qend] != 0
                or query[qend + 1] != 0
                or query[qend + 2] != 41
                or query[qend + 6] != 0
            ):
                return None
            rdlen = (query[qend + 9] << 8) | query[qend + 10]
            if qend + 11 + rdlen != n:
                return None
            nsid = False
            if rdlen:
                ok, nsid = wire.parse_options(query[qend + 11 :])
                if not ok:
                    return None
            if tcp:
                limit = _TCP_LIMIT
            else:
                limit = min(max(512, (query[qend + 3] << 8) | query[qend + 4]), self.udp_payload)
            bits = 1 | (2 if query[qend + 7] & 0x80 else 0) | (4 if nsid else 0)
        else:
            if qend != n:
                return None
            limit = _TCP_LIMIT if tcp else 512
            bits = 0
        qkey = query[12:name_end].translate(_LOWER)
        zone = self.zones.find(qkey)
        if zone is None:
            return None
        cached = zone.cache.entries.get(
            qkey + query[name_end:qend] + bytes((bits, limit >> 8, limit & 0xFF))
        )
        if cached is None:
            return None
        self.cache_hits += 1
        self.rcodes[cached[3] & 0xF] += 1
        qtype = (query[name_end] << 8) | query[name_end + 1]
        qtypes = self.qtypes
        qtypes[qtype] = qtypes.get(qtype, 0) + 1
        zone_queries = self.zone_queries
        zone_queries[zone.origin] = zone_queries.get(zone.origin, 0) + 1
        if cached[2] & 0x02:
            self.truncated += 1
        return response_cache.patch(cached, query, qend)

    # -- everything else ------------------------------------------------------------

    def _respond_slow(self, data: bytes, tcp: bool, client: object) -> bytes | None:
        query = wire.parse_query(data)
        if query is None:
            self.dropped += 1
            return None
        if query.qdcount:
            self.qtypes[query.qtype] = self.qtypes.get(query.qtype, 0) + 1
        response, rcode = self._answer(data, query, tcp, client)
        if response is None:
            self.dropped += 1
            return None
        self.rcodes[rcode] += 1
        if response[2] & 0x02:
            self.truncated += 1
        return response

    def _opt(self, edns: wire.Edns | None, ext_rcode: int = 0, ede: int | None = None) -> bytes:
        """Our OPT record for a query with `edns` (b"" without EDNS)."""
        if edns is None:
            return b""
        options = b""
        if edns.nsid and self.nsid:
            options += wire.edns_option(wire.OPTION_NSID, self.nsid)
        if ede is not None:
            options += wire.edns_option(wire.OPTION_EDE, ede.to_bytes(2))
        return wire.opt_record(self.udp_payload, ext_rcode, edns.do, options)

    def _empty(
        self, data: bytes, query: wire.Query, rcode: int, ede: int | None = None
    ) -> tuple[bytes, int]:
        opt = self._opt(query.edns, ede=ede)
        question = data[12 : query.question_end]
        response = render_empty(query.id, query.flags, question, rcode, opt, 1 if opt else 0)
        return response, rcode

    def _answer(
        self, data: bytes, query: wire.Query, tcp: bool, client: object
    ) -> tuple[bytes | None, int]:
        edns = query.edns
        if query.formerr:
            return self._empty(data, query, FORMERR)
        question = data[12 : query.question_end]
        if edns is not None and edns.version != 0:
            # BADVERS = 16: 0 in the header, 1 in the OPT's extended rcode (RFC 6891 6.1.3).
            opt = self._opt(edns, ext_rcode=BADVERS >> 4)  # NSID too, when asked (as Knot)
            return render_empty(query.id, query.flags, question, 0, opt, 1), BADVERS
        opcode = query.opcode
        if opcode == wire.OPCODE_NOTIFY and self.notify_handler is not None:
            response = self.notify_handler(data, query, client)
            return response, (response[3] & 0xF) if response else 0
        if query.tsig is not None:
            # We hold no keys for queries: unknown key (RFC 8945 5.2.1), reply unsigned.
            trailer = self._opt(edns) + tsig_error_record(query.tsig, BADKEY)
            count = 2 if edns is not None else 1
            return render_empty(query.id, query.flags, question, NOTAUTH, trailer, count), NOTAUTH
        if opcode in (wire.OPCODE_NOTIFY, wire.OPCODE_UPDATE):
            return self._empty(data, query, NOTAUTH)
        if opcode != wire.OPCODE_QUERY:
            return self._empty(data, query, NOTIMP)
        qtype = query.qtype
        if qtype == AXFR:
            return self._empty(data, query, NOTAUTH if tcp else NOTIMP)
        if qtype == IXFR:
            return self._empty(data, query, NOTAUTH)
        if qtype == 0:
            return self._empty(data, query, NOTIMP)
        qclass = query.qclass
        if qclass == wire.CLASS_CH:
            return self._chaos(data, query, tcp)
        if qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            return self._empty(data, query, REFUSED)
        zone = self.zones.find(query.qkey)
        if zone is None:
            return self._empty(data, query, REFUSED, ede=EDE_NOT_AUTHORITATIVE)
        self.zone_queries[zone.origin] = self.zone_queries.get(zone.origin, 0) + 1
        if zone.servfail or zone.snapshot is None:
            return self._empty(data, query, SERVFAIL)
        self.cache_misses += 1
        return self._from_zone(data, query, zone, tcp)

    def _from_zone(
        self, data: bytes, query: wire.Query, zone: PublishedZone, tcp: bool
    ) -> tuple[bytes, int]:
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
            return self._empty(data, query, SERVFAIL)
        limit = _TCP_LIMIT if tcp else wire.udp_limit(edns, self.udp_payload)
        opt = self._opt(edns)
        question = data[12 : query.question_end]
        response = render(query.flags, question, query.qkey, result, limit, opt, 1 if opt else 0)
        key = response_cache.make_key(
            query.qkey,
            data[query.question_end - 4 : query.question_end],
            edns is not None,
            do,
            edns is not None and edns.nsid,
            limit,
        )
        zone.cache.put(key, response)
        response = query.id.to_bytes(2) + response[2:]
        return response, result.rcode

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
        edns = query.edns
        opt = self._opt(edns)
        limit = _TCP_LIMIT if tcp else wire.udp_limit(edns, self.udp_payload)
        question = data[12 : query.question_end]
        response = render(
            query.flags,
            question,
            query.qkey,
            result,
            limit,
            opt,
            1 if opt else 0,
            ident=query.id,
            rclass=wire.CLASS_CH,
        )
        return response, NOERROR
