"""What the periodic drift and delegation checks found, per zone, and when the next round is
due. Pure: the rounds' results and `now` in, the record out (periodic.py asks the peers).

Per zone, one `Watch`: per peer the last serial, when it was checked, its findings (kinds of
drift.py) and since when it has been ahead of authd; the delegation findings (kinds of
delegation.py) of the last check that got an answer from the parent.

Invariants:
- `ahead_since` is set exactly while the peer's last answered round said serial-ahead; it
  keeps the time of the first such round (a peer that stops answering keeps it: not knowing
  is not catching up), and is cleared by the first answered round that is not ahead.
- A peer no longer in the peer list is forgotten (its series go with it).
- Rounds are paced: the first is spread over one interval (rand), each next one is one
  interval (jittered by +-JITTER/2) after the previous ended, so zones never fire together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from authd.horizon import rfc3339
from authd.zone.delegation import DelegationFinding
from authd.zone.drift import KINDS, DriftFinding

DELEGATION_KINDS = (
    "own-ns-not-delegated",
    "own-ns-not-in-zone",
    "glue-differs",
    "ds-mismatch",
    "ds-without-keys",
    "cds-disagrees",
)
JITTER = 0.2  # each interval is stretched or shrunk by up to 10%
DELEGATION_EVERY = 5  # the parent is asked every this many drift rounds (the first included)

__all__ = ["DELEGATION_KINDS", "KINDS", "PeerWatch", "Watch"]


@dataclass(frozen=True, slots=True)
class PeerWatch:
    peer: str  # "address@port"
    serial: int | None = None  # None: never answered
    checked_at: float | None = None
    findings: tuple[DriftFinding, ...] = ()
    ahead_since: float | None = None


@dataclass(frozen=True, slots=True)
class Watch:
    """One zone's periodic checks."""

    rounds: int = 0  # rounds done (the rotating sample's index)
    peers: tuple[PeerWatch, ...] = ()
    peers_note: str = ""  # why no peer was checked, when none was
    delegation: tuple[DelegationFinding, ...] | None = None  # None: never checked
    delegation_at: float | None = None
    delegation_source: str = ""  # "parent 192.0.2.1@53", or why the last check got no answer
    last_round: float | None = None
    next_round: float | None = None

    def delegation_due(self) -> bool:
        return self.rounds % DELEGATION_EVERY == 0


def first_round(now: float, interval: float, rand: float) -> float:
    """Zones added together start spread over one interval (rand in [0, 1))."""
    return now + interval * rand


def next_round(now: float, interval: float, rand: float) -> float:
    return now + interval * (1.0 + JITTER * (rand - 0.5))


def peers_checked(
    watch: Watch,
    results: Iterable[tuple[str, int | None, Iterable[DriftFinding]]],
    now: float,
    note: str = "",
) -> Watch:
    """One round's answers, (peer, serial or None, findings) per peer asked."""
    before = {p.peer: p for p in watch.peers}
    peers = []
    for peer, serial, found in results:
        findings = tuple(found)
        old = before.get(peer, PeerWatch(peer))
        kinds = {f.kind for f in findings}
        if serial is None:  # unreachable: what it served last is still the best guess
            ahead_since = old.ahead_since
            serial = old.serial
        elif "serial-ahead" in kinds:
            ahead_since = old.ahead_since if old.ahead_since is not None else now
        else:
            ahead_since = None
        peers.append(PeerWatch(peer, serial, now, findings, ahead_since))
    return replace(
        watch, rounds=watch.rounds + 1, peers=tuple(peers), peers_note=note, last_round=now
    )


def delegation_checked(
    watch: Watch, findings: Iterable[DelegationFinding] | None, now: float, source: str
) -> Watch:
    """A delegation check: findings, or None when the parent did not answer (the last
    answered check's findings stay, the source says why they are old)."""
    if findings is None:
        return replace(watch, delegation_source=source)
    return replace(watch, delegation=tuple(findings), delegation_at=now, delegation_source=source)


def drift_status(watch: Watch, interval: float) -> dict[str, Any]:
    """The `drift` key of `authd zone status --json`."""
    return {
        "interval": interval,
        "last_round": rfc3339(watch.last_round),
        "next_round": rfc3339(watch.next_round),
        "note": watch.peers_note or None,
        "peers": [
            {
                "peer": p.peer,
                "serial": p.serial,
                "last_checked": rfc3339(p.checked_at),
                "ahead_since": rfc3339(p.ahead_since),
                "findings": [{"kind": f.kind, "detail": f.detail} for f in p.findings],
            }
            for p in watch.peers
        ],
    }


def delegation_status(watch: Watch) -> dict[str, Any]:
    """The `delegation` key of `authd zone status --json`."""
    return {
        "checked_at": rfc3339(watch.delegation_at),
        "source": watch.delegation_source or None,
        "findings": (
            None
            if watch.delegation is None
            else [{"kind": f.kind, "detail": f.detail} for f in watch.delegation]
        ),
    }
