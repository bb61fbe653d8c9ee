"""Catalog zones end to end (issue 15): knotd generates an RFC 9432 catalog (catalog-role:
generate) and is the primary of the catalog and its members; authd consumes it.

Adding a member zone on knotd (knotc conf-set) makes authd serve it; removing it makes authd
stop serving it within 1 s of taking the catalog update; the member's group picks a template
(on-expire = "servfail" with short timers); after a restart with knotd down every member
serves from its stored copy, and only the servfail group's member stops answering at expiry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from authd import control
from authd.bench.peers import free_port
from authd.bench.primaries import (
    HOST,
    KEY,
    AuthdSecondary,
    KnotPrimary,
    SecondaryZone,
    keyring,
    knot_preamble,
    query,
    served_serial,
    wait_for,
    write_zone,
)
from authd.bench.servers import running, start_named
from tests.support.system import require_binary

CATZ = "catz.test"
STRICT = """
[[template]]
id = "strict"
on-expire = "servfail"
refresh-min = 1
refresh-max = 1
retry-max = 1
expire-max = 5
"""


@dataclass
class CatalogPrimary(KnotPrimary):
    """knotd with a generated catalog: every zone in `zones` is a member; `groups` by zone."""

    groups: dict[str, str] | None = None

    def config_text(self) -> str:
        zones = ""
        for zone, path in self.zones.items():
            zones += (
                f'  - domain: "{zone}."\n    file: "{path}"\n    catalog-role: member\n'
                f'    catalog-zone: "{CATZ}."\n'
            )
            group = (self.groups or {}).get(zone)
            if group:
                zones += f'    catalog-group: "{group}"\n'
        authd_host, authd_port = self.notify[0]
        return (
            knot_preamble(self.workdir, self.port)
            + f"""remote:
  - id: authd
    address: {authd_host}@{authd_port}
    key: {KEY.name}
acl:
  - id: xfr
    key: {KEY.name}
    action: transfer
template:
  - id: default
    storage: "{self.workdir}/db"
    zonefile-sync: -1
    zonefile-load: whole
    acl: xfr
    notify: authd
zone:
  - domain: "{CATZ}."
    catalog-role: generate
{zones}"""
        )

    def add_member(self, zone: str, path: Path) -> None:
        self.control("conf-begin")
        for item, value in (
            ("", None),
            ("file", str(path)),
            ("catalog-role", "member"),
            ("catalog-zone", f"{CATZ}."),
        ):
            key = f"zone[{zone}.]" + (f".{item}" if item else "")
            self.control("conf-set", key, *([value] if value else []))
        self.control("conf-commit")

    def remove_member(self, zone: str) -> None:
        self.control("conf-begin")
        self.control("conf-unset", f"zone[{zone}.]")
        self.control("conf-commit")


class CatalogSecondary(AuthdSecondary):
    def config_text(self) -> str:
        return super().config_text() + STRICT


def catalog_served(port: int) -> bool:
    """knotd answers queries for a catalog it generates over TCP only, to its transfer ACL."""
    request = dns.message.make_query(CATZ + ".", "SOA")
    request.use_tsig(keyring(), keyname=KEY.name)
    try:
        return dns.query.tcp(request, HOST, port=port, timeout=0.5).rcode() == dns.rcode.NOERROR
    except (OSError, dns.exception.DNSException):
        return False


def rcode(port: int, zone: str) -> int | None:
    response = query(HOST, port, zone + ".", timeout=1.0)
    return response.rcode() if response is not None else None


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[CatalogPrimary, CatalogSecondary]]:
    knotd, knotc = require_binary("knotd"), require_binary("knotc")
    zones = {z: write_zone(tmp_path / f"{z}.zone", z, 1) for z in ("one.test", "two.test")}
    primary_port = free_port(HOST)
    authd = CatalogSecondary(
        tmp_path / "authd",
        [SecondaryZone(CATZ, [(HOST, primary_port)], {"catalog": True})],
    )
    primary = CatalogPrimary(
        knotd,
        knotc,
        tmp_path / "knotd",
        zones,
        primary_port,
        notify=[authd.address],
        groups={"two.test": "strict"},
    )
    primary.start()
    try:
        assert wait_for(lambda: catalog_served(primary_port), 10.0), primary.log()
        authd.start()
        try:
            yield primary, authd
        finally:
            authd.stop()
    finally:
        primary.stop()


def test_knotd_catalog_members_added_removed_grouped_and_kept(
    setup: tuple[CatalogPrimary, CatalogSecondary], tmp_path: Path
) -> None:
    primary, authd = setup
    # The catalog's members are served after their first transfer.
    for zone in ("one.test", "two.test"):
        assert authd.wait_serial(zone, 1, timeout=15), f"{zone} not served:\n{authd.log()}"
    two = authd.status("two.test")
    assert two["catalog"] == CATZ and two["group"] == "strict", two
    one = authd.status("one.test")
    assert one["catalog"] == CATZ and one["group"] is None
    catz = authd.status(CATZ)
    assert catz["catalog_members"] == 2 and catz["catalog_held"] is None
    # The catalog itself is not for resolution (RFC 9432 3): REFUSED, as knotd answers it.
    assert rcode(authd.port, CATZ) == dns.rcode.REFUSED

    # A zone added on knotd: in the generated catalog, then served by authd.
    new_zone = write_zone(tmp_path / "new.test.zone", "new.test", 7)
    started = time.monotonic()
    primary.add_member("new.test", new_zone)
    assert authd.wait_serial("new.test", 7, timeout=15), authd.log()
    added_after = time.monotonic() - started
    assert authd.status(CATZ)["catalog_members"] == 3

    # Removed on knotd: authd stops serving it within 1 s of taking the catalog update.
    before = authd.status(CATZ)["serial"]
    committed = time.monotonic()
    primary.remove_member("new.test")
    took_update: float | None = None
    refused: float | None = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and refused is None:
        if took_update is None and authd.status(CATZ)["serial"] != before:
            took_update = time.monotonic()
        if rcode(authd.port, "new.test") == dns.rcode.REFUSED:
            refused = time.monotonic()
            took_update = took_update or refused
        time.sleep(0.01)
    assert refused is not None and took_update is not None, authd.log()
    # REFUSED may be seen before the status shows the new catalog serial (the members are
    # removed while the version is published): then the gap counts as 0.
    assert refused - took_update < 1.0, (refused - took_update, authd.log())
    assert refused - committed < 5.0  # NOTIFY, SOA check and IXFR of the catalog included
    print(
        f"member served {added_after:.2f} s after knotc conf-commit; removed member refused "
        f"{refused - committed:.2f} s after conf-commit, {refused - took_update:.3f} s after "
        "authd's status showed the catalog update"
    )
    kept = authd.workdir / "state" / "catalog-removed"
    assert wait_for(lambda: any(kept.glob("*")), 5.0), "removed member's data not set aside"
    metrics = _metrics(authd)
    assert 'authd_catalog_members{catalog="catz.test"} 2.0' in metrics
    assert 'authd_catalog_held{catalog="catz.test"} 0.0' in metrics
    assert 'zone="new.test"' not in metrics  # series of the removed member are gone
    assert 'authd_zone_serial{zone="one.test"}' in metrics

    # Restart with knotd down: members serve from their stored copies at once.
    authd.stop()
    primary.stop()
    authd.start()
    assert rcode(authd.port, "one.test") == dns.rcode.NOERROR
    assert rcode(authd.port, "two.test") == dns.rcode.NOERROR
    assert rcode(authd.port, "new.test") == dns.rcode.REFUSED
    # The "strict" group's template: expire-max 5 s and on-expire = "servfail"; the other
    # member (no group, no "default" template) serves stale on its own timers.
    assert wait_for(lambda: rcode(authd.port, "two.test") == dns.rcode.SERVFAIL, 15.0)
    assert rcode(authd.port, "one.test") == dns.rcode.NOERROR


def _metrics(authd: AuthdSecondary) -> str:
    import urllib.request

    url = f"http://{HOST}:{authd.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


# --- BIND (named) serving a catalog written by hand -----------------------------------------


def catalog_text(serial: int, members: dict[str, str], version: str = "2", **groups: str) -> str:
    lines = [
        f"$ORIGIN {CATZ}.",
        "$TTL 0",
        f"@ SOA invalid. invalid. {serial} 3600 600 2147483646 0",
        "@ NS invalid.",
        f'version TXT "{version}"',
    ]
    for zone, uid in members.items():
        lines.append(f"{uid}.zones PTR {zone}.")
        group = groups.get(zone.replace(".", "_"))
        if group:
            lines.append(f'group.{uid}.zones TXT "{group}"')
    return "\n".join(lines) + "\n"


def test_named_catalog_reset_broken_held_and_approved(tmp_path: Path) -> None:
    named = require_binary("named")
    members = {"a.test": "m1", "b.test": "m2"} | {f"c{i}.test": f"n{i}" for i in range(10)}
    zones = {z: write_zone(tmp_path / "zones" / f"{z}.zone", z, 3) for z in members}
    catalog = tmp_path / "zones" / "catz.zone"
    catalog.write_text(catalog_text(1, {"a.test": "m1", "b.test": "m2"}, b_test="strict"))
    authd = CatalogSecondary(tmp_path / "authd", [])
    server = start_named(
        named, tmp_path / "named", {CATZ: catalog, **zones}, [KEY], f'key "{KEY.name}";'
    )
    with running(server) as primary:
        db = tmp_path / "named" / f"{CATZ}.db"

        def publish(text: str, serial: int) -> None:
            db.write_text(text)
            primary.reload()
            assert wait_for(lambda: served_serial(HOST, primary.port, CATZ) == serial, 10.0)
            authd.refresh(CATZ)  # named's NOTIFY is unsigned: authd wants TSIG from it
            assert wait_for(lambda: authd.status(CATZ)["serial"] == serial, 15.0), authd.log()

        authd.zones = [SecondaryZone(CATZ, [primary.address], {"catalog": True})]
        authd.start()
        try:
            for zone in ("a.test", "b.test"):
                assert authd.wait_serial(zone, 3, timeout=15), authd.log()
            assert authd.status("b.test")["group"] == "strict"
            first = authd.status("a.test")["loaded_at"]

            # A new unique-id for a.test: reset (state purged, transferred afresh).
            publish(catalog_text(2, {"a.test": "m9", "b.test": "m2"}, b_test="strict"), 2)
            assert wait_for(lambda: "a.test: reset by catalog" in authd.log(), 5.0)
            assert authd.wait_serial("a.test", 3, timeout=15)
            assert authd.status("a.test")["loaded_at"] != first  # a fresh transfer
            assert 'change="reset"} 1.0' in _metrics(authd)

            # A broken version (version "1", no members) is not processed: nothing removed.
            publish(catalog_text(3, {}, version="1"), 3)
            status = authd.status(CATZ)
            assert "not supported" in (status["catalog_broken"] or ""), status
            assert rcode(authd.port, "a.test") == rcode(authd.port, "b.test") == dns.rcode.NOERROR
            assert 'authd_catalog_broken{catalog="catz.test"} 1.0' in _metrics(authd)

            # 12 members, then an update removing 11 of them: held until approved.
            publish(catalog_text(4, members), 4)
            assert authd.wait_serial("c9.test", 3, timeout=15), authd.log()
            # a.test is listed as m1 again: another reset, transferred afresh
            assert authd.wait_serial("a.test", 3, timeout=15), authd.log()
            assert authd.status(CATZ)["catalog_broken"] is None
            publish(catalog_text(5, {"a.test": "m1"}), 5)
            held = authd.status(CATZ)["catalog_held"]
            assert held and "removes 11 of 12 members" in held
            assert 'authd_catalog_held{catalog="catz.test"} 1.0' in _metrics(authd)
            assert rcode(authd.port, "c0.test") == dns.rcode.NOERROR
            reply = control.call(authd.socket, "approve", zone=CATZ)
            assert "serial 5 approved" in str(reply) and "11 removed" in str(reply)
            assert rcode(authd.port, "c0.test") == dns.rcode.REFUSED
            assert rcode(authd.port, "b.test") == dns.rcode.REFUSED
            assert rcode(authd.port, "a.test") == dns.rcode.NOERROR  # still listed: served
            assert 'authd_catalog_held{catalog="catz.test"} 0.0' in _metrics(authd)

            # a.test configured as a [[zone]] too (authd reload): the config wins, and the
            # catalog dropping it no longer removes it.
            authd.zones.append(SecondaryZone("a.test", [primary.address]))
            (authd.workdir / "authd.toml").write_text(authd.config_text())
            control.call(authd.socket, "reload")
            assert "catalog" not in authd.status("a.test")
            assert "a.test: now configured as a [[zone]]" in authd.log()
            publish(catalog_text(6, {}), 6)
            assert authd.status(CATZ)["catalog_members"] == 0
            assert rcode(authd.port, "a.test") == dns.rcode.NOERROR
        finally:
            authd.stop()


def test_named_change_of_ownership_between_two_catalogs(tmp_path: Path) -> None:
    """coo (RFC 9432 4.4.1): a member moves from catz.test to catz2.test, keeping its state."""
    named = require_binary("named")
    other = "catz2.test"
    member = write_zone(tmp_path / "zones" / "a.test.zone", "a.test", 3)
    first = tmp_path / "zones" / "catz.zone"
    first.write_text(catalog_text(1, {"a.test": "m1"}))
    second = tmp_path / "zones" / "catz2.zone"
    second.write_text(catalog_text(1, {}).replace(f"$ORIGIN {CATZ}.", f"$ORIGIN {other}."))
    authd = CatalogSecondary(tmp_path / "authd", [])
    server = start_named(
        named,
        tmp_path / "named",
        {CATZ: first, other: second, "a.test": member},
        [KEY],
        f'key "{KEY.name}";',
    )
    with running(server) as primary:

        def publish(catalog: str, text: str, serial: int) -> None:
            (tmp_path / "named" / f"{catalog}.db").write_text(text)
            primary.reload()
            assert wait_for(lambda: served_serial(HOST, primary.port, catalog) == serial, 10.0)
            authd.refresh(catalog)
            assert wait_for(lambda: authd.status(catalog)["serial"] == serial, 15.0), authd.log()

        authd.zones = [
            SecondaryZone(CATZ, [primary.address], {"catalog": True}),
            SecondaryZone(other, [primary.address], {"catalog": True}),
        ]
        authd.start()
        try:
            assert authd.wait_serial("a.test", 3, timeout=15), authd.log()
            loaded = authd.status("a.test")["loaded_at"]
            # The new owner lists it first: the current owner keeps it.
            listed = catalog_text(2, {"a.test": "m1"}).replace(
                f"$ORIGIN {CATZ}.", f"$ORIGIN {other}."
            )
            publish(other, listed, 2)
            assert authd.status("a.test")["catalog"] == CATZ
            # The current owner hands it over with coo: it moves, same unique-id, state kept.
            handed = catalog_text(2, {"a.test": "m1"}) + f"coo.m1.zones PTR {other}.\n"
            publish(CATZ, handed, 2)
            assert wait_for(lambda: authd.status("a.test")["catalog"] == other, 5.0), authd.log()
            status = authd.status("a.test")
            assert status["loaded_at"] == loaded and status["serial"] == 3  # not reset
            # The old owner drops it: still served, by the new owner.
            publish(CATZ, catalog_text(3, {}), 3)
            assert rcode(authd.port, "a.test") == dns.rcode.NOERROR
            assert authd.status(CATZ)["catalog_members"] == 0
            assert authd.status(other)["catalog_members"] == 1
        finally:
            authd.stop()
