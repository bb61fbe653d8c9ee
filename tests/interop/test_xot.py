"""Zone transfer over TLS (XoT, RFC 9103) from BIND 9.18 as the primary (issue 16 item 3).

named serves the zone over TLS only (no plain listener at all) with a certificate from the
test's own CA, allows transfers only over TLS and only with TSIG, and NOTIFYs authd over UDP.
authd, a secondary with `tls` on its [[remote]], must:
- take the zone by AXFR over TLS (its SOA query has to go over TLS too: there is no UDP),
  with the CA and the name, and with an SPKI pin;
- take the next version by IXFR over TLS after named's NOTIFY;
- refuse a wrong pin and a wrong name: zone not loaded, outcome tls-error with the reason in
  `zone status` and the log, and named never asked for a transfer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.rcode
import pytest

from authd.bench.primaries import AuthdSecondary, SecondaryZone, query, wait_for
from authd.bench.servers import HOST
from tests.interop.xot_primary import XotPrimary
from tests.support.system import free_port, require_binary
from tests.support.tls_certs import TestPki

ZONE = "xot.test"
SERVER_NAME = "xfr.example.net"


@dataclass
class TlsSecondary(AuthdSecondary):
    """authd whose one remote (the XoT primary) carries `tls = {remote_tls}`."""

    remote_tls: str = ""

    def config_text(self) -> str:
        text = super().config_text()
        marker = 'key = "xfr-key"\n'
        assert text.count(marker) == 1, text
        return text.replace(marker, f"{marker}tls = {self.remote_tls}\n")


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki.create(tmp_path / "pki")


@pytest.fixture
def primary(tmp_path: Path, pki: TestPki) -> Iterator[XotPrimary]:
    named = require_binary("named")
    server = pki.issue("named", dns_names=[SERVER_NAME], ips=[HOST])
    notify_port = free_port(HOST)
    xot = XotPrimary(
        named, tmp_path / "named", pki, server, SERVER_NAME, ZONE, [(HOST, notify_port)]
    )
    xot.start(serial=1, names=50)
    try:
        yield xot
    finally:
        xot.stop()


def secondary(
    tmp_path: Path, primary: XotPrimary, remote_tls: str, label: str, port: int | None = None
) -> TlsSecondary:
    return TlsSecondary(
        tmp_path / label,
        [SecondaryZone(ZONE, [primary.address])],
        port=port if port is not None else free_port(HOST),
        remote_tls=remote_tls,
    )


def transfers_started(primary: XotPrimary) -> int:
    """How many transfers named began serving (its xfer-out log lines)."""
    return len(re.findall(r"transfer of '" + re.escape(ZONE) + r"/IN': \S+ started", primary.log()))


def test_axfr_then_ixfr_over_tls_from_named(
    tmp_path: Path, pki: TestPki, primary: XotPrimary
) -> None:
    notify_port = primary.notify[0][1]
    remote_tls = f'{{ ca-file = "{pki.ca_file}", name = "{SERVER_NAME}" }}'
    authd = secondary(tmp_path, primary, remote_tls, "authd", port=notify_port)
    authd.start()
    try:
        authd.refresh(ZONE)
        assert authd.wait_serial(ZONE, 1, 15), authd.log() + primary.log()
        status = authd.status(ZONE)
        assert status["transfer"] == "AXFR", status
        # named served it, TSIG-verified (allow-transfer takes only the key, only over TLS).
        assert re.search(r"AXFR started: TSIG xfr-key", primary.log()), primary.log()
        assert (
            authd.metric("authd_xfr_transfers_total", zone=ZONE, type="AXFR", result="updated") == 1
        )

        primary.change(serial=2, names=51)
        assert wait_for(lambda: primary.serial() == 2, 10), primary.log()
        # named's NOTIFY (UDP, signed) starts an SOA query and an IXFR, both over TLS.
        assert authd.wait_serial(ZONE, 2, 15), authd.log() + primary.log()
        status = authd.status(ZONE)
        assert status["transfer"] == "IXFR", status
        assert re.search(r"IXFR started: TSIG xfr-key", primary.log()), primary.log()
        assert (
            authd.metric("authd_xfr_transfers_total", zone=ZONE, type="IXFR", result="updated") == 1
        )
        answer = query(HOST, authd.port, f"h50.{ZONE}.", "A")
        assert answer is not None and answer.rcode() == dns.rcode.NOERROR
        assert [r.to_text() for r in answer.answer[0]] == ["10.0.0.50"]
    finally:
        authd.stop()


def test_spki_pin_is_enough_without_the_ca(
    tmp_path: Path, pki: TestPki, primary: XotPrimary
) -> None:
    authd = secondary(tmp_path, primary, f'{{ cert-key = "{primary.server_cert.pin}" }}', "pin")
    authd.start()
    try:
        authd.refresh(ZONE)
        assert authd.wait_serial(ZONE, 1, 15), authd.log() + primary.log()
    finally:
        authd.stop()


@pytest.mark.parametrize(
    ("remote_tls", "reason"),
    [
        pytest.param(
            '{ cert-key = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" }',
            "SPKI pin mismatch",
            id="wrong-pin",
        ),
        pytest.param(
            '{ ca-file = "CA", name = "other.example.net" }',
            "certificate name mismatch: the certificate is not valid for other.example.net",
            id="wrong-name",
        ),
    ],
)
def test_wrong_pin_or_name_never_loads_the_zone(
    tmp_path: Path, pki: TestPki, primary: XotPrimary, remote_tls: str, reason: str
) -> None:
    authd = secondary(tmp_path, primary, remote_tls.replace("CA", str(pki.ca_file)), "bad")
    authd.start()
    try:
        authd.refresh(ZONE)
        assert wait_for(lambda: reason in (authd.status(ZONE).get("last_error") or ""), 15), (
            authd.status(ZONE),
            authd.log(),
        )
        last_error = authd.status(ZONE)["last_error"]
        # Nothing served yet: the first attempt is the AXFR itself (no SOA query before it).
        assert f"{HOST}@{primary.tls_port}: tls-error: AXFR: {reason}" in last_error
        assert reason in authd.log()
        assert authd.serial(ZONE) is None  # not loaded: no SOA is answered
        assert transfers_started(primary) == 0, primary.log()
    finally:
        authd.stop()
