"""TLS for zone transfers as a client (XoT, RFC 9103): the context and the peer check.

A remote with `tls` is reached over TLS only: this module never falls back to plain TCP,
every failure here ends the exchange with a reason that says what did not match.

- TLS 1.3 only (RFC 9103 7.1 requires 1.3 for XoT) and ALPN "dot" (RFC 9103 7.1): the
  primary must select "dot"; a primary that selects nothing or something else is refused.
- Strict authentication (RFC 8310 Strict Privacy profile): either the chain verifies to the
  configured CA and the certificate carries the configured name (DNS or IP SAN), or the
  SHA-256 of the certificate's SubjectPublicKeyInfo equals a configured pin (as Knot's
  `cert-key`; with a pin the chain is not verified, so a self-signed certificate is fine).
- The pin check runs on the certificate the handshake delivered, before any DNS byte is sent.

Contexts are built once per RemoteTls and files on disk (loading a CA file costs milliseconds).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authd.config import RemoteTls

ALPN = "dot"


class TlsFailure(Exception):
    """TLS could not be set up or the primary is not the one configured; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def spki_pin(der_certificate: bytes) -> bytes:
    """SHA-256 over the DER SubjectPublicKeyInfo of a DER certificate (Knot's cert-key)."""
    certificate = x509.load_der_x509_certificate(der_certificate)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def client_context(settings: RemoteTls) -> ssl.SSLContext:
    """The SSLContext for one remote; raises TlsFailure when a file cannot be used.

    Shared while the files stay the same: a CA or client certificate replaced on disk is
    read again on the next connection (keyed by each file's size and modification time)."""
    return _context(settings, _files_state(settings))


def _files_state(settings: RemoteTls) -> tuple[tuple[int, int], ...]:
    state = []
    for path in (settings.ca_file, settings.cert_file, settings.key_file):
        try:
            info = os.stat(path) if path is not None else None
        except OSError:
            info = None
        state.append((info.st_mtime_ns, info.st_size) if info is not None else (0, -1))
    return tuple(state)


@lru_cache(maxsize=256)
def _context(settings: RemoteTls, files_state: tuple[tuple[int, int], ...]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols([ALPN])
    if settings.pins:
        # The pin is the authentication: the chain is not looked at (Knot does the same).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=str(settings.ca_file))
        except (OSError, ssl.SSLError) as error:
            reason = tls_error_text(error)
            raise TlsFailure(f"cannot load ca-file {settings.ca_file}: {reason}") from None
    if settings.cert_file is not None:
        try:
            context.load_cert_chain(
                str(settings.cert_file),
                str(settings.key_file) if settings.key_file is not None else None,
            )
        except (OSError, ssl.SSLError) as error:
            raise TlsFailure(
                f"cannot load client certificate {settings.cert_file}: {tls_error_text(error)}"
            ) from None
    return context


def server_hostname(settings: RemoteTls) -> str | None:
    """What to check the certificate against (and send as SNI when it is a host name)."""
    return None if settings.pins else settings.name


def check_peer(settings: RemoteTls, ssl_object: object) -> None:
    """After the handshake: ALPN "dot" and, with pins, the SPKI pin; raises TlsFailure."""
    selected = getattr(ssl_object, "selected_alpn_protocol", lambda: None)()
    if selected != ALPN:
        got = f'"{selected}"' if selected else "none"
        raise TlsFailure(f'the primary did not negotiate ALPN "{ALPN}" (got {got})')
    if not settings.pins:
        return
    der = getattr(ssl_object, "getpeercert", lambda binary_form: None)(binary_form=True)
    if not der:
        raise TlsFailure("the primary sent no certificate")
    try:
        pin = spki_pin(der)
    except ValueError as error:
        raise TlsFailure(f"the primary's certificate cannot be parsed: {error}") from None
    # Constant time, and every configured pin is compared.
    matched = False
    for expected in settings.pins:
        matched |= hmac.compare_digest(pin, expected)
    if not matched:
        raise TlsFailure("SPKI pin mismatch")


def handshake_reason(error: ssl.SSLError, settings: RemoteTls) -> str:
    """A one-line reason for a failed handshake, naming a name mismatch as such."""
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or tls_error_text(error)
        if "mismatch" in message.lower():
            return f"certificate name mismatch: the certificate is not valid for {settings.name}"
        return f"certificate verification failed: {message}"
    return f"TLS handshake failed: {tls_error_text(error)}"


def tls_error_text(error: BaseException) -> str:
    """OpenSSL's reason ("TLSV13_ALERT_CERTIFICATE_REQUIRED") as words, else the message."""
    reason = getattr(error, "reason", None)
    if isinstance(error, ssl.SSLError) and reason:
        return str(reason).replace("_", " ").lower()
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
