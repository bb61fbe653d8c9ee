"""Tests of xfr/ixfr_from_axfr.py: an AXFR'd version stored as a computed diff keeps IXFR
possible for downstreams; the fall-backs to a full copy."""

from __future__ import annotations

from pathlib import Path

from authd.xfr.ixfr_from_axfr import store_version
from authd.xfr.stream import TYPE_IXFR, Kind
from authd.zone.journal import VersionMeta
from authd.zone.store import Store
from tests.support.outbound import NOW, ORIGIN, QKEY, ask, build, rec, receive, responder, soa, zone

AXFR = VersionMeta("AXFR", NOW, "provider")


def test_an_axfr_replacing_a_version_is_journaled_as_its_diff(tmp_path: Path) -> None:
    v1 = zone(serial=1, hosts=80)
    # The "AXFR" of serial 2: a whole new version built from records, one host changed.
    h5 = rec(f"h5.{ORIGIN}", "A", "198.51.100.5")
    records = [r for r in v1.records() if r[1] != 6 and r != h5]
    v2 = build([soa(2), *records, rec(f"h5.{ORIGIN}", "A", "203.0.113.5")])
    with Store(tmp_path) as store:
        store.save_full(v1, AXFR)
        stored = store_version(store, v1, v2, AXFR)
        assert stored.journaled, stored.reason
    with Store(tmp_path) as store:
        loaded = store.load(QKEY)
        assert loaded is not None and loaded.journal_entries == 1
        assert sorted(loaded.snapshot.records()) == sorted(v2.records())
    # A downstream at serial 1 now gets an IXFR, not the whole zone.
    messages, mac = ask(responder(tmp_path, v2), "IXFR", 1)
    got = receive(messages, TYPE_IXFR, v1, mac)
    assert got.kind is Kind.IXFR and got.snapshot is not None
    assert sorted(got.snapshot.records()) == sorted(v2.records())


def test_fall_backs_to_a_full_copy(tmp_path: Path) -> None:
    v1 = zone(serial=1, hosts=40)
    with Store(tmp_path) as store:
        assert store_version(store, None, v1, AXFR).reason == "no previous version"
        again = zone(serial=1, hosts=41)
        assert store_version(store, v1, again, AXFR).reason == "the serial did not move forward"
        other = zone(serial=5, hosts=5)  # nearly everything changed
        assert "outweighs" in store_version(store, again, other, AXFR).reason
        assert store.tip_serial(QKEY) == 5
        stale = zone(serial=3, hosts=5)
        assert store_version(store, stale, zone(serial=4, hosts=5), AXFR).reason == (
            "the stored version is not the one replaced"
        )
        loaded = store.load(QKEY)
        assert loaded is not None and loaded.snapshot.serial == 4 and loaded.journal_entries == 0
