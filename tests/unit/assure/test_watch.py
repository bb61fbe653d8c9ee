"""The periodic checks' record (pure): since when a peer is ahead, what an unreachable round
keeps, forgotten peers, delegation results, pacing bounds, and the status shapes."""

from __future__ import annotations

from authd.assure import watch as w
from authd.zone.delegation import DelegationFinding
from authd.zone.drift import DriftFinding

AHEAD = DriftFinding("serial-ahead", "peer serves serial 9, authd 8")
DOWN = DriftFinding("unreachable", "no answer to the SOA query")
P, Q = "192.0.2.53@53", "198.51.100.53@53"


def test_ahead_since_is_the_first_ahead_round_and_survives_unreachable_rounds() -> None:
    watch = w.peers_checked(w.Watch(), [(P, 8, [])], 100.0)
    assert watch.peers[0].ahead_since is None and watch.rounds == 1
    watch = w.peers_checked(watch, [(P, 9, [AHEAD])], 160.0)
    watch = w.peers_checked(watch, [(P, 9, [AHEAD])], 220.0)
    assert watch.peers[0].ahead_since == 160.0
    watch = w.peers_checked(watch, [(P, None, [DOWN])], 280.0)
    [peer] = watch.peers
    assert peer.ahead_since == 160.0 and peer.serial == 9 and peer.checked_at == 280.0
    assert [f.kind for f in peer.findings] == ["unreachable"]
    watch = w.peers_checked(watch, [(P, 9, [])], 340.0)  # caught up
    assert watch.peers[0].ahead_since is None and watch.rounds == 5


def test_a_peer_no_longer_asked_is_forgotten() -> None:
    watch = w.peers_checked(w.Watch(), [(P, 9, [AHEAD]), (Q, 8, [])], 100.0)
    watch = w.peers_checked(watch, [(Q, 8, [])], 160.0, note="")
    assert [p.peer for p in watch.peers] == [Q]


def test_delegation_keeps_the_last_answered_findings() -> None:
    found = DelegationFinding("own-ns-not-delegated", "ns2.example.test is not in the parent")
    watch = w.delegation_checked(w.Watch(), [found], 100.0, "parent 192.0.2.1@53")
    watch = w.delegation_checked(watch, None, 400.0, "no answer from 192.0.2.1@53 within 2 s")
    assert watch.delegation == (found,) and watch.delegation_at == 100.0
    status = w.delegation_status(watch)
    assert status["findings"] == [{"kind": "own-ns-not-delegated", "detail": found.detail}]
    assert status["source"] == "no answer from 192.0.2.1@53 within 2 s"
    assert w.delegation_status(w.Watch())["findings"] is None  # never checked


def test_delegation_is_due_every_few_rounds() -> None:
    due = [w.Watch(rounds=n).delegation_due() for n in range(2 * w.DELEGATION_EVERY)]
    assert due.count(True) == 2 and due[0] and due[w.DELEGATION_EVERY]


def test_pacing_bounds() -> None:
    assert w.first_round(1000.0, 60.0, 0.0) == 1000.0
    assert 1000.0 + 59.9 < w.first_round(1000.0, 60.0, 0.999) < 1060.0
    low, high = w.next_round(0.0, 60.0, 0.0), w.next_round(0.0, 60.0, 0.999999)
    assert low == 60.0 * (1 - w.JITTER / 2) and 60.0 < high <= 60.0 * (1 + w.JITTER / 2)


def test_drift_status_shape() -> None:
    watch = w.peers_checked(w.Watch(), [(P, 9, [AHEAD])], 1_800_000_000.0)
    status = w.drift_status(watch, 60.0)
    assert status["interval"] == 60.0 and status["last_round"] == "2027-01-15T08:00:00Z"
    assert status["peers"] == [
        {
            "peer": P,
            "serial": 9,
            "last_checked": "2027-01-15T08:00:00Z",
            "ahead_since": "2027-01-15T08:00:00Z",
            "findings": [{"kind": "serial-ahead", "detail": AHEAD.detail}],
        }
    ]
