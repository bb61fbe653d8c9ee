"""dnsperf's command line and the parsing of its report, and the CLI's argument parsers."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from authd.bench import drivers
from authd.bench.cli import parse_cpus, parse_target

# The shape dnsperf 2.10 prints with -v (per-query lines) and its statistics block.
DNSPERF_OUTPUT = """DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 39191 -d q.txt -l 1 -Q 5 -v -e
[Status] Sending queries (to 127.0.0.1:39191)
[Status] Stopping after 1.000000 seconds
> NOERROR host000001.bench.test. A 0.000147
> NXDOMAIN nope.bench.test. A 0.000190
> NOERROR host000001.bench.test. A 0.000152
> NXDOMAIN nope.bench.test. A 0.000161
> NOERROR host000001.bench.test. A 0.000178
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         6
  Queries completed:    5 (83.33%)
  Queries lost:         1 (16.67%)

  Response codes:       NOERROR 3 (60.00%), NXDOMAIN 2 (40.00%)
  Average packet size:  request 47, response 77
  Run time (s):         1.000215
  Queries per second:   4.998925
"""


def test_parse_output() -> None:
    result = drivers.parse_output(DNSPERF_OUTPUT, rate=5.0)
    assert (result.sent, result.completed, result.lost) == (6, 5, 1)
    assert result.seconds == pytest.approx(1.000215)
    assert result.rcodes == {"NOERROR": 3, "NXDOMAIN": 2}
    assert result.latencies_ms == pytest.approx((0.147, 0.190, 0.152, 0.161, 0.178))
    assert result.p50_ms == pytest.approx(0.161)
    assert result.p99_ms == pytest.approx(0.190)
    assert result.target_qps == 5.0
    with pytest.raises(drivers.DnsperfError):
        drivers.parse_output("dnsperf: error: could not open file\n")


def test_argv() -> None:
    job = drivers.DnsperfJob("::1", 5300, Path("q.txt"), 2.5, do=True, tcp=True, rate=1000.4)
    args = drivers.argv("dnsperf", job)
    assert args[:7] == ["dnsperf", "-s", "::1", "-p", "5300", "-d", "q.txt"]
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["-l"] == "2.5" and pairs["-q"] == "100" and pairs["-T"] == "1"
    assert "-D" in args and "-e" in args
    assert args[args.index("-m") + 1] == "tcp"
    assert args[args.index("-Q") + 1] == "1000" and args[-1] == "-v"
    plain = drivers.argv("dnsperf", drivers.DnsperfJob("127.0.0.1", 53, Path("q"), 1))
    assert "-D" not in plain and "-m" not in plain and "-Q" not in plain


def test_parse_target() -> None:
    assert parse_target("127.0.0.1:5300") == ("127.0.0.1", 5300)
    assert parse_target("127.0.0.1@5300") == ("127.0.0.1", 5300)
    assert parse_target("[::1]:5353") == ("::1", 5353)
    assert parse_target("::1@5353") == ("::1", 5353)
    assert parse_target("::1") == ("::1", 53)
    assert parse_target("192.0.2.1") == ("192.0.2.1", 53)
    for bad in ("ns1.example:53", "127.0.0.1:99999", "127.0.0.1:port"):
        with pytest.raises(click.BadParameter):
            parse_target(bad)


def test_parse_cpus() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("0,2") == {0, 2}
    assert parse_cpus("2-4,7") == {2, 3, 4, 7}
    with pytest.raises(click.BadParameter):
        parse_cpus("one")
