"""XoT as a client (authd/xfr/tls.py + transfer.py): SOA and AXFR/IXFR over TLS against the
controllable test primary behind a real TLS listener, each check failing for its own reason.

The TLS primary has no UDP and no plain TCP listener, so a transfer that succeeds went over
TLS; the plain primary in the fallback tests counts what it was asked, so "no fallback" is
an observed zero, not an assumption. Every test runs on asyncio and on uvloop (authd's main
process runs uvloop).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives import serialization

from authd.config import RemoteTls
from authd.xfr.stream import Kind
from authd.xfr.tls import ALPN, client_context, spki_pin
from authd.xfr.transfer import Outcome, TransferResult, query_soa, transfer
from tests.support.primary import Behaviour, TestPrimary
from tests.support.tls_certs import TestPki
from tests.support.xfrzone import CLOCK, KEY, OTHER_SECRET, ZONE, expected, make_zone, records_of

SERVER_NAME = "xfr.example.net"


Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test's coroutine on a fresh loop of the given kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coroutine: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(asyncio.wait_for(coroutine, 30))

    return runner


class TlsPrimary(TestPrimary):
    """The test primary on a TLS listener only (no UDP, no plain TCP)."""

    def __init__(self, *args: object, context: ssl.SSLContext, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.context = context

    async def start(self) -> tuple[str, int]:
        self._tcp = await asyncio.start_server(
            self._serve_tcp, self.host, 0, family=socket.AF_INET, ssl=self.context
        )
        self.port = self._tcp.sockets[0].getsockname()[1]
        return self.endpoint


def server_context(
    cert_file: Path,
    key_file: Path,
    *,
    alpn: bool = True,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    client_ca: Path | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_file), str(key_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = max_version
    if alpn:
        context.set_alpn_protocols([ALPN])
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca))
    return context


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki.create(tmp_path / "pki")


@asynccontextmanager
async def running(primary: TestPrimary) -> AsyncIterator[TestPrimary]:
    await primary.start()
    try:
        yield primary
    finally:
        await primary.stop()


def _primary(context: ssl.SSLContext) -> TlsPrimary:
    primary = TlsPrimary(
        [make_zone(1), make_zone(2, extra="new 300 IN A 192.0.2.2")], key=KEY, context=context
    )
    primary.behaviour = Behaviour(records_per_message=7)
    return primary


def tls_primary(pki: TestPki) -> TlsPrimary:
    """A TLS primary whose certificate (from `pki`) names SERVER_NAME and 127.0.0.1."""
    server = pki.issue("primary", dns_names=[SERVER_NAME], ips=["127.0.0.1"])
    return _primary(server_context(server.cert_file, server.key_file))


def strict(pki: TestPki, name: str = SERVER_NAME) -> RemoteTls:
    return RemoteTls(ca_file=pki.ca_file, name=name)


async def axfr_over(primary: TestPrimary, tls: RemoteTls) -> TransferResult:
    return await transfer(
        ZONE, primary.endpoint, KEY, current=None, tls=tls, deadline=10, clock=CLOCK
    )


# -- what works --------------------------------------------------------------------------


def test_axfr_over_tls_with_ca_and_name(run: Run, pki: TestPki) -> None:
    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            result = await axfr_over(primary, strict(pki))
            assert result.outcome is Outcome.UPDATED, result.reason
            assert result.kind is Kind.AXFR and result.serial == 2
            assert result.messages > 1  # several messages, TSIG-chained inside TLS
            assert records_of(result.snapshot) == expected(primary.zone)
            assert primary.queries["AXFR"] == 1

    run(body())


def test_name_may_be_the_ip_address_in_the_certificate(run: Run, pki: TestPki) -> None:
    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            result = await axfr_over(primary, strict(pki, "127.0.0.1"))
            assert result.outcome is Outcome.UPDATED, result.reason

    run(body())


def test_soa_query_goes_over_tls(run: Run, pki: TestPki) -> None:
    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            result = await query_soa(primary.endpoint, ZONE, KEY, tls=strict(pki), clock=CLOCK)
            assert result.outcome is Outcome.OK, result.reason
            assert result.serial == 2 and result.over_tcp
            assert primary.queries["SOA"] == 1

    run(body())


def test_ixfr_over_tls(run: Run, pki: TestPki) -> None:
    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            keep = primary.versions
            primary.versions = keep[:1]
            first = await axfr_over(primary, strict(pki))
            primary.versions = keep
            assert first.serial == 1 and first.snapshot is not None
            result = await transfer(
                ZONE, primary.endpoint, KEY, current=first.snapshot, tls=strict(pki), clock=CLOCK
            )
            assert result.outcome is Outcome.UPDATED, result.reason
            assert result.kind is Kind.IXFR and result.serial == 2 and result.steps
            assert records_of(result.snapshot) == expected(primary.zone)
            assert primary.queries["IXFR"] == 1

    run(body())


def test_spki_pin_accepts_a_certificate_no_ca_vouches_for(run: Run, tmp_path: Path) -> None:
    other = TestPki.create(tmp_path / "other", "unknown CA")
    server = other.issue("primary", dns_names=["whatever.invalid"])
    pin = base64.b64decode(server.pin)

    async def body() -> None:
        context = server_context(server.cert_file, server.key_file)
        async with running(_primary(context)) as primary:
            result = await axfr_over(primary, RemoteTls(pins=(b"\0" * 32, pin)))
            assert result.outcome is Outcome.UPDATED, result.reason

    run(body())


def test_spki_pin_is_sha256_of_the_der_subject_public_key_info(pki: TestPki) -> None:
    issued = pki.issue("leaf", dns_names=["a.example"])
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    spki = issued.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki_pin(der) == hashlib.sha256(spki).digest()
    assert base64.b64encode(spki_pin(der)).decode() == issued.pin


def test_client_certificate_is_presented(run: Run, pki: TestPki) -> None:
    server = pki.issue("primary", dns_names=[SERVER_NAME])
    client = pki.issue("secondary", dns_names=["secondary.example.net"], client=True)
    with_cert = RemoteTls(
        ca_file=pki.ca_file, name=SERVER_NAME, cert_file=client.cert_file, key_file=client.key_file
    )

    async def body() -> None:
        context = server_context(server.cert_file, server.key_file, client_ca=pki.ca_file)
        async with running(_primary(context)) as primary:
            result = await axfr_over(primary, with_cert)
            assert result.outcome is Outcome.UPDATED, result.reason
            # Without one the primary refuses: in TLS 1.3 after our side of the handshake,
            # as an alert (TLS_ERROR) or, from asyncio's server, a bare close (INCOMPLETE).
            result = await axfr_over(primary, strict(pki))
            assert result.outcome in (Outcome.TLS_ERROR, Outcome.INCOMPLETE), result.reason
            assert result.snapshot is None
            assert primary.queries["AXFR"] == 1

    run(body())


# -- what must fail, and how -------------------------------------------------------------


def test_wrong_name_fails_before_any_query(run: Run, pki: TestPki) -> None:
    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            result = await axfr_over(primary, strict(pki, "other.example.net"))
            assert result.outcome is Outcome.TLS_ERROR
            assert result.reason == (
                "AXFR: certificate name mismatch: "
                "the certificate is not valid for other.example.net"
            )
            assert result.snapshot is None and not primary.queries

    run(body())


def test_wrong_pin_fails_before_any_query(run: Run, pki: TestPki) -> None:
    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            result = await axfr_over(primary, RemoteTls(pins=(hashlib.sha256(b"x").digest(),)))
            assert result.outcome is Outcome.TLS_ERROR
            assert result.reason == "AXFR: SPKI pin mismatch"
            assert not primary.queries

    run(body())


def test_certificate_from_another_ca_fails(run: Run, tmp_path: Path, pki: TestPki) -> None:
    other = TestPki.create(tmp_path / "other", "unknown CA")
    server = other.issue("primary", dns_names=[SERVER_NAME])

    async def body() -> None:
        context = server_context(server.cert_file, server.key_file)
        async with running(_primary(context)) as primary:
            result = await axfr_over(primary, strict(pki))
            assert result.outcome is Outcome.TLS_ERROR
            assert result.reason.startswith("AXFR: certificate verification failed: ")
            assert not primary.queries

    run(body())


def test_soa_query_with_wrong_pin_is_a_tls_error(run: Run, pki: TestPki) -> None:
    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            result = await query_soa(
                primary.endpoint, ZONE, KEY, tls=RemoteTls(pins=(b"\1" * 32,)), clock=CLOCK
            )
            assert result.outcome is Outcome.TLS_ERROR
            assert result.reason == "SOA query: SPKI pin mismatch"
            assert not primary.queries

    run(body())


def test_tls_1_2_only_primary_is_refused(run: Run, pki: TestPki) -> None:
    server = pki.issue("primary", dns_names=[SERVER_NAME])

    async def body() -> None:
        context = server_context(
            server.cert_file, server.key_file, max_version=ssl.TLSVersion.TLSv1_2
        )
        async with running(_primary(context)) as primary:
            result = await axfr_over(primary, strict(pki))
            # OpenSSL sends a protocol_version alert; asyncio's server just drops the line.
            assert result.outcome is Outcome.TLS_ERROR
            assert "during the TLS handshake" in result.reason or result.reason.startswith(
                "AXFR: TLS handshake failed: "
            ), result.reason
            assert not primary.queries

    run(body())


def test_primary_without_alpn_dot_is_refused(run: Run, pki: TestPki) -> None:
    server = pki.issue("primary", dns_names=[SERVER_NAME])

    async def body() -> None:
        context = server_context(server.cert_file, server.key_file, alpn=False)
        async with running(_primary(context)) as primary:
            result = await axfr_over(primary, strict(pki))
            assert result.outcome is Outcome.TLS_ERROR
            assert result.reason == 'AXFR: the primary did not negotiate ALPN "dot" (got none)'
            assert not primary.queries

    run(body())


def test_plain_primary_is_never_asked_in_clear(run: Run, pki: TestPki) -> None:
    """A TLS remote whose address answers plain DNS: the handshake fails, nothing else."""

    async def body() -> None:
        async with running(TestPrimary([make_zone(1)], key=KEY)) as primary:
            soa = await query_soa(
                primary.endpoint, ZONE, KEY, tls=strict(pki), clock=CLOCK, timeout=2
            )
            result = await transfer(
                ZONE, primary.endpoint, KEY, current=None, tls=strict(pki), clock=CLOCK, deadline=2
            )
            assert soa.outcome is Outcome.TLS_ERROR, soa.reason
            assert soa.reason.startswith("SOA query: no TLS handshake within ")
            assert result.outcome is Outcome.TLS_ERROR, result.reason
            assert "no TLS handshake within" in result.reason
            assert not primary.queries  # no SOA over UDP, no AXFR over TCP

    run(body())


def test_tsig_is_still_verified_inside_tls(run: Run, pki: TestPki) -> None:
    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            primary.behaviour = Behaviour(records_per_message=7, answer_key=OTHER_SECRET)
            result = await axfr_over(primary, strict(pki))
            assert result.outcome is Outcome.BAD_TSIG, result.reason
            assert result.snapshot is None

    run(body())


def test_unusable_ca_file_is_a_tls_error(run: Run, pki: TestPki, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")

    async def body() -> None:
        async with running(tls_primary(pki)) as primary:
            result = await axfr_over(primary, RemoteTls(ca_file=bad, name=SERVER_NAME))
            assert result.outcome is Outcome.TLS_ERROR
            assert result.reason.startswith(f"AXFR: cannot load ca-file {bad}")
            assert not primary.queries

    run(body())


def test_context_is_shared_until_a_file_changes(pki: TestPki, tmp_path: Path) -> None:
    settings = strict(pki)
    first = client_context(settings)
    assert client_context(settings) is first
    rotated = TestPki.create(tmp_path / "rotated", "rotated CA")
    pki.ca_file.write_bytes(rotated.ca_file.read_bytes() + b"\n")  # another size, another CA
    second = client_context(settings)
    assert second is not first
    assert second.get_ca_certs()[0]["subject"] == ((("commonName", "rotated CA"),),)
