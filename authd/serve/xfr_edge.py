"""Outbound AXFR/IXFR at the serving edge: the responder's `xfr_handler`, in each worker.

The decisions are xfr/provide.py's; this adds what needs I/O: the client address, the
journal of received diffs (read only, from the state directory), the log line and the
counters. Expiry is the zone table's (`PublishedZone.expired_at`, set by the main
process). AXFR comes from the served
version (the worker's zone table), so a transfer always matches what the worker answers.

A transfer answer over TCP is a `xfrout.MessageStream`: the first message now, the rest
built and TSIG-signed one at a time as the connection's write buffer drains (tcp.py).

EDNS EXPIRE (RFC 7314): when the request carried it, the first message has an OPT with the
zone's remaining time (edns.expire_seconds, as the responder answers SOA queries), so a
downstream secondary restarts its expire clock from what our copy has left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dns.tsig

from authd import wire
from authd.config import Config
from authd.serve import edns as edns_options
from authd.serve.sockets import client_address
from authd.serve.xfrout import IxfrStep, MessageStream, axfr_messages, ixfr_messages
from authd.serve.zonetable import PublishedZone, ZoneTable
from authd.xfr import provide
from authd.xfr.notify import AllowedSource, RateLimitedLog, acl_allows
from authd.zone import journal, names
from authd.zone.snapshot import Snapshot
from authd.zone.store import FULL_NAME, JOURNAL_NAME, decode_full_header, zone_dir_name

log = logging.getLogger("authd.xfrout")

# Outbound messages are kept to 16 KiB: each is built in one go on the event loop, and a
# smaller message keeps other queries' wait short (Knot fills 64 KiB; BIND ~16 KiB).
OUT_BUDGET = 8192 - 512


@dataclass(frozen=True, slots=True)
class ProvideSettings:
    """A zone's outbound-transfer settings, resolved from the config."""

    acl: tuple[AllowedSource, ...]
    provide_expired: bool = False


def provide_settings(config: Config) -> dict[bytes, ProvideSettings]:
    out: dict[bytes, ProvideSettings] = {}
    for zone in config.zones:
        acl = tuple(
            AllowedSource(
                entry.network,
                entry.key.name if entry.key is not None else None,
                entry.remote_id or str(entry.network),
            )
            for entry in zone.provide_xfr
        )
        out[zone.origin] = ProvideSettings(acl, zone.provide_xfr_expired)
    return out


class XfrEndpoint:
    """(query bytes, parsed query, tcp?, client) -> the answer (a MessageStream over TCP)."""

    def __init__(
        self,
        zones: ZoneTable,
        settings: Mapping[bytes, ProvideSettings],
        keyring: Mapping[str, dns.tsig.Key],
        state_dir: Path | None,
        clock: Callable[[], float],
        udp_payload: int = 1232,
        budget: int = OUT_BUDGET,
    ) -> None:
        self.zones = zones
        self.settings = settings
        self.keyring = keyring
        self.state_dir = state_dir
        self.clock = clock
        self.udp_payload = udp_payload
        self.budget = budget
        self.refusals = RateLimitedLog()
        self.results: dict[str, int] = {}

    @classmethod
    def from_config(
        cls, config: Config, zones: ZoneTable, clock: Callable[[], float]
    ) -> XfrEndpoint:
        keyring = {key.name: key.to_dnspython() for key in config.tsig_keys}
        return cls(
            zones,
            provide_settings(config),
            keyring,
            config.server.state_dir,
            clock,
            udp_payload=config.server.udp_payload,
        )

    def counters(self) -> dict[str, int]:
        return {f"xfrout.{result}": count for result, count in self.results.items()}

    def _count(self, result: provide.Result) -> None:
        self.results[result.value] = self.results.get(result.value, 0) + 1

    def __call__(self, data: bytes, query: wire.Query, tcp: bool, client: object) -> bytes | None:
        now = self.clock()
        try:
            source = client_address(client)[0]
        except ValueError:
            source = "unknown"
        published = self.zones.get(query.qkey)
        tsig = provide.verify_tsig(data, self.keyring, now) if query.tsig else provide.TsigCheck()
        key = self.keyring.get(tsig.key) if tsig.key else None
        view = self._view(published, query.qkey)
        decision = provide.decide(view, source, tsig, tcp, query.qtype)
        zone_text = names.to_text(query.qkey).rstrip(".") or "."
        if not decision.allowed:
            self._count(decision.result)
            self._log_refusal(source, now, f"zone {zone_text}: {decision.reason}")
            return provide.refusal(data, query, decision, tsig, key, now, self.udp_payload)
        assert published is not None and published.snapshot is not None
        snapshot = published.snapshot
        question = data[12 : query.question_end]
        messages: Iterator[bytes]
        if query.qtype == provide.AXFR:
            result = provide.Result.AXFR
            messages = axfr_messages(
                snapshot, query.id, query.flags, question, query.qkey, budget=self.budget
            )
        else:
            client_serial = provide.ixfr_client_serial(data, query)
            if client_serial is None:
                self._count(provide.Result.FORMERR)
                formerr = provide.Decision(False, provide.Result.FORMERR, provide.FORMERR)
                return provide.refusal(data, query, formerr, tsig, key, now, self.udp_payload)
            steps = self._ixfr_steps(snapshot, client_serial) if tcp else []
            if steps is None:
                result = provide.Result.IXFR_AS_AXFR
                messages = axfr_messages(
                    snapshot, query.id, query.flags, question, query.qkey, budget=self.budget
                )
            else:
                # No steps: the client is current, or asked over UDP, where Knot answers
                # with the SOA alone (RFC 1995 2) and the client comes back over TCP.
                result = provide.Result.IXFR if steps else provide.Result.UP_TO_DATE
                if not tcp:
                    result = provide.Result.UDP_SOA
                messages = ixfr_messages(
                    snapshot, steps, query.id, query.flags, question, query.qkey, budget=self.budget
                )
        self._count(result)
        if result not in (provide.Result.UDP_SOA, provide.Result.UP_TO_DATE):
            log.info(
                "zone %s: %s serial %d to %s%s",
                zone_text,
                result.value,
                snapshot.serial,
                source,
                f" (key {tsig.key})" if tsig.key else "",
            )
        if query.edns is not None and edns_options.asked_expire(query.edns.options):
            seconds = edns_options.expire_seconds(
                now, published.expires_at, published.signatures_until, snapshot.soa_rdata
            )
            messages = _first_with_opt(messages, self.udp_payload, edns_options.expire(seconds))
        if key is not None:
            messages = provide.sign_stream(messages, key, tsig.request_mac, now)
        first = next(messages)
        if not tcp:
            return first
        return MessageStream(first, messages)

    def signed_query(
        self,
        data: bytes,
        query: wire.Query,
        answer: Callable[[bytes, str | None], bytes | None],
    ) -> bytes | None:
        """Downstreams sign their SOA checks with the transfer key: verify, answer, sign.

        Any key we hold is accepted here, as Knot does (the ACL guards transfers, not
        queries); an unknown key or a bad MAC gets NOTAUTH with the TSIG error."""
        now = self.clock()
        tsig = provide.verify_tsig(data, self.keyring, now)
        if tsig.error:
            self._count(provide.Result.QUERY_BAD_TSIG)
            refused = provide.Decision(False, provide.Result.QUERY_BAD_TSIG, provide.NOTAUTH)
            return provide.refusal(data, query, refused, tsig, None, now, self.udp_payload)
        unsigned = provide.strip_tsig(data)
        response = answer(unsigned, tsig.key) if unsigned is not None else None
        if response is None:
            return None
        key = self.keyring.get(tsig.key) if tsig.key else None
        return provide.sign_answer(data, response, tsig, key, now)

    def allows_query(self, origin: bytes, client: object, key: str | None) -> bool:
        """Whether provide-xfr admits `client` with `key` (verified; None: unsigned) to
        the zone `origin`: the responder answers a catalog zone only to such clients."""
        settings = self.settings.get(origin)
        if settings is None:
            return False
        try:
            source = client_address(client)[0]
        except ValueError:
            return False
        return acl_allows(settings.acl, source, key) is not None

    def _view(self, published: PublishedZone | None, origin: bytes) -> provide.ZoneView | None:
        if published is None:
            return None
        settings = self.settings.get(origin) or ProvideSettings(())
        loaded = published.snapshot is not None
        # Past expire, as the main process told this worker (on-expire = servfail or not).
        expired = loaded and (published.expired_at is not None or published.servfail)
        return provide.ZoneView(settings.acl, loaded, expired, settings.provide_expired)

    def _log_refusal(self, source: str, now: float, reason: str) -> None:
        allowed, suppressed = self.refusals.allow(source, now)
        if allowed:
            extra = f" ({suppressed} more not logged)" if suppressed else ""
            log.warning("transfer refused: %s%s", reason, extra)

    # -- state directory (read only) ----------------------------------------------------

    def _zone_dir(self, origin: bytes) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / zone_dir_name(origin)

    def _ixfr_steps(self, snapshot: Snapshot, client_serial: int) -> list[IxfrStep] | None:
        """The journal's steps from the client's serial to the served one; None: not there."""
        if client_serial == snapshot.serial or provide.serial_newer(client_serial, snapshot.serial):
            return []
        zone_dir = self._zone_dir(snapshot.origin)
        if zone_dir is None:
            return None
        try:
            with open(zone_dir / FULL_NAME, "rb") as handle:
                full = decode_full_header(handle.read(4096))
            data = (zone_dir / JOURNAL_NAME).read_bytes()
        except (OSError, ValueError):
            return None
        scanned = journal.scan(data)
        if scanned.header is None or scanned.header.generation != full.generation:
            return None  # a journal left from an older full copy: not ours to replay
        refs = scanned.entries
        plan = provide.plan_ixfr(
            [(ref.from_serial, ref.to_serial) for ref in refs], client_serial, snapshot.serial
        )
        if not plan:
            return None
        steps: list[IxfrStep] = []
        size = 0
        for index in plan:
            try:
                deleted, added, _meta = journal.decode_entry(data, refs[index])
            except (ValueError, EOFError, TypeError):
                return None
            step = provide.journal_step(snapshot.origin, deleted, added)
            if step is None:
                return None
            size += len(step.deleted) + len(step.added)
            if size > snapshot.record_count:
                return None  # the diffs outweigh the zone: AXFR-style is smaller
            steps.append(step)
        return steps


def _first_with_opt(messages: Iterator[bytes], payload: int, options: bytes) -> Iterator[bytes]:
    """The transfer's messages, the first one with an OPT holding `options` (before TSIG)."""
    yield edns_options.with_opt(next(messages), payload, options)
    yield from messages
