"""NOTIFY at the serving edge: runs in each worker, answers at once, tells the main process.

The pure decision is notify.handle_notify; this adds the client address, the log line
(at most once per source and minute) and the event to the main process, where the
zone's refresh machine coalesces bursts into one refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dns.tsig

from authd.config import Config
from authd.serve import edns
from authd.serve.sockets import client_address
from authd.wire import Query, opt_record
from authd.xfr.notify import AllowedSource, RateLimitedLog, handle_notify

log = logging.getLogger("authd.notify")
REFUSED, NOTAUTH = 5, 9


@dataclass(frozen=True)
class NotifyEvent:
    """An accepted NOTIFY, sent from a worker to the main process."""

    zone: bytes
    serial: int | None
    source: str


def notify_acls(config: Config) -> dict[bytes, tuple[AllowedSource, ...]]:
    """Per secondary zone, who may notify it (config notify-from, resolved)."""
    acls: dict[bytes, tuple[AllowedSource, ...]] = {}
    for zone in config.zones:
        if not zone.is_secondary:
            continue
        acls[zone.origin] = tuple(
            AllowedSource(
                entry.network,
                entry.key.name if entry.key is not None else None,
                entry.remote_id or str(entry.network),
            )
            for entry in zone.notify_from
        )
    return acls


def notify_keyring(config: Config) -> dict[str, dns.tsig.Key]:
    return {key.name: key.to_dnspython() for key in config.tsig_keys}


class NotifyEndpoint:
    """The responder's notify_handler: (query bytes, parsed query, client) -> response."""

    def __init__(
        self,
        acls: Mapping[bytes, Sequence[AllowedSource]],
        keyring: Mapping[str, dns.tsig.Key],
        post: Callable[[NotifyEvent], None],
        *,
        clock: Callable[[], float],
        udp_payload: int = 1232,
    ) -> None:
        self.udp_payload = udp_payload
        self.acls = acls
        self.keyring = keyring
        self.post = post
        self.clock = clock
        self.refusals = RateLimitedLog()
        self.accepted = 0
        self.refused = 0

    def __call__(self, wire: bytes, query: Query, client: object) -> bytes | None:
        try:
            source = client_address(client)[0]
        except ValueError:
            source = "unknown"
        result = handle_notify(
            wire,
            source,
            self.clock(),
            zones=self.acls,
            keyring=self.keyring,
            refusals=self.refusals,
        )
        if result.accepted and result.zone is not None:
            self.accepted += 1
            log.info(result.reason)
            self.post(NotifyEvent(result.zone, result.serial, source))
        else:
            self.refused += 1
            if result.log:
                extra = f" ({result.suppressed} more not logged)" if result.suppressed else ""
                log.warning("NOTIFY refused: %s%s", result.reason, extra)
        return self._with_opt(result.response, query)

    def _with_opt(self, response: bytes | None, query: Query) -> bytes | None:
        """Knot answers a NOTIFY that carried EDNS with an OPT; add ours to an unsigned reply.

        A reply with records in the additional section (a TSIG) is left alone: an OPT
        must precede the TSIG, which covers it.
        """
        if response is None or query.edns is None or response[10:12] != b"\x00\x00":
            return response
        refused = response[3] & 0x0F in (REFUSED, NOTAUTH)
        options = edns.ede(edns.EDE_PROHIBITED) if refused else b""  # RFC 8914 18
        opt = opt_record(self.udp_payload, 0, query.edns.do, options)
        return response[:10] + b"\x00\x01" + response[12:] + opt

    def counters(self) -> dict[str, int]:
        return {"notify.accepted": self.accepted, "notify.refused": self.refused}
