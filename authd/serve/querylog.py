"""The optional sampled query log: one line for a fraction of the queries, off by default.

Installed around the responder only when `[log] query-sample-rate` > 0, so it costs
nothing otherwise. Sampling is by counter, not by random draw: every Nth query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import dns.exception

from authd.serve.sockets import client_address
from authd.zone import names

log = logging.getLogger("authd.query")

Respond = Callable[[bytes, bool, object], "bytes | None"]


class Responding(Protocol):
    def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None: ...


def describe(query: bytes, response: bytes | None) -> str:
    """`qname qtype rcode size` from the raw messages, cheaply and without raising."""
    try:
        end = 12
        while query[end]:
            end += query[end] + 1
        if len(query) < end + 5:  # no room for qtype and qclass
            raise ValueError
        qname = names.to_text(names.lower(query[12 : end + 1]))
        qtype = int.from_bytes(query[end + 1 : end + 3], "big")
    except (IndexError, ValueError, dns.exception.DNSException):
        return "unparsable query"
    if response is None:
        return f"{qname} type{qtype} no-reply"
    rcode = response[3] & 0x0F if len(response) > 3 else -1
    return f"{qname} type{qtype} rcode{rcode} {len(response)}B"


class SampledQueryLog:
    def __init__(self, wrapped: Responding, rate: float) -> None:
        self.wrapped = wrapped  # the responder below (metrics read its counters)
        self.inner = wrapped.respond
        self.every = max(1, round(1 / rate)) if rate > 0 else 0
        self.count = 0

    def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None:
        response = self.inner(query, tcp, client)
        self.count += 1
        if self.every and self.count % self.every == 0:
            try:
                host, port = client_address(client)
                source = f"{host}#{port}"
            except ValueError:
                source = "?"
            log.info("query %s %s %s", source, "tcp" if tcp else "udp", describe(query, response))
        return response
