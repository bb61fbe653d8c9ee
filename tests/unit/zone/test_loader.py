"""Tests of zone/loader.py: master-file syntax, $INCLUDE, and every load error."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import cast

import dns.zone
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authd.zone import names
from authd.zone.loader import ZoneLoadError, load_zone_file
from authd.zone.snapshot import Record
from tests.support.system import require_binary

ZONES = Path(__file__).parents[1] / "zones"
HEAD = """$ORIGIN example.com.
$TTL 300
@ IN SOA ns1 host 1 7200 900 1209600 300
@ IN NS ns1
ns1 IN A 192.0.2.1
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_loads_every_record_of_the_test_zones() -> None:
    for file in (
        "answer.zone",
        "answer.nsec.zone",
        "answer.nsec3.zone",
        "answer.nsec3-optout.zone",
    ):
        snap = load_zone_file(ZONES / file, "example.")
        reference = dns.zone.from_file(str(ZONES / file), "example.", relativize=False)
        expected = sum(len(rds) for node in reference.nodes.values() for rds in node)
        assert snap.record_count == expected
        assert sum(1 for _ in snap.records()) == expected


def test_origin_ttl_and_relative_names(tmp_path: Path) -> None:
    zone = write(
        tmp_path / "z",
        HEAD + "$TTL 60\nwww IN A 192.0.2.2\n$ORIGIN sub.example.com.\nx 30 IN TXT hi\n",
    )
    snap = load_zone_file(zone, "example.com")
    www = snap.node(names.key_from_text("www.example.com."))
    assert www is not None and www[1][0] == 60
    x = snap.node(names.key_from_text("x.sub.example.com."))
    assert x is not None and x[16][0] == 30


def test_include_is_relative_to_the_including_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "zones" / "parts" / "hosts.inc", "web IN A 192.0.2.80\n$INCLUDE deeper.inc\n")
    write(tmp_path / "zones" / "parts" / "deeper.inc", "deep IN A 192.0.2.81\n")
    zone = write(tmp_path / "zones" / "main.zone", HEAD + "$INCLUDE parts/hosts.inc\n")
    monkeypatch.chdir(tmp_path)  # neither the zone's directory nor the include's
    snap = load_zone_file(Path("zones/main.zone"), "example.com.")
    assert snap.has_data(names.key_from_text("web.example.com."))
    assert snap.has_data(names.key_from_text("deep.example.com."))
    assert zone.exists()


def test_cname_beside_other_data_is_reported_not_replaced(tmp_path: Path) -> None:
    zone = write(tmp_path / "z", HEAD + "www IN A 192.0.2.2\nwww IN CNAME web\n")
    with pytest.raises(ZoneLoadError) as error:
        load_zone_file(zone, "example.com.")
    message = str(error.value)
    assert str(zone) in message
    assert "www.example.com/CNAME: CNAME beside other data" in message
    assert "line 6" in message  # where www first appeared


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEAD + "www IN A not-an-address\n", ".zone:"),
        (HEAD + "www IN BOGUSTYPE x\n", ".zone:6: unknown rdatatype"),
        (HEAD + "www.example.org. IN A 192.0.2.1\n", ":6: www.example.org. is outside the zone"),
        (HEAD + "@ IN SOA ns2 host 2 7200 900 1209600 300\n", "exactly one SOA"),
        ("$ORIGIN example.com.\n@ 300 IN NS ns1\nns1 300 IN A 192.0.2.1\n", "exactly one SOA"),
        ("$ORIGIN example.com.\n@ 300 IN SOA ns1 host 1 7200 900 1209600 300\n", "apex has no NS"),
    ],
)
def test_load_errors_name_file_and_line_or_rule(tmp_path: Path, text: str, expected: str) -> None:
    zone = write(tmp_path / "bad.zone", text)
    with pytest.raises(ZoneLoadError) as error:
        load_zone_file(zone, "example.com.")
    assert str(zone) in str(error.value)
    assert expected in str(error.value)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.zone"
    with pytest.raises(ZoneLoadError, match=r"nope\.zone: cannot read"):
        load_zone_file(missing, "example.com.")
    binary = tmp_path / "binary.zone"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ZoneLoadError, match=r"binary\.zone"):
        load_zone_file(binary, "example.com.")


def test_large_zone_loads_in_bounded_time(tmp_path: Path) -> None:
    count = 20_000
    lines = [HEAD] + [
        f"h{i} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n" for i in range(count)
    ]
    zone = write(tmp_path / "big.zone", "".join(lines))
    started = time.perf_counter()
    snap = load_zone_file(zone, "example.com.")
    elapsed = time.perf_counter() - started
    assert snap.record_count == count + 3
    assert snap.node(names.key_from_text(f"h{count - 1}.example.com.")) is not None
    assert elapsed < 30, f"{count} records took {elapsed:.1f}s"
    print(f"loaded {count} records in {elapsed:.2f}s ({count / elapsed:,.0f} records/s)")


# -- the fast reader against dnspython's (load_zone_file(fast=False)) ---------------------

REPO = Path(__file__).resolve().parents[3]


def outcome(path: Path, origin: str, fast: bool) -> tuple[str, object]:
    """Every record of the loaded snapshot, or the error message."""
    try:
        snap = load_zone_file(path, origin, fast=fast)
    except ZoneLoadError as error:
        return ("error", str(error))
    return ("ok", (snap.record_count, list(snap.records())))


def assert_same(path: Path, origin: str) -> tuple[str, object]:
    slow = outcome(path, origin, fast=False)
    quick = outcome(path, origin, fast=True)
    assert quick == slow
    return quick


@pytest.mark.parametrize(
    ("relative", "origin"),
    [
        ("zones/example.test.zone", "example.test."),
        ("tests/unit/zones/answer.zone", "example."),
        ("tests/unit/zones/answer.nsec.zone", "example."),
        ("tests/unit/zones/answer.nsec3.zone", "example."),
        ("tests/unit/zones/answer.nsec3-optout.zone", "example."),
        ("tests/interop/zones/rich.zone", "example."),
    ],
)
def test_fast_reader_matches_dnspython_on_the_repository_zones(relative: str, origin: str) -> None:
    kind, _ = assert_same(REPO / relative, origin)
    assert kind == "ok"


TRICKY = r"""; every converted type, and the syntax around them
$ORIGIN Example.COM.
$TTL 1h
@ IN SOA ns1.Example.COM. hostmaster.example.com. (
        2026010101 ; serial
        3600 900 1209600 300 )
@               NS      ns1
                NS      NS2.example.net.
ns1  300 IN     A       192.0.2.1
ns1  IN  300    AAAA    2001:DB8::1
ns1             AAAA    ::ffff:192.0.2.1
NS1 in a 192.0.2.2
\065bc\.d    IN  TXT  "esc\"aped" \; "\010\255" ""
*.wild       IN  A    192.0.2.9
sub          IN  NS   ns.sub
ns.sub       IN  A    192.0.2.10
alias        IN  CNAME www.Example.COM.
www          IN  A    192.0.2.11
mail         IN  MX   10 mail
             IN  MX   20 @
_sip._tcp    IN  SRV  0 5 5060 sip
sip          IN  A    192.0.2.12
ptr          IN  PTR  host.example.net.
dn           IN  DNAME target.example.net.
caa          IN  CAA  0 issue "letsencrypt.org"
caa          IN  CAA  128 iodef mailto:sec@example.com
_25._tcp     IN  TLSA 3 1 1 ( 0a0b0c0d0e0f10111213141516171819
                             1a1b1c1d1e1f20212223242526272829 )
ssh          IN  SSHFP 4 2 1212121212121212121212121212121212121212121212121212121212121212
signed       IN  DS   60485 5 1 2BB183AF5F22588179A53B0A98631FAD1A292118
signed       IN  DS   20303 ECDSAP256SHA256 2 ( abababababababababababababababab
                                                 CDCDCDCDCDCDCDCDCDCDCDCDCDCDCDCD )
@            IN  DNSKEY 257 3 13 ( mdsswUyr3DPW132mOi8V9xESWE8jTo0d
                                   xCjjnopKl+GqJxpVXckHAeF+KkxLbxIL
                                   fDLUT0rAK9iUzy1L53eKGQ== ) ; KSK
@  3600 IN RRSIG SOA 13 2 3600 20400101000000 20260101000000 20303 example.com. (
                  Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmFyYmF6 )
@  IN 3600 RRSIG NS ECDSAP256SHA256 2 3600 2208988800 1700000000 20303 @ QUJD
www          IN  NSEC   Z.example.com. A RRSIG NSEC TYPE65534
@            IN  NSEC3PARAM 1 0 0 -
0p9mhaveqvm6t7vbl5lop2u3t2rp3tom IN NSEC3 1 1 10 AABBCCDD ( 0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM
                                                          A RRSIG )
; types dnspython reads for us
hinfo        IN  HINFO "PC" "Linux"
svc          IN  SVCB 1 . alpn=h2
https        IN  HTTPS 1 . alpn="h3,h2" port=443
gen          IN  TYPE65534 \# 3 010203
loc          IN  LOC  52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m
generic-a    IN  TYPE1 \# 4 c0000263
$GENERATE 1-3 gen$ IN A 192.0.2.$
bücher       IN  A    192.0.2.20
txt8         IN  TXT  "naïve"
$ORIGIN deeper
x            IN  A    192.0.2.30
$ORIGIN example.com.
$TTL 2d
late         A 192.0.2.40
late         60 A 192.0.2.41
last         CH A 192.0.2.42
"""


def test_fast_reader_matches_dnspython_on_every_type_and_tricky_syntax(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The CH record makes both fail; without it both load the rest identically.
    broken = write(tmp_path / "tricky.zone", TRICKY)
    kind, message = assert_same(broken, "example.com.")
    line = TRICKY.splitlines().index("last         CH A 192.0.2.42") + 1
    assert kind == "error" and f":{line}: RR class is not zone's class" in str(message)
    good = write(tmp_path / "good.zone", TRICKY.replace("last         CH A", "last IN A"))
    kind, loaded = assert_same(good, "example.com.")
    assert kind == "ok"
    count, records = cast(tuple[int, list[Record]], loaded)
    assert count == len(records) > 40
    # Only the entries the fast reader must not guess at went to dnspython: the six
    # types it does not convert, $GENERATE, two lines of UTF-8 text and the IPv4-in-IPv6.
    with caplog.at_level(logging.DEBUG, logger="authd.zone.loader"):
        load_zone_file(good, "example.com.")
    assert "good.zone: 10 entries read by dnspython" in caplog.text
    types = {rtype for _, rtype, _, _ in records}
    assert {1, 2, 5, 6, 12, 15, 16, 28, 33, 39, 43, 44, 46, 47, 48, 50, 51, 52, 257} <= types


def test_fast_reader_matches_dnspython_on_includes_and_ttl_defaults(tmp_path: Path) -> None:
    write(
        tmp_path / "parts" / "a.inc",
        "$TTL 77\nin-a IN A 192.0.2.1\n  IN AAAA ::1\n$INCLUDE b.inc sub\nafter-b A 192.0.2.3\n",
    )
    write(tmp_path / "parts" / "b.inc", "$ORIGIN x.example.com.\nin-b 5 IN A 192.0.2.2\n")
    zone = write(
        tmp_path / "main.zone",
        # No $TTL: the SOA MINIMUM becomes the default, the last explicit TTL wins (RFC 2308).
        "$ORIGIN example.com.\n@ 100 IN SOA ns1 host 1 2 3 4 55\n@ NS ns1\nns1 A 192.0.2.9\n"
        "$INCLUDE parts/a.inc\n  IN TXT after-include\nback A 192.0.2.4\n"
        '$INCLUDE "parts/a.inc"\n',
    )
    # A quoted $INCLUDE path is taken as it is (relative to the working directory): both fail.
    kind, message = assert_same(zone, "example.com.")
    assert kind == "error" and "cannot read" in str(message)
    zone.write_text(zone.read_text().replace('"parts/a.inc"', "parts/a.inc other"))
    kind, _ = assert_same(zone, "example.com.")
    assert kind == "ok"
    snap = load_zone_file(zone, "example.com.")
    assert snap.node(names.key_from_text("in-b.x.example.com."))[1][0] == 5  # type: ignore[index]
    assert snap.node(names.key_from_text("back.example.com."))[1][0] == 100  # type: ignore[index]


BROKEN = [
    "www IN A 192.0.2.300\n",
    "www IN A\n",
    "www IN A 192.0.2.1 extra\n",
    "www IN BOGUSTYPE x\n",
    "www CH A 192.0.2.1\n",
    "www.example.org. IN A 192.0.2.1\n",
    "www IN MX ( 10\n mail\n extra )\n",
    'www IN TXT "unterminated\nnext IN A 192.0.2.1\n',
    'www IN TXT ( "open paren"\nnext IN A 192.0.2.1\n',
    "www IN A 192.0.2.1 )\n",
    "www IN CNAME web\nwww IN A 192.0.2.2\n",
    "a..b IN A 192.0.2.1\n",
    "\\999 IN A 192.0.2.1\n",
    ("x" * 64) + " IN A 192.0.2.1\n",
    "$TTL bogus\n",
    "$ORIGIN a..b\n",
    "$FOO bar\n",
    "$INCLUDE\n",
    "$INCLUDE missing.inc\n",
    "www 99999999999 IN A 192.0.2.1\n",
    "www IN DS 1 5 1 abcd\n",
    "www IN NSEC3 1 0 0 - 01 A\n",
    "www IN RRSIG A 13 2 3600 20401301000000 20260101000000 20303 example.com. QUJD\n",
    "www IN A 192.0.2.300",  # no newline at the end
    "www IN A",
    '"quoted" IN TXT x\n',
]


@pytest.mark.parametrize("tail", BROKEN)
def test_fast_reader_reports_errors_exactly_as_dnspython(tmp_path: Path, tail: str) -> None:
    zone = write(tmp_path / "bad.zone", HEAD + tail)
    quick = outcome(zone, "example.com.", fast=True)
    slow = outcome(zone, "example.com.", fast=False)
    assert quick == slow
    assert quick[0] == "error"


def test_missing_default_ttl_is_reported_as_dnspython_does(tmp_path: Path) -> None:
    zone = write(tmp_path / "nottl.zone", "$ORIGIN example.com.\nwww IN A 192.0.2.1\n")
    kind, message = assert_same(zone, "example.com.")
    # dnspython notices after reading the record's end of line, so it names the next line.
    assert kind == "error" and "nottl.zone:3: Missing default TTL value" in str(message)


record_lines = st.sampled_from(
    [
        "www IN A 192.0.2.1",
        "www 60 A 192.0.2.2",
        "  IN AAAA 2001:db8::1",
        '  300 TXT "a b" c',
        "WWW.example.com. IN 30 MX 10 mail",
        "mail IN A 192.0.2.3",
        "x\\.y IN TXT ( one\n two ) ; comment",
        "$TTL 90",
        "$ORIGIN sub.example.com.",
        "$ORIGIN example.com.",
        "@ IN NS ns1",
        "svc IN SVCB 1 . alpn=h2",
        "bad IN A 1.2.3",
        "z IN CNAME www",
        "; nothing",
        "",
        "w\\ IN A 192.0.2.4",
        "out.example.net. IN A 192.0.2.5",
        "n IN NSEC next A NS",
        'q IN TXT "x',
    ]
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(record_lines, max_size=12))
def test_fast_reader_matches_dnspython_on_random_files(tmp_path: Path, lines: list[str]) -> None:
    zone = write(tmp_path / "random.zone", HEAD + "\n".join(lines) + "\n")
    assert_same(zone, "example.com.")


def test_fast_reader_matches_dnspython_on_a_signed_bind_zone(tmp_path: Path) -> None:
    """dnssec-signzone writes multi-line RRSIG, DNSKEY and NSEC3 records with comments."""
    keygen = require_binary("dnssec-keygen")
    signer = require_binary("dnssec-signzone")
    source = (REPO / "tests/interop/zones/rich.zone").read_text()
    unsigned = write(tmp_path / "rich.zone", "$ORIGIN example.\n" + source)
    made = subprocess.run(
        [keygen, "-K", str(tmp_path), "-a", "ECDSAP256SHA256", "-f", "KSK", "example."],
        capture_output=True, text=True, timeout=30, check=True, cwd=tmp_path,
    )  # fmt: skip
    key = made.stdout.strip()
    # cwd: the signer writes dsset-example. beside it.
    for extra in ([], ["-3", "-", "-H", "0"]):
        signed = tmp_path / "signed.zone"
        subprocess.run(
            [signer, "-K", str(tmp_path), "-o", "example.", "-z", "-f", str(signed), "-S", *extra,
             str(unsigned)],
            capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path,
        )  # fmt: skip
        assert "(" in signed.read_text() and key
        kind, _ = assert_same(signed, "example.")
        assert kind == "ok"
