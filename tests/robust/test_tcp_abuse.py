"""Idle and one-byte-per-second TCP connections against a small connection cap.

RFC 7766 6.2.3 (and Knot): at the cap the longest-idle connection makes room, idle timeouts
shrink under pressure and partial messages have a read deadline, so a new client still
gets its answer quickly, and once the attackers leave the server holds no connections.
The larger measurement is `python -m tests.robust.tcp_attack` (see tcp_attack.py).
"""

from __future__ import annotations

from tests.robust import tcp_attack
from tests.robust.conftest import Launch, can_bind

MAX_CLIENTS = 200
IDLE = 300
SLOW = 100
SECONDS = 5.0


def test_new_client_answered_under_idle_and_slow_flood(launch: Launch) -> None:
    assert can_bind("127.0.1.1"), "127.0.x.y sources must be bindable (Linux loopback /8)"
    tcp_attack.raise_fd_limit(4 * (IDLE + SLOW))
    server = launch(f"tcp-max-clients = {MAX_CLIENTS}")
    report = tcp_attack.run(
        server.port, IDLE, SLOW, SECONDS, server.tcp_connections, probe_every=1.0
    )
    print(
        f"tcp abuse: probes {[round(p * 1000) for p in report.probes]} ms, failed "
        f"{report.failed_probes}; attacker connects {report.connects} "
        f"(reconnects {report.reconnects}); server connections peak "
        f"{report.peak_server_connections}, after close {report.connections_after} "
        f"within {report.settle_seconds:.1f} s"
    )
    assert server.alive(), server.output()
    assert not report.failed_probes, report.failed_probes
    assert len(report.probes) >= 3
    assert max(report.probes) < 1.0
    # The attackers really pressed: more connections than the cap were made.
    assert report.connects > MAX_CLIENTS
    assert report.connections_after <= 1
    assert "Traceback" not in server.output()
