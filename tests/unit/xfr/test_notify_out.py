"""Tests of xfr/notify_out.py: the schedule (pure, time passed in) and the UDP shell
against a loopback downstream that answers like Knot (signed, or not at all)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from dataclasses import dataclass, field

import dns.message
import dns.opcode
import dns.rcode
import dns.tsig
import pytest

from authd.clock import FakeClock
from authd.config import Endpoint, Remote
from authd.keys import TsigKey
from authd.xfr import notify_out
from authd.xfr.notify import parse_notify
from authd.xfr.notify_out import NotifySchedule, NotifySender, Target
from authd.xfr.stream import sign_message
from authd.zone import names
from tests.support.outbound import QKEY, soa

SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
EDGE1 = Target("edge1", "192.0.2.1", 53)
EDGE2 = Target("edge2", "192.0.2.2", 53)
SOA = (300, soa(7)[3])


def test_a_round_starts_after_the_delay_and_every_target_gets_one_notify() -> None:
    schedule = NotifySchedule()
    schedule.published(QKEY, 7, SOA, [EDGE1, EDGE2], now=100.0, delay=2.0)
    assert schedule.due(101.9) == ([], [])
    assert schedule.next_wake() == 102.0
    sends, outcomes = schedule.due(102.0)
    assert [(s.target, s.serial, s.attempt) for s in sends] == [(EDGE1, 7, 1), (EDGE2, 7, 1)]
    assert outcomes == []
    outcome = schedule.answered(QKEY, 7, EDGE1, "ok")
    assert outcome is not None and (outcome.result, outcome.attempts) == ("ok", 1)
    assert schedule.answered(QKEY, 7, EDGE1, "ok") is None  # a late duplicate


def test_retransmission_grows_then_gives_up() -> None:
    schedule = NotifySchedule(retry_after=(1.0, 2.0, 4.0))
    schedule.published(QKEY, 7, SOA, [EDGE1], now=0.0, delay=0.0)
    sent_at = []
    now = 0.0
    outcomes: list[notify_out.Outcome] = []
    while schedule.rounds:
        now = schedule.next_wake() or now
        sends, outcomes = schedule.due(now)
        sent_at += [now for _ in sends]
    assert sent_at == [0.0, 1.0, 3.0]  # intervals 1, 2 (growing); then 4 s for the last
    assert [(o.result, o.attempts) for o in outcomes] == [("timeout", 3)]
    assert now == 7.0


def test_a_burst_of_publishes_sends_one_round_with_the_newest_serial() -> None:
    schedule = NotifySchedule()
    for serial, at in ((7, 0.0), (8, 0.5), (9, 0.9)):
        schedule.published(QKEY, serial, SOA, [EDGE1], now=at, delay=1.0)
    sends, _ = schedule.due(1.0)  # the first publish's start time is kept
    assert [(s.serial, s.attempt) for s in sends] == [(9, 1)]


def test_a_publish_during_a_round_restarts_it_with_the_new_serial() -> None:
    schedule = NotifySchedule()
    schedule.published(QKEY, 7, SOA, [EDGE1, EDGE2], now=0.0, delay=0.0)
    schedule.due(0.0)
    schedule.answered(QKEY, 7, EDGE1, "ok")
    schedule.published(QKEY, 8, SOA, [EDGE1, EDGE2], now=0.5, delay=0.0)
    assert schedule.answered(QKEY, 7, EDGE2, "ok") is None  # the old serial is not awaited
    sends, _ = schedule.due(0.5)
    assert sorted((s.target.remote, s.serial, s.attempt) for s in sends) == [
        ("edge1", 8, 1),
        ("edge2", 8, 1),
    ]


def test_many_zones_each_get_exactly_one_outcome_per_target() -> None:
    """Start-up publishes every zone at once: answered ones end, the others time out."""
    schedule = NotifySchedule(retry_after=(1.0, 2.0))
    zones = [names.key_from_text(f"z{i}.example.") for i in range(2000)]
    for zone in zones:
        schedule.published(zone, 7, SOA, [EDGE1, EDGE2], now=0.0, delay=0.0)
    sends, _ = schedule.due(0.0)
    assert len(sends) == 4000 and {s.attempt for s in sends} == {1}
    for zone in zones[:1000]:
        assert schedule.answered(zone, 7, EDGE1, "ok") is not None
        assert schedule.answered(zone, 7, EDGE2, "ok") is not None
    assert schedule.next_wake() == 1.0  # answered targets' entries are skipped, not woken
    resent, _ = schedule.due(1.0)
    assert len(resent) == 2000 and {s.zone for s in resent} == set(zones[1000:])
    _, outcomes = schedule.due(3.0)
    assert len(outcomes) == 2000 and {o.result for o in outcomes} == {"timeout"}
    assert schedule.next_wake() is None and not schedule.rounds


def test_no_targets_means_no_round() -> None:
    schedule = NotifySchedule()
    schedule.published(QKEY, 7, SOA, [], now=0.0, delay=0.0)
    assert schedule.next_wake() is None and not schedule.rounds


def test_targets_of_every_address_of_every_remote() -> None:
    key = TsigKey("k.", "hmac-sha256", b"x" * 32)
    remotes = [
        Remote("a", (Endpoint("192.0.2.1", 53), Endpoint("2001:db8::1", 5300)), key, None),
        Remote("b", (Endpoint("192.0.2.2", 53),), None, Endpoint("192.0.2.100", 0)),
    ]
    targets = notify_out.targets_of(remotes)
    assert [(t.remote, t.address, t.key, t.source) for t in targets] == [
        ("a", "192.0.2.1@53", key, None),
        ("a", "2001:db8::1@5300", key, None),
        ("b", "192.0.2.2@53", None, "192.0.2.100"),
    ]


# -- the shell, on loopback -------------------------------------------------------------

KEY = TsigKey("down-key.", "hmac-sha256", b"secretsecretsecretsecretsecret12")
NOW = 1_800_000_000.0


@dataclass
class Downstream(asyncio.DatagramProtocol):
    """A secondary: records every NOTIFY; answers (signed) once `answer` is set."""

    answer: bool = False
    rcode: int = dns.rcode.NOERROR
    received: list[bytes] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        if not self.answer or self.transport is None:
            return
        request = parse_notify(data, {KEY.name: KEY.to_dnspython()}, NOW)
        flags = 0x8000 | (4 << 11) | 0x0400 | self.rcode
        reply = data[:2] + flags.to_bytes(2) + b"\x00\x01\x00\x00\x00\x00\x00\x00"
        reply += request.question
        signed, _ = sign_message(reply, KEY.to_dnspython(), NOW, request_mac=request.request_mac)
        self.transport.sendto(signed, addr)


@dataclass(eq=False)  # hashable by identity, as App is
class Host:
    clock: FakeClock
    stats: object


@dataclass
class Stats:
    notifies_sent: Counter[tuple[str, str, str]] = field(default_factory=Counter)


async def wait_until(condition: object, tries: int = 300) -> bool:
    for _ in range(tries):
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return False


def zone_config(port: int, delay: float = 0.0) -> object:
    from authd.config import ZoneConfig

    remote = Remote("edge1", (Endpoint("127.0.0.1", port),), KEY, None)
    fields = {f: None for f in ZoneConfig.__dataclass_fields__}
    fields.update(name="example.com", origin=QKEY, notify=(remote,), notify_delay=delay)
    return ZoneConfig(**fields)  # type: ignore[arg-type]


def test_sender_retransmits_until_answered_and_counts_the_result() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        down = Downstream()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: down, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        clock = FakeClock(now=NOW)
        stats = Stats()
        sender = NotifySender(clock, stats, retry_after=(1.0, 2.0, 4.0))
        sender.published(zone_config(port), 7, SOA)  # type: ignore[arg-type]
        assert await wait_until(lambda: len(down.received) == 1)
        request = parse_notify(down.received[0], {KEY.name: KEY.to_dnspython()}, NOW)
        assert (request.zone, request.serial, request.key) == (QKEY, 7, "down-key.")
        message = dns.message.from_wire(down.received[0], keyring=False)  # type: ignore[arg-type]
        assert message.opcode() == dns.opcode.NOTIFY and message.flags & 0x0400
        # No answer: the next attempt goes out once the clock passes the first interval.
        clock.advance(1.0)
        down.answer = True
        sender.poke()
        assert await wait_until(lambda: stats.notifies_sent[("example.com", "edge1", "ok")] == 1)
        assert len(down.received) == 2
        assert not sender.schedule.rounds and not sender._sockets  # idle: socket closed
        sender.close()
        transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_an_error_answer_ends_the_round_with_its_rcode() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        down = Downstream(answer=True, rcode=dns.rcode.NOTAUTH)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: down, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        stats = Stats()
        host = Host(FakeClock(now=NOW), stats)
        notify_out.after_publish(host, zone_config(port), 7, SOA)  # type: ignore[arg-type]
        assert await wait_until(lambda: stats.notifies_sent[("example.com", "edge1", "notauth")])
        assert len(down.received) == 1
        notify_out.close(host)
        transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_a_response_that_does_not_verify_is_bad_tsig() -> None:
    request = notify_out.notify_message(99, QKEY, *SOA)
    key = KEY.to_dnspython()
    _, mac = sign_message(request, key, NOW)
    reply = bytearray(request[:12])
    reply[2:4] = (0x8000 | (4 << 11) | 0x0400).to_bytes(2)
    reply[6:8] = b"\x00\x00"
    question = request[12 : request.index(b"\x00\x06\x00\x01") + 4]
    answer, _ = sign_message(bytes(reply) + question, key, NOW, request_mac=mac)
    assert notify_out.response_result(answer, 99, QKEY, key, mac, NOW) == "ok"
    assert notify_out.response_result(answer, 98, QKEY, key, mac, NOW) is None  # not ours
    assert notify_out.response_result(answer, 99, QKEY, key, b"x" * 32, NOW) == "bad-tsig"
    unsigned = bytes(reply) + question
    assert notify_out.response_result(unsigned, 99, QKEY, key, mac, NOW) == "bad-tsig"
    assert notify_out.response_result(unsigned, 99, QKEY, None, b"", NOW) == "ok"


@pytest.mark.parametrize("rcode", [dns.rcode.REFUSED, dns.rcode.SERVFAIL])
def test_rcode_results(rcode: int) -> None:
    request = notify_out.notify_message(5, QKEY, *SOA)
    reply = bytearray(request)
    reply[2:4] = (0x8000 | (4 << 11) | rcode).to_bytes(2)
    result = notify_out.response_result(bytes(reply), 5, QKEY, None, b"", NOW)
    assert result == dns.rcode.to_text(rcode).lower()


def test_notify_waits_for_the_workers_and_a_newer_publish_supersedes() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        down = Downstream(answer=True)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: down, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        stats = Stats()
        sender = NotifySender(FakeClock(now=NOW), stats)
        first: asyncio.Future[bool] = loop.create_future()
        second: asyncio.Future[bool] = loop.create_future()
        sender.published_when_applied(zone_config(port), 7, SOA, first)  # type: ignore[arg-type]
        soa8 = (300, soa(8)[3])
        sender.published_when_applied(zone_config(port), 8, soa8, second)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert down.received == []  # nothing before the workers serve the version
        second.set_result(True)
        assert await wait_until(lambda: stats.notifies_sent[("example.com", "edge1", "ok")] == 1)
        first.set_result(True)  # late: superseded by the publish of serial 8
        await asyncio.sleep(0.05)
        serials = [
            parse_notify(d, {KEY.name: KEY.to_dnspython()}, NOW).serial for d in down.received
        ]
        assert serials == [8]
        sender.close()
        transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_results_are_exported_as_metrics() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from authd.metrics import AuthdCollector, ControlPlaneStats, ZoneFacts, make_registry

    stats = ControlPlaneStats()
    stats.notifies_sent[("example.com", "edge1", "ok")] += 2
    stats.notifies_sent[("example.com", "edge2", "timeout")] += 1
    facts = [ZoneFacts("example.com", "ok", 7, None, 0.0, None, None)]
    workers = {"xfrout.ixfr": 3, "xfrout.refused": 1}
    collector = AuthdCollector(stats, lambda: facts, lambda: workers, now=lambda: 10.0)
    text = generate_latest(make_registry(collector)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    sent = "authd_xfr_notifies_sent_total"
    assert samples[(sent, (("remote", "edge1"), ("result", "ok"), ("zone", "example.com")))] == 2
    key = (("remote", "edge2"), ("result", "timeout"), ("zone", "example.com"))
    assert samples[(sent, key)] == 1
    assert samples[("authd_xfr_outbound_total", (("result", "ixfr"),))] == 3
    assert samples[("authd_xfr_outbound_total", (("result", "refused"),))] == 1


def test_versions_loaded_at_start_up_are_notified_once_the_workers_serve() -> None:
    @dataclass(eq=False)
    class Starting:
        clock: FakeClock
        stats: Stats
        pool: object | None = None  # App.pool: None until the workers are forked

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        down = Downstream(answer=True)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: down, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        host = Starting(FakeClock(now=NOW), Stats())
        notify_out.after_publish(host, zone_config(port), 7, SOA)  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        assert down.received == []  # no worker answers yet: nothing is announced
        host.pool = object()
        assert await wait_until(lambda: host.stats.notifies_sent[("example.com", "edge1", "ok")])
        assert len(down.received) == 1
        notify_out.close(host)
        transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
