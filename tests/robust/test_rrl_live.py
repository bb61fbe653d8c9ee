"""RRL against a live server: a burst from one spoofed source is cut to the rate, every
2nd limited answer slips out truncated, another source and TCP are unaffected.

Runs authd through tests/robust/rrl_server.py, which installs RRL the way
App._make_responder does once app.py wires it (and changes nothing if it already does).
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.query

from tests.robust.amplification import VICTIM, burst
from tests.robust.conftest import Launch

RATE = 20
QUERIES = 600
SECONDS = 1.0


def test_burst_from_one_source_is_limited(launch: Launch) -> None:
    server = launch(extra=f"[rrl]\nrate = {RATE}\nslip = 2\n", module="tests.robust.rrl_server")
    result = burst(server.port, QUERIES, SECONDS)
    full = result.responses - result.truncated
    # Three questions: three buckets of RATE a second, each starting with a second's worth.
    allowed = 3 * RATE * (result.seconds + 1)
    assert 0 < full <= allowed, (full, allowed)
    limited = result.queries - full
    assert abs(result.truncated - limited / 2) <= 2, (result.truncated, limited)
    assert result.factor < 3.0
    # Another client gets whole answers, and so does the limited source over TCP.
    assert server.ask("www.example.test.", "A").answer
    query = dns.message.make_query("example.test.", "NS", want_dnssec=True)
    tcp = dns.query.tcp(query, "127.0.0.1", port=server.port, source=VICTIM, timeout=2)
    assert tcp.answer and not tcp.flags & dns.flags.TC
    print(
        f"rrl live: {result.queries} queries -> {full} answers, {result.truncated} "
        f"truncated, amplification {result.factor:.2f}x"
    )
