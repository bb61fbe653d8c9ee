"""Bounded DNS queries for the report and the drill: only to addresses the config names (or
authd's own), each with a timeout, and no more than a budget per run."""

from __future__ import annotations

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype

from authd.config import Endpoint

TIMEOUT = 2.0  # seconds per query
PAYLOAD = 1232


class Budget:
    """At most `limit` queries in one run: a report never floods anyone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True


async def ask(
    server: Endpoint,
    qname: dns.name.Name,
    rdtype: int,
    budget: Budget,
    *,
    tcp: bool = False,
    recursive: bool = False,
    timeout: float = TIMEOUT,
) -> dns.message.Message | str:
    """The answer, or why there is none (one line)."""
    if not budget.take():
        return f"not asked: the budget of {budget.limit} queries is spent"
    query = dns.message.make_query(
        qname, dns.rdatatype.RdataType(rdtype), want_dnssec=True, payload=PAYLOAD
    )
    if not recursive:
        query.flags &= ~dns.flags.RD
    try:
        if tcp:
            return await dns.asyncquery.tcp(query, server.host, timeout, port=server.port)
        return await dns.asyncquery.udp(
            query, server.host, timeout, port=server.port, ignore_unexpected=True
        )
    except dns.exception.Timeout:
        return f"no answer from {server} within {timeout:g} s"
    except (OSError, dns.exception.DNSException, EOFError) as exc:
        return f"{server}: {exc or type(exc).__name__}"
