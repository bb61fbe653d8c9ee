"""The transfer client against the controllable test primary (tests/support/primary.py)."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.rcode
import dns.tsig
import dns.zone
import pytest

from authd.xfr.stream import Kind, TransferLimits
from authd.xfr.transfer import (
    TSIG_REASONS,
    Outcome,
    TransferResult,
    query_soa,
    transfer,
    tsig_reason,
)
from authd.zone import names
from authd.zone.snapshot import Snapshot
from tests.support.primary import Behaviour, Fault, TestPrimary, zone_records
from tests.support.xfrzone import (
    CLOCK,
    KEY,
    OTHER_NAME,
    OTHER_SECRET,
    ZONE,
    expected,
    make_zone,
    records_of,
)


@pytest.fixture
async def primary() -> AsyncIterator[TestPrimary]:
    server = TestPrimary([make_zone(1), make_zone(2, extra="new 300 IN A 192.0.2.2")], key=KEY)
    server.behaviour = Behaviour(records_per_message=7)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def axfr(
    primary: TestPrimary, key: dns.tsig.Key | None = KEY, **kwargs: object
) -> TransferResult:
    kwargs.setdefault("clock", CLOCK)
    return await transfer(ZONE, primary.endpoint, key, current=None, **kwargs)  # type: ignore[arg-type]


# -- SOA query -------------------------------------------------------------------------


async def test_soa_query_signed(primary: TestPrimary) -> None:
    result = await query_soa(primary.endpoint, ZONE, KEY, "127.0.0.1", clock=CLOCK)
    assert result.outcome is Outcome.OK and result.serial == 2 and not result.over_tcp


async def test_soa_query_retries_over_tcp_when_truncated(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(fault=Fault.TRUNCATE_UDP)
    result = await query_soa(primary.endpoint, ZONE, KEY, clock=CLOCK)
    assert result.outcome is Outcome.OK and result.serial == 2 and result.over_tcp


@pytest.mark.parametrize(
    ("rcode", "outcome"),
    [(dns.rcode.REFUSED, Outcome.REFUSED), (dns.rcode.SERVFAIL, Outcome.SERVER_ERROR)],
)
async def test_soa_query_rcodes(primary: TestPrimary, rcode: int, outcome: Outcome) -> None:
    primary.behaviour = Behaviour(rcodes={"SOA": rcode})
    result = await query_soa(primary.endpoint, ZONE, KEY, clock=CLOCK)
    assert result.outcome is outcome and result.rcode == rcode
    assert dns.rcode.to_text(dns.rcode.Rcode(rcode)) in result.reason


async def test_soa_query_with_wrong_key_is_bad_tsig(primary: TestPrimary) -> None:
    result = await query_soa(primary.endpoint, ZONE, OTHER_SECRET, clock=CLOCK)
    assert result.outcome is Outcome.BAD_TSIG and "BADSIG" in result.reason
    assert tsig_reason(result.reason) == "BADSIG"


async def test_soa_query_unsigned_answer_is_bad_tsig(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(fault=Fault.UNSIGNED)
    result = await query_soa(primary.endpoint, ZONE, KEY, clock=CLOCK)
    assert result.outcome is Outcome.BAD_TSIG and tsig_reason(result.reason) == "unsigned"


async def test_soa_query_timeout(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(fault=Fault.NO_ANSWER)
    result = await query_soa(primary.endpoint, ZONE, KEY, timeout=0.3, clock=CLOCK)
    assert result.outcome is Outcome.TIMEOUT


# -- AXFR ------------------------------------------------------------------------------


async def test_axfr_signed_gets_the_whole_zone(primary: TestPrimary) -> None:
    result = await axfr(primary, source="127.0.0.1")
    assert result.outcome is Outcome.UPDATED and result.kind is Kind.AXFR, result.reason
    assert result.serial == 2 and result.messages > 3
    assert records_of(result.snapshot) == expected(primary.zone)
    assert result.records == len(zone_records(primary.zone)) + 1  # closing SOA counted
    assert result.bytes_received > 0


async def test_axfr_without_key(primary: TestPrimary) -> None:
    primary.key = None
    result = await axfr(primary, key=None)
    assert result.outcome is Outcome.UPDATED
    assert records_of(result.snapshot) == expected(primary.zone)


@pytest.mark.parametrize(
    ("fault", "outcome", "words"),
    [
        (Fault.CUT_BEFORE_CLOSING_SOA, Outcome.INCOMPLETE, "without the closing SOA"),
        (Fault.CLOSING_SOA_DIFFERS, Outcome.MALFORMED, "differs"),
        (Fault.RESET_MID_STREAM, Outcome.INCOMPLETE, "broke"),
        (Fault.WRONG_ID, Outcome.MALFORMED, "ID"),
        (Fault.WRONG_QUESTION, Outcome.MALFORMED, "question"),
        (Fault.OUTSIDE_RECORD, Outcome.MALFORMED, "outside the zone"),
        (Fault.TWO_SOAS, Outcome.MALFORMED, "differs"),
        (Fault.UNSIGNED, Outcome.BAD_TSIG, "not signed"),
        (Fault.NO_ANSWER, Outcome.TIMEOUT, "no data"),
    ],
)
async def test_axfr_faults(
    primary: TestPrimary, fault: Fault, outcome: Outcome, words: str
) -> None:
    primary.behaviour = Behaviour(fault=fault, records_per_message=7)
    result = await axfr(primary, idle_timeout=0.5)
    assert result.outcome is outcome, result.reason
    assert words in result.reason and result.snapshot is None


async def test_axfr_record_above_the_apex(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(fault=Fault.OUTSIDE_RECORD, outside_name="test.")
    result = await axfr(primary)
    assert result.outcome is Outcome.MALFORMED and "test. is outside" in result.reason


async def test_slow_drip_hits_the_deadline(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(fault=Fault.SLOW_DRIP, drip_interval=0.02)
    result = await axfr(primary, deadline=0.5, idle_timeout=0.3)
    assert result.outcome is Outcome.TIMEOUT and "deadline" in result.reason
    assert result.duration < 1.5


async def test_flood_is_cut_before_110_percent_of_the_limit(primary: TestPrimary) -> None:
    limit = 100_000
    primary.behaviour = Behaviour(fault=Fault.FLOOD, flood_bytes=10 * limit)
    result = await axfr(primary, limits=TransferLimits(max_bytes=limit))
    assert result.outcome is Outcome.TOO_BIG
    assert result.bytes_received < 1.1 * limit


async def test_flood_is_cut_by_the_record_limit(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(fault=Fault.FLOOD, flood_bytes=2_000_000)
    result = await axfr(primary, limits=TransferLimits(max_records=1000))
    assert result.outcome is Outcome.TOO_BIG and "1000 records" in result.reason
    assert result.records < 1100


@pytest.mark.parametrize(
    ("rcode", "outcome"),
    [
        (dns.rcode.REFUSED, Outcome.REFUSED),
        (dns.rcode.NOTAUTH, Outcome.REFUSED),
        (dns.rcode.SERVFAIL, Outcome.SERVER_ERROR),
    ],
)
async def test_axfr_rcodes(primary: TestPrimary, rcode: int, outcome: Outcome) -> None:
    primary.behaviour = Behaviour(rcodes={"AXFR": rcode})
    result = await axfr(primary)
    assert result.outcome is outcome and result.rcode == rcode


# -- TSIG over many messages -------------------------------------------------------------


async def test_only_first_signed_past_the_limit_is_rejected(primary: TestPrimary) -> None:
    primary.versions.append(make_zone(3, hosts=150))
    primary.behaviour = Behaviour(fault=Fault.ONLY_FIRST_SIGNED, records_per_message=1)
    result = await axfr(primary)
    assert result.outcome is Outcome.BAD_TSIG and "99 unsigned" in result.reason
    assert tsig_reason(result.reason) == "unsigned"


async def test_only_first_signed_short_answer_is_rejected_at_the_end(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(fault=Fault.ONLY_FIRST_SIGNED, records_per_message=7)
    result = await axfr(primary)
    assert result.outcome is Outcome.BAD_TSIG and "last" in result.reason
    assert tsig_reason(result.reason) == "unsigned"


async def test_first_and_last_signed_within_the_limit_is_accepted(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(fault=Fault.FIRST_AND_LAST_SIGNED, records_per_message=1)
    result = await axfr(primary)
    assert 2 < result.messages <= 101
    assert result.outcome is Outcome.UPDATED, result.reason
    assert records_of(result.snapshot) == expected(primary.zone)


@pytest.mark.parametrize(
    ("answer_key", "words", "label"),
    [(OTHER_NAME, "other-key", "BADKEY"), (OTHER_SECRET, "does not verify", "BADSIG")],
)
async def test_answer_signed_with_wrong_key(
    primary: TestPrimary, answer_key: dns.tsig.Key, words: str, label: str
) -> None:
    primary.behaviour = Behaviour(answer_key=answer_key)
    result = await axfr(primary)
    assert result.outcome is Outcome.BAD_TSIG and words in result.reason
    assert tsig_reason(result.reason) == label


async def test_primary_rejects_our_key(primary: TestPrimary) -> None:
    result = await axfr(primary, key=OTHER_NAME)
    assert result.outcome is Outcome.BAD_TSIG and "BADKEY" in result.reason
    assert tsig_reason(result.reason) == "BADKEY"


async def test_time_outside_the_fudge_reports_the_offset(primary: TestPrimary) -> None:
    primary.behaviour = Behaviour(time_offset=1000)
    result = await axfr(primary)
    assert result.outcome is Outcome.BAD_TSIG
    assert tsig_reason(result.reason) == "BADTIME"
    match = re.search(r"([+-]\d+) s off our clock \(fudge 300 s\)", result.reason)
    assert match is not None and abs(int(match.group(1)) - 1000) <= 2


async def test_primary_refuses_our_time_and_says_its_clock(primary: TestPrimary) -> None:
    import time

    result = await axfr(primary, clock=lambda: time.time() - 3600)
    assert result.outcome is Outcome.BAD_TSIG and "BADTIME" in result.reason
    assert tsig_reason(result.reason) == "BADTIME"
    match = re.search(r"its clock is ([+-]\d+) s from ours", result.reason)
    assert match is not None and abs(int(match.group(1)) - 3600) <= 2


async def test_injected_clock_decides_the_tsig_window(primary: TestPrimary) -> None:
    # The primary's clock is an hour ahead; so is ours (injected): accepted.
    import time

    primary.behaviour = Behaviour(time_offset=3600, accept_any_request_time=True)
    result = await axfr(primary, clock=lambda: time.time() + 3600)
    assert result.outcome is Outcome.UPDATED, result.reason
    # With the real clock the same answers are an hour off.
    result = await axfr(primary)
    assert result.outcome is Outcome.BAD_TSIG and "+36" in result.reason


# -- IXFR ------------------------------------------------------------------------------


async def current_version(primary: TestPrimary, serial_index: int = 0) -> Snapshot:
    """Our copy of versions[serial_index], fetched by AXFR from a primary serving it."""
    keep = primary.versions
    primary.versions = keep[: serial_index + 1]
    try:
        result = await axfr(primary)
    finally:
        primary.versions = keep
    assert result.snapshot is not None
    return result.snapshot


async def test_ixfr_chain(primary: TestPrimary) -> None:
    primary.versions.append(make_zone(3, hosts=25, extra="new 300 IN A 192.0.2.3"))
    current = await current_version(primary)
    result = await transfer(ZONE, primary.endpoint, KEY, current=current, clock=CLOCK)
    assert result.outcome is Outcome.UPDATED and result.kind is Kind.IXFR, result.reason
    assert [(s.from_serial, s.to_serial) for s in result.steps] == [(1, 2), (2, 3)]
    assert records_of(result.snapshot) == expected(primary.zone)
    assert primary.queries["AXFR"] == 1  # only the one that made `current`


async def test_ixfr_up_to_date(primary: TestPrimary) -> None:
    current = await current_version(primary, 1)
    result = await transfer(ZONE, primary.endpoint, KEY, current=current, clock=CLOCK)
    assert result.outcome is Outcome.UP_TO_DATE and result.snapshot is current
    assert result.serial == 2


async def test_ixfr_primary_gone_backwards_is_not_taken(primary: TestPrimary) -> None:
    current = await current_version(primary, 1)
    primary.versions = [make_zone(1)]
    result = await transfer(ZONE, primary.endpoint, KEY, current=current, clock=CLOCK)
    assert result.outcome is Outcome.UP_TO_DATE and result.snapshot is current
    assert result.serial == 1


async def test_forced_axfr_takes_a_lower_serial(primary: TestPrimary) -> None:
    current = await current_version(primary, 1)
    primary.versions = [make_zone(1)]
    result = await transfer(
        ZONE, primary.endpoint, KEY, current=current, force_axfr=True, clock=CLOCK
    )
    assert result.outcome is Outcome.UPDATED and result.serial == 1 and result.kind is Kind.AXFR


async def test_ixfr_answered_axfr_style(primary: TestPrimary) -> None:
    current = await current_version(primary)
    primary.behaviour = Behaviour(fault=Fault.IXFR_AXFR_STYLE)
    result = await transfer(ZONE, primary.endpoint, KEY, current=current, clock=CLOCK)
    assert result.outcome is Outcome.UPDATED and result.kind is Kind.AXFR_STYLE_IXFR
    assert records_of(result.snapshot) == expected(primary.zone)
    assert primary.queries["AXFR"] == 1  # no second transfer


async def test_ixfr_with_bad_deletions_falls_back_to_axfr(primary: TestPrimary) -> None:
    current = await current_version(primary)
    primary.behaviour = Behaviour(fault=Fault.IXFR_BAD_DELETIONS)
    result = await transfer(ZONE, primary.endpoint, KEY, current=current, clock=CLOCK)
    assert result.outcome is Outcome.FELL_BACK and result.kind is Kind.FALLBACK_AXFR
    assert "does not apply" in result.ixfr_failure
    assert records_of(result.snapshot) == expected(primary.zone)


@pytest.mark.parametrize(
    "rcode",
    [dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.FORMERR],
)
async def test_ixfr_rcode_falls_back_to_axfr(primary: TestPrimary, rcode: int) -> None:
    current = await current_version(primary)
    primary.behaviour = Behaviour(rcodes={"IXFR": rcode})
    result = await transfer(ZONE, primary.endpoint, KEY, current=current, clock=CLOCK)
    assert result.outcome is Outcome.FELL_BACK, result.reason
    assert dns.rcode.to_text(dns.rcode.Rcode(rcode)) in result.ixfr_failure
    assert result.serial == 2


async def test_ixfr_cut_is_reported_for_the_next_attempt(primary: TestPrimary) -> None:
    current = await current_version(primary)
    primary.behaviour = Behaviour(fault=Fault.CUT_BEFORE_CLOSING_SOA)
    result = await transfer(ZONE, primary.endpoint, KEY, current=current, clock=CLOCK)
    assert result.outcome is Outcome.INCOMPLETE and result.kind is Kind.IXFR


async def test_connection_refused_is_a_network_error() -> None:
    from tests.support.system import free_port

    port = free_port()
    result = await transfer(ZONE, ("127.0.0.1", port), KEY, current=None, deadline=2, clock=CLOCK)
    assert result.outcome is Outcome.NETWORK_ERROR and "connect" in result.reason


# -- against a real primary: knotd (skips without it, fails under AUTHD_REQUIRE_INTEROP=1) ----


def _knotd_config(workdir: Path, port: int) -> str:
    return f"""
server:
    rundir: "{workdir}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{workdir}/db"
log:
  - target: "{workdir}/knotd.log"
    any: info
key:
  - id: xfr-key
    algorithm: hmac-sha256
    secret: {KEY.secret if isinstance(KEY.secret, str) else base64.b64encode(KEY.secret).decode()}
acl:
  - id: xfr
    address: 127.0.0.1
    key: xfr-key
    action: transfer
template:
  - id: default
    storage: "{workdir}"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: example.test
    acl: xfr
"""


@pytest.fixture
def knotd(tmp_path: Path) -> Iterator[tuple[tuple[str, int], list[str]]]:
    from tests.support.system import free_port, require_binary

    knotd_path = require_binary("knotd")
    knotc_path = require_binary("knotc")
    port = free_port()
    zone = make_zone(1, hosts=3000)
    (tmp_path / "example.test.zone").write_text(zone.to_text())
    (tmp_path / "db").mkdir()  # journal and timers live here; knotd does not create it
    conf = tmp_path / "knot.conf"
    conf.write_text(_knotd_config(tmp_path, port))
    process = subprocess.Popen(
        [knotd_path, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    knotc = [knotc_path, "-c", str(conf), "-t", "5"]
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            check = subprocess.run(
                [*knotc, "zone-status", "example.test"], capture_output=True, text=True
            )
            if check.returncode == 0 and "serial: 1" in check.stdout:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"knotd did not load the zone: {(tmp_path / 'knotd.log').read_text()}")
        yield ("127.0.0.1", port), knotc
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def test_knotd_axfr_then_ixfr_with_tsig(knotd: tuple[tuple[str, int], list[str]]) -> None:
    endpoint, knotc = knotd
    first = await transfer(ZONE, endpoint, KEY, current=None, clock=CLOCK)
    assert first.outcome is Outcome.UPDATED and first.serial == 1, first.reason
    assert first.snapshot is not None and first.snapshot.record_count == 3006
    soa = await query_soa(endpoint, ZONE, KEY, clock=CLOCK)
    assert soa.outcome is Outcome.OK and soa.serial == 1
    for command in (
        ["zone-begin", "example.test"],
        ["zone-set", "example.test", "added.example.test.", "300", "A", "192.0.2.77"],
        ["zone-unset", "example.test", "h5.example.test.", "A"],
        ["zone-commit", "example.test"],
    ):
        done = subprocess.run([*knotc, *command], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    second = await transfer(ZONE, endpoint, KEY, current=first.snapshot, clock=CLOCK)
    assert second.outcome is Outcome.UPDATED and second.kind is Kind.IXFR, second.reason
    assert second.serial == 2 and len(second.steps) == 1
    fresh = await transfer(ZONE, endpoint, KEY, current=None, clock=CLOCK)
    assert records_of(second.snapshot) == records_of(fresh.snapshot)
    assert second.snapshot is not None
    assert second.snapshot.has_data(names.key_from_text("added.example.test."))
    assert not second.snapshot.has_data(names.key_from_text("h5.example.test."))
    wrong = await transfer(ZONE, endpoint, OTHER_SECRET, current=None, clock=CLOCK)
    assert wrong.outcome is Outcome.BAD_TSIG and "BADSIG" in wrong.reason


def test_tsig_reason_words_come_from_the_documented_set() -> None:
    texts = [
        "SOA query: the primary rejected our TSIG: BADTRUNC",
        "AXFR: the answer is signed but we have no key",
        "AXFR: unreadable TSIG record: x",
        "some future text",
    ]
    words = [tsig_reason(text) for text in texts]
    assert words == ["BADTRUNC", "unexpected", "other", "other"]
    assert set(words) <= set(TSIG_REASONS)
