"""A worker's responder counters as the flat "<group>.<label>" ints the pool reports."""

from __future__ import annotations

import functools

import dns.rcode
import dns.rdatatype

from authd.serve.responder import Responder
from authd.serve.workers import ResponderLike
from authd.zone import names


def responder_counters(responder: ResponderLike) -> dict[str, int]:
    assert isinstance(responder, Responder)
    out = {
        "queries.udp": responder.udp_queries,
        "queries.tcp": responder.tcp_queries,
        "responses.truncated": responder.truncated,
        "responses.dropped": responder.dropped,
        "responses.internal_error": responder.internal_errors,
        "cache.hit": responder.cache_hits,
        "cache.miss": responder.cache_misses,
    }
    for code, count in enumerate(responder.rcodes):
        if count:
            out[f"rcode.{dns.rcode.to_text(code)}"] = count  # type: ignore[arg-type]
    for qtype, count in responder.qtypes.items():
        out[f"qtype.{dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype))}"] = count
    for code, count in responder.ede.items():
        out[f"ede.{code}"] = count
    if responder.cookies is not None:
        for verdict, count in zip(
            ("client-only", "valid", "bad"), responder.cookies.counts, strict=True
        ):
            out[f"cookie.{verdict}"] = count
    for origin, count in responder.zone_queries.items():
        out[_zone_key(origin)] = count
    if responder.xfr_handler is not None:
        out.update(responder.xfr_handler.counters())  # "xfrout.<result>"
    return out


@functools.lru_cache(maxsize=1 << 17)
def _zone_key(origin: bytes) -> str:
    """Decoded once per zone, not on every report (10,000 zones: 10,000 decodes a second)."""
    return f"zone.{names.to_text(origin).rstrip('.') or '.'}"
