"""A misbehaving primary, end to end: a live `authd serve` secondary against the test primary
(tests/support/primary.py).

One daemon and one primary serve the whole module (starting authd takes seconds); every test
starts from a healthy, up-to-date secondary, publishes a new version behind a named fault and
asserts on what authd serves afterwards (the old serial stays), the metric, the status reason,
and that authd takes the new version by itself once the primary behaves again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.rcode
import dns.tsig
import pytest

from tests.support.primary import (
    Behaviour,
    Fault,
    LiveSecondary,
    PrimaryThread,
    TestPrimary,
    make_zone,
    send_notify,
    test_key,
    zone_serial,
)

ZONE = "fault.test"
HOSTS = 150  # AXFR of ~155 records: enough messages for the stream faults
MAX_BYTES = 64 * 1024  # the zone's max-bytes, for the flood


@dataclass
class Rig:
    primary: TestPrimary
    runner: PrimaryThread
    secondary: LiveSecondary
    serial: int = 1

    def publish(self, serial: int | None = None, *, refresh: int = 3600, retry: int = 600) -> int:
        """A new version at the primary (serial + 1 unless given); its serial."""
        self.serial = self.serial + 1 if serial is None else serial
        self.primary.versions.append(
            make_zone(ZONE + ".", self.serial, hosts=HOSTS, refresh=refresh, retry=retry)
        )
        return self.serial

    def healthy(self) -> int:
        """Primary behaves, secondary serves what the primary has: the starting point."""
        self.primary.behaviour = Behaviour()
        current = zone_serial(self.primary.zone)
        if self.secondary.served_serial() != current:
            self.secondary.refresh()
            self.secondary.wait_serial(current)
        return current

    def transfers(self, result: str) -> float:
        return self.secondary.metric("authd_xfr_transfers_total", zone=ZONE, result=result)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    primary = TestPrimary([make_zone(ZONE + ".", 1, hosts=HOSTS)], key=test_key())
    runner = PrimaryThread(primary)
    with runner:
        secondary = LiveSecondary(
            tmp_path_factory.mktemp("scenarios"),
            ZONE,
            primary.endpoint,
            zone_settings=f"max-bytes = {MAX_BYTES}",
        )
        try:
            secondary.start()
            secondary.wait_serial(1, timeout=15)
            yield Rig(primary, runner, secondary)
        finally:
            secondary.stop()


@pytest.fixture
def r(rig: Rig) -> Iterator[Rig]:
    rig.healthy()
    yield rig
    rig.primary.behaviour = Behaviour()


def expect_failure(
    r: Rig, behaviour: Behaviour, command: str, result: str, reason: str, *, soa: bool = False
) -> tuple[int, int]:
    """Publish a version behind `behaviour`, trigger, check nothing changed but the reason."""
    old = r.healthy()
    before = r.transfers(result)
    new = r.publish()
    r.primary.behaviour = behaviour
    r.secondary.control(command, zone=ZONE)
    s = r.secondary

    def failed() -> bool:
        error = s.status()["last_error"]
        return isinstance(error, str) and reason in error

    s.wait_for(failed, f"last_error containing {reason!r}", timeout=12)
    assert s.served_serial() == old, "a failed transfer changed the served zone"
    if not soa:
        counted = {k: v for k, v in s.metrics().items() if k.startswith("authd_xfr_transfers")}
        assert r.transfers(result) >= before + 1, f"no transfer counted as {result}: {counted}"
    assert s.status()["state"] == "ok"  # still serving the old version, not expired
    return old, new


def expect_recovery(r: Rig, new: int) -> None:
    r.primary.behaviour = Behaviour()
    r.secondary.refresh()
    r.secondary.wait_serial(new)
    assert r.secondary.status()["last_error"] is None


# -- the transfer stream is broken: old serial stays, authd recovers ----------------------------

STREAM_FAULTS = [
    pytest.param(
        Behaviour(fault=Fault.CUT_BEFORE_CLOSING_SOA, records_per_message=5),
        "incomplete",
        "without the closing SOA",
        id="axfr-cut-before-closing-soa",
    ),
    pytest.param(
        Behaviour(fault=Fault.CLOSING_SOA_DIFFERS, records_per_message=5),
        "malformed",
        "closing SOA",
        id="closing-soa-differs",
    ),
    pytest.param(
        Behaviour(fault=Fault.RESET_MID_STREAM, records_per_message=5),
        "incomplete",
        "connection broke",
        id="connection-reset-mid-stream",
    ),
    pytest.param(
        Behaviour(fault=Fault.SLOW_DRIP, drip_interval=0.01),
        "timeout",
        "",
        id="one-byte-at-a-time-deadline",
    ),
    pytest.param(
        Behaviour(fault=Fault.SLOW_DRIP, drip_interval=3.0),
        "timeout",
        "",
        id="one-byte-per-3s-idle-timeout",
    ),
    pytest.param(
        Behaviour(fault=Fault.WRONG_ID, records_per_message=5), "malformed", "", id="wrong-id"
    ),
    pytest.param(
        Behaviour(fault=Fault.OUTSIDE_RECORD, records_per_message=5),
        "malformed",
        "outside the zone",
        id="record-in-another-zone",
    ),
    pytest.param(
        Behaviour(fault=Fault.OUTSIDE_RECORD, records_per_message=5, outside_name="test."),
        "malformed",
        "outside the zone",
        id="record-above-the-apex",
    ),
    pytest.param(
        Behaviour(fault=Fault.TWO_SOAS, records_per_message=5), "malformed", "", id="two-soas"
    ),
]


@pytest.mark.parametrize(("behaviour", "result", "reason"), STREAM_FAULTS)
def test_broken_axfr_keeps_old_version(
    r: Rig, behaviour: Behaviour, result: str, reason: str
) -> None:
    _, new = expect_failure(r, behaviour, "retransfer", result, reason)
    expect_recovery(r, new)


def test_flood_ten_times_the_size_limit_is_cut_early(r: Rig) -> None:
    received = r.secondary.metric("authd_xfr_transfer_bytes_total", zone=ZONE)
    behaviour = Behaviour(fault=Fault.FLOOD, flood_bytes=10 * MAX_BYTES)
    _, new = expect_failure(r, behaviour, "retransfer", "too-big", "")
    taken = r.secondary.metric("authd_xfr_transfer_bytes_total", zone=ZONE) - received
    assert taken <= 1.1 * MAX_BYTES, f"read {taken} bytes of a flood, limit {MAX_BYTES}"
    expect_recovery(r, new)


def test_wrong_question_is_malformed(r: Rig) -> None:
    behaviour = Behaviour(fault=Fault.WRONG_QUESTION, records_per_message=5)
    _, new = expect_failure(r, behaviour, "refresh", "malformed", "does not match", soa=True)
    expect_recovery(r, new)


# -- TSIG ------------------------------------------------------------------------------------------

OTHER_SECRET = "c2VjcmV0IHRoYXQgdGhlIHNlY29uZGFyeSBkb2VzIG5vdCBrbm93IGF0IGFsbA=="

TSIG_FAULTS = [
    pytest.param(Behaviour(fault=Fault.UNSIGNED), "not signed", id="unsigned-answer"),
    pytest.param(
        Behaviour(fault=Fault.ONLY_FIRST_SIGNED, records_per_message=1),
        "unsigned",
        id="only-first-signed-past-99",
    ),
    pytest.param(
        Behaviour(answer_key=dns.tsig.Key("other-key", OTHER_SECRET, dns.tsig.HMAC_SHA256)),
        "",
        id="unknown-key",
    ),
    pytest.param(Behaviour(answer_key=test_key(OTHER_SECRET)), "", id="wrong-secret"),
    pytest.param(Behaviour(time_offset=3600), "3600", id="time-outside-fudge"),
]


@pytest.mark.parametrize(("behaviour", "reason"), TSIG_FAULTS)
def test_bad_tsig_is_rejected(r: Rig, behaviour: Behaviour, reason: str) -> None:
    failures = r.secondary.metric("authd_xfr_tsig_failures_total")
    _, new = expect_failure(r, behaviour, "retransfer", "bad-tsig", reason)
    assert r.secondary.metric("authd_xfr_tsig_failures_total") > failures
    expect_recovery(r, new)


def test_first_and_last_signed_is_accepted(r: Rig) -> None:
    # ~31 messages: 29 unsigned in a row, inside RFC 8945 5.3.1's limit of 99.
    r.primary.behaviour = Behaviour(fault=Fault.FIRST_AND_LAST_SIGNED, records_per_message=5)
    new = r.publish()
    r.secondary.control("retransfer", zone=ZONE)
    r.secondary.wait_serial(new)


# -- error rcodes to SOA and transfer queries ------------------------------------------------------

RCODES = ["REFUSED", "NOTAUTH", "SERVFAIL", "NOTIMP"]


@pytest.mark.parametrize("rcode", RCODES)
def test_error_rcode_to_soa_query(r: Rig, rcode: str) -> None:
    behaviour = Behaviour(rcodes={"SOA": dns.rcode.from_text(rcode)})
    _, new = expect_failure(r, behaviour, "refresh", "", rcode, soa=True)
    expect_recovery(r, new)


@pytest.mark.parametrize("rcode", RCODES)
def test_error_rcode_to_ixfr_and_axfr(r: Rig, rcode: str) -> None:
    value = dns.rcode.from_text(rcode)
    behaviour = Behaviour(rcodes={"IXFR": value, "AXFR": value})
    result = "refused" if rcode in ("REFUSED", "NOTAUTH") else "server-error"
    _, new = expect_failure(r, behaviour, "refresh", result, rcode)
    expect_recovery(r, new)


@pytest.mark.parametrize("rcode", RCODES)
def test_error_rcode_to_ixfr_falls_back_to_axfr(r: Rig, rcode: str) -> None:
    fallbacks = r.transfers("fell-back-to-axfr")
    r.primary.behaviour = Behaviour(rcodes={"IXFR": dns.rcode.from_text(rcode)})
    new = r.publish()
    r.secondary.refresh()
    r.secondary.wait_serial(new)
    assert r.transfers("fell-back-to-axfr") == fallbacks + 1


# -- IXFR content ----------------------------------------------------------------------------------


def test_ixfr_with_wrong_deletions_falls_back_to_axfr(r: Rig) -> None:
    fallbacks = r.transfers("fell-back-to-axfr")
    axfrs = r.primary.queries["AXFR"]
    r.primary.behaviour = Behaviour(fault=Fault.IXFR_BAD_DELETIONS)
    new = r.publish()
    r.secondary.refresh()
    r.secondary.wait_serial(new)
    assert r.transfers("fell-back-to-axfr") == fallbacks + 1
    assert r.primary.queries["AXFR"] == axfrs + 1


def test_ixfr_answered_with_axfr_style_content(r: Rig) -> None:
    r.primary.behaviour = Behaviour(fault=Fault.IXFR_AXFR_STYLE)
    ixfrs = r.primary.queries["IXFR"]
    new = r.publish()
    r.secondary.refresh()
    r.secondary.wait_serial(new)
    assert r.primary.queries["IXFR"] == ixfrs + 1


# -- serials ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("jump", [-5, 2**31], ids=["serial-backwards", "serial-plus-2^31"])
def test_serial_not_newer_is_not_taken(r: Rig, jump: int) -> None:
    old = r.healthy()
    r.publish((old + jump) % 2**32)
    r.secondary.refresh()
    s = r.secondary
    s.wait_for(lambda: s.status()["primary_serial"] == r.serial, "the SOA check", timeout=10)
    time.sleep(0.5)  # a transfer would start right after the SOA answer
    assert s.served_serial() == old
    # The primary moves on properly: authd follows.
    new = r.publish(old + 10)
    s.refresh()
    s.wait_serial(new)


# -- NOTIFY ----------------------------------------------------------------------------------------


async def notify_accepted(target: tuple[str, int], serial: int, key: dns.tsig.Key | None) -> bool:
    """One NOTIFY; True when authd acknowledged it (NOERROR), False on refusal or silence."""
    try:
        answer = await send_notify(target, ZONE + ".", serial, key, timeout=2.0)
    except dns.exception.DNSException:  # a TSIG error answer (BADKEY) raises in dnspython
        return False
    return answer is not None and answer.rcode() == dns.rcode.NOERROR


async def notify_burst(
    target: tuple[str, int], serial: int, count: int, key: dns.tsig.Key | None = None
) -> int:
    """`count` NOTIFYs at once; how many were acknowledged."""
    answers = await asyncio.gather(*(notify_accepted(target, serial, key) for _ in range(count)))
    return sum(answers)


def test_notify_flood_from_the_primary_is_one_refresh(r: Rig) -> None:
    r.healthy()
    soa, transfers = r.primary.queries["SOA"], r.primary.queries["IXFR"]
    new = r.publish()
    target = ("127.0.0.1", r.secondary.port)
    accepted = r.runner.run(notify_burst(target, new, 50, key=test_key()), timeout=20)
    assert accepted == 50, "every NOTIFY from the primary is acknowledged"
    r.secondary.wait_serial(new)
    time.sleep(1.0)  # let coalesced follow-ups, if any, happen
    assert r.primary.queries["IXFR"] - transfers == 1
    assert r.primary.queries["SOA"] - soa <= 2


def test_notify_flood_from_strangers_causes_no_query(r: Rig) -> None:
    r.healthy()
    soa, transfers = r.primary.queries["SOA"], r.primary.queries["IXFR"]
    target = ("127.0.0.1", r.secondary.port)
    stranger = test_key(OTHER_SECRET, "stranger")
    unsigned = r.runner.run(notify_burst(target, r.serial + 1, 30), timeout=20)
    signed = r.runner.run(notify_burst(target, r.serial + 1, 30, key=stranger), timeout=20)
    assert unsigned == 0 and signed == 0
    time.sleep(1.0)
    assert r.primary.queries["SOA"] == soa and r.primary.queries["IXFR"] == transfers


# -- recovery on the retry timer alone -------------------------------------------------------------


def test_recovers_on_the_retry_timer(r: Rig) -> None:
    # A version with SOA refresh 3600 s, retry 2 s: after the failure only the retry timer runs.
    old = r.healthy()
    r.publish(refresh=3600, retry=2)
    r.secondary.refresh()
    r.secondary.wait_serial(r.serial)
    old = r.serial
    behaviour = Behaviour(rcodes={"IXFR": dns.rcode.REFUSED, "AXFR": dns.rcode.REFUSED})
    r.primary.behaviour = behaviour
    new = r.publish(refresh=3600, retry=2)
    r.secondary.refresh()
    s = r.secondary
    s.wait_for(lambda: bool(s.status()["last_error"]), "the refused transfer", timeout=10)
    assert s.served_serial() == old
    r.primary.behaviour = Behaviour()  # no refresh command from here on
    s.wait_serial(new, timeout=8)


def test_state_dir_is_the_tests_own(rig: Rig) -> None:
    assert Path(rig.secondary.state).is_relative_to(rig.secondary.directory)
