"""EDNS EXPIRE as a client (RFC 7314): the option on our SOA/IXFR/AXFR queries, the value
read back from answers, and the same against a real knotd primary (which answers its SOA
EXPIRE field for a zone it serves from a file)."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message
import dns.name
import dns.tsig
import pytest

from authd.bench.primaries import KEY as BENCH_KEY
from authd.bench.primaries import keyring, knot_primary, write_zone
from authd.config import ConfigError, load_config
from authd.xfr.stream import TYPE_AXFR, TYPE_IXFR, Kind, edns_expire, parse_message
from authd.xfr.transfer import Outcome, build_query, query_soa, sign_query, transfer
from authd.zone.snapshot import SOA
from tests.support.system import require_binary
from tests.support.xfrzone import CLOCK, KEY, ZONE

SOA_EXPIRE = 1209600  # the SOA EXPIRE field of make_zone and write_zone


def expire_options(
    wire: bytes, keyring: dict[dns.name.Name, dns.tsig.Key] | None = None
) -> list[bytes]:
    message = dns.message.from_wire(wire, keyring=keyring)
    assert message.edns == 0
    return [o.to_wire() for o in message.options if o.otype == dns.edns.OptionType.EXPIRE]


def test_queries_carry_an_empty_expire_option_only_when_asked() -> None:
    for qtype in (SOA, TYPE_AXFR):
        assert expire_options(build_query(ZONE, qtype, query_id=1, expire=True)) == [b""]
    plain = dns.message.from_wire(build_query(ZONE, SOA, query_id=1))
    assert plain.edns == -1


def test_an_ixfr_query_signed_with_the_option_verifies() -> None:
    wire = build_query(ZONE, TYPE_IXFR, query_id=7, soa=(3600, b"\x00" * 22), expire=True)
    signed, _ = sign_query(wire, KEY, CLOCK())
    assert expire_options(signed, {KEY.name: KEY}) == [b""]  # the TSIG is over the OPT too


def test_the_expire_value_is_read_from_an_answer() -> None:
    response = dns.message.make_response(dns.message.from_wire(build_query(ZONE, SOA, query_id=3)))
    response.use_edns(
        0,
        options=[
            dns.edns.GenericOption(10, b"\x01" * 8),  # a cookie first: skipped
            dns.edns.GenericOption(dns.edns.OptionType.EXPIRE, (4000).to_bytes(4)),
        ],
    )
    assert parse_message(response.to_wire()).expire == 4000
    response.use_edns(0, options=[])
    assert parse_message(response.to_wire()).expire is None


def test_edns_expire_ignores_odd_lengths_and_cut_options() -> None:
    assert edns_expire(b"\x00\x09\x00\x04\x00\x00\x00\x2a", 0, 8) == 42
    assert edns_expire(b"\x00\x09\x00\x00", 0, 4) is None  # a query's empty option
    assert edns_expire(b"\x00\x09\x00\x08\x00\x00", 0, 6) is None  # runs past the RDATA


def test_remote_option_defaults_on_and_turns_off(tmp_path: Path) -> None:
    text = """
[server]
listen = ["127.0.0.1@5300"]
[[remote]]
id = "p1"
addresses = ["127.0.0.1@5301"]
[[remote]]
id = "p2"
addresses = ["127.0.0.1@5302"]
edns-expire = false
[[zone]]
name = "example.test"
primaries = ["p1", "p2"]
"""
    (tmp_path / "authd.toml").write_text(text)
    (zone,) = load_config(tmp_path / "authd.toml").zones
    assert [(r.id, r.edns_expire) for r in zone.primaries] == [("p1", True), ("p2", False)]


def test_remote_option_must_be_a_boolean(tmp_path: Path) -> None:
    text = """
[[remote]]
id = "p1"
addresses = ["127.0.0.1@5301"]
edns-expire = "no"
"""
    (tmp_path / "authd.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"edns-expire.*expected true or false"):
        load_config(tmp_path / "authd.toml")


async def test_knotd_answers_expire_on_soa_axfr_and_ixfr(tmp_path: Path) -> None:
    knotd, knotc = require_binary("knotd"), require_binary("knotc")
    zone_file = write_zone(tmp_path / "example.test.zone", "example.test", 1)
    primary = knot_primary(knotd, knotc, tmp_path, {"example.test": zone_file})
    key = keyring()[dns.name.from_text(BENCH_KEY.name)]
    try:
        endpoint = primary.address
        soa = await query_soa(endpoint, ZONE, key, clock=CLOCK, expire=True)
        assert soa.outcome is Outcome.OK and soa.expire == SOA_EXPIRE, soa.reason
        plain = await query_soa(endpoint, ZONE, key, clock=CLOCK)
        assert plain.outcome is Outcome.OK and plain.expire is None
        first = await transfer(ZONE, endpoint, key, current=None, clock=CLOCK, expire=True)
        assert first.outcome is Outcome.UPDATED and first.expire == SOA_EXPIRE, first.reason
        primary.set_record("example.test", "added.example.test.", "A", "192.0.2.77")
        second = await transfer(
            ZONE, endpoint, key, current=first.snapshot, clock=CLOCK, expire=True
        )
        assert second.outcome is Outcome.UPDATED and second.kind is Kind.IXFR, second.reason
        assert second.expire == SOA_EXPIRE
    finally:
        primary.stop()
