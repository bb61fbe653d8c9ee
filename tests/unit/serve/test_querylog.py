"""The sampled query log logs exactly every Nth query with its name, type and rcode."""

from __future__ import annotations

import logging

import dns.message
import pytest

from authd.serve.querylog import SampledQueryLog, describe


def _query(name: str) -> bytes:
    return dns.message.make_query(name, "AAAA").to_wire()


def test_describe_reads_name_type_and_rcode() -> None:
    query = _query("WWW.Example.test")
    response = bytearray(query)
    response[3] = 3  # NXDOMAIN
    assert describe(query, bytes(response)) == f"www.example.test. type28 rcode3 {len(query)}B"
    assert describe(query, None).endswith("no-reply")
    assert describe(b"\x00" * 13, None) == "unparsable query"


def test_every_nth_query_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Echo:
        def respond(self, query: bytes, tcp: bool, client: object = None) -> bytes | None:
            return query

    sampled = SampledQueryLog(Echo(), rate=0.25)
    with caplog.at_level(logging.INFO, logger="authd.query"):
        for index in range(8):
            sampled.respond(_query(f"q{index}.example.test"), False, ("192.0.2.1", 5353))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "192.0.2.1#5353 udp q3.example.test." in lines[0]
    assert "q7.example.test." in lines[1]
