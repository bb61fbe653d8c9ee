"""Tests of zone/loader.py: master-file syntax, $INCLUDE, and every load error."""

from __future__ import annotations

import time
from pathlib import Path

import dns.zone
import pytest

from authd.zone import names
from authd.zone.loader import ZoneLoadError, load_zone_file

ZONES = Path(__file__).parent / "zones"
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
        expected = sum(len(rds) for _, node in reference.items() for rds in node)
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
