"""systemd's readiness protocol (sd_notify(3)) in plain socket code, no libsystemd.

A Type=notify service tells the service manager it is up by sending "READY=1" as one
datagram to the AF_UNIX socket named in $NOTIFY_SOCKET; "RELOADING=1" and "STOPPING=1"
bracket reloads and shutdown, "STATUS=..." is the line `systemctl status` shows. A name
starting with "@" is in the Linux abstract namespace (a leading NUL byte on the wire).
Without $NOTIFY_SOCKET (not run by systemd) every call does nothing and returns False.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("authd.sdnotify")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def socket_address(value: str) -> str | bytes | None:
    """The address to send to for a $NOTIFY_SOCKET value; None if unusable."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock: and relative paths are not for us


def notify(*assignments: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send "KEY=VALUE" lines to the service manager; True if a datagram was sent.

    Failures are logged, never raised: a lost status line must not stop the server.
    """
    env = os.environ if environ is None else environ
    value = env.get(NOTIFY_SOCKET_ENV, "")
    if not value:
        return False
    address = socket_address(value)
    if address is None:
        log.warning("%s=%r is not a Unix socket path; not notifying", NOTIFY_SOCKET_ENV, value)
        return False
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", value, exc)
        return False
    return True


def ready(status: str = "") -> bool:
    """Startup finished: zones from disk are published and the listeners are open."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    """A reload starts; systemd >= 253 (Type=notify-reload) wants the monotonic time too."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def reloaded(status: str = "") -> bool:
    """A reload ended (successfully or not): the service is READY again."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def stopping() -> bool:
    """Shutdown started: in-flight TCP queries are being drained."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line status for `systemctl status` (e.g. "3 zones, 1 expired")."""
    return notify(f"STATUS={text}")
