"""The change guard's control commands (authd/guardctl.py): bad requests get one-line errors
before anything is posted, and a rollback to a signed version whose signatures have expired
is refused, naming when they expired."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from authd.clock import FakeClock
from authd.config import load_config
from authd.control import ControlError
from authd.guardctl import guard_command
from authd.xfr.secondary import ZoneEntry, settings_for
from authd.zone import lifecycle as lc
from authd.zone import names
from authd.zone.snapshot import Record, Snapshot, SnapshotBuilder

ORIGIN = "s.example."
NOW = 1_800_000_000
KEY = (
    "257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+Gq"
    "JxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ=="
)


def record(owner: str, rtype: str, text: str) -> Record:
    data = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text).to_wire()
    assert data is not None
    return (names.key_from_text(owner), dns.rdatatype.from_text(rtype), 300, data)


def signed(expiration: int) -> Snapshot:
    def stamp(t: int) -> str:
        return time.strftime("%Y%m%d%H%M%S", time.gmtime(t))

    rrsig = f"SOA 13 2 300 {stamp(expiration)} {stamp(expiration - 30 * 86400)} 12345 {ORIGIN} AAAA"
    builder = SnapshotBuilder(names.key_from_text(ORIGIN))
    builder.add_records(
        [
            record(ORIGIN, "SOA", f"ns1.{ORIGIN} host.{ORIGIN} 5 7200 900 1209600 300"),
            record(ORIGIN, "NS", f"ns1.{ORIGIN}"),
            record(ORIGIN, "DNSKEY", KEY),
            record(ORIGIN, "RRSIG", rrsig),
        ]
    )
    return builder.build()


@dataclass
class Runtime:
    name: str
    config: Any
    secondary: ZoneEntry | None


@dataclass
class App:
    version: Snapshot
    clock: FakeClock = field(default_factory=lambda: FakeClock(now=float(NOW)))
    posted: list[lc.Event] = field(default_factory=list)

    async def load_version(self, origin: bytes, serial: int) -> Snapshot:
        if serial != self.version.serial:
            raise ControlError(f"zone s.example: serial {serial} is not in the history")
        return self.version

    def post(self, runtime: Runtime, event: lc.Event) -> None:
        self.posted.append(event)
        entry = runtime.secondary
        if isinstance(event, lc.Rollback) and entry is not None:  # as the machine would end
            entry.record = replace(
                entry.record, served=lc.Seen(event.serial, NOW, "rollback"), pinned=event.serial
            )

    async def wait_published(self, ticket: int | None) -> bool:
        return True

    def publish_ticket(self, origin: bytes) -> int | None:
        return None

    secondaries = None


def runtime(tmp_path: Path, secondary: bool = True) -> Runtime:
    path = tmp_path / "authd.toml"
    path.write_text(
        '[[remote]]\nid = "p"\naddresses = ["127.0.0.1@5301"]\n'
        f'[[zone]]\nname = "{ORIGIN}"\nprimaries = ["p"]\n'
    )
    config = load_config(path).zones[0]
    entry = ZoneEntry(config, lc.Zone(settings_for(config))) if secondary else None
    return Runtime("s.example", config, entry)


async def refused(app: App, rt: Runtime, command: str, **args: object) -> str:
    with pytest.raises(ControlError) as info:
        await guard_command(app, command, rt, args)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    return str(info.value)


async def test_a_rollback_to_expired_signatures_is_refused(tmp_path: Path) -> None:
    app, rt = App(signed(NOW - 3600)), runtime(tmp_path)
    message = await refused(app, rt, "rollback", to="5")
    assert "signatures expired at 2027-01-15T07:00:00Z" in message
    assert app.posted == []


async def test_bad_requests_are_one_line_errors_and_post_nothing(tmp_path: Path) -> None:
    app, rt = App(signed(NOW + 86400)), runtime(tmp_path)
    assert "nothing is held" in await refused(app, rt, "approve")
    assert "serial 7 is not held (nothing is held)" in await refused(app, rt, "reject", serial="7")
    assert "reject needs the held SERIAL" in await refused(app, rt, "reject")
    assert "is not pinned" in await refused(app, rt, "unpin")
    assert "not in the history" in await refused(app, rt, "rollback", to="9")
    assert "not a serial" in await refused(app, rt, "rollback", to="x")
    assert "needs --to" in await refused(app, rt, "rollback")
    assert rt.secondary is not None
    rt.secondary.record = lc.Zone(rt.secondary.record.settings, held=lc.Seen(8, NOW, "p"))
    assert "serial 9 is not held (held: 8)" in await refused(app, rt, "approve", serial="9")
    assert app.posted == []
    file_zone = runtime(tmp_path, secondary=False)
    assert "served from a file" in await refused(app, file_zone, "rollback", to="5")


async def test_a_rollback_says_until_when_the_copy_validates(tmp_path: Path) -> None:
    app, rt = App(signed(NOW + 86400)), runtime(tmp_path)
    answer = await guard_command(app, "rollback", rt, {"to": "5"})  # type: ignore[arg-type]
    assert answer == (
        "zone s.example: rolled back to serial 5, served and pinned; "
        "its signatures validate until 2027-01-16T08:00:00Z"
    )
    assert app.posted == [lc.Rollback(5)]
    assert rt.secondary is not None and rt.secondary.staged is app.version  # loaded once
