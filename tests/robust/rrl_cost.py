"""Hot-path cost of RRL: respond() on a cache hit with RRL off (not installed) and on.

    python -m tests.robust.rrl_cost

"on" uses a rate no test traffic reaches, so it measures the bookkeeping every UDP
answer pays (key, clock, bucket), not the cheaper drop path.
"""

from __future__ import annotations

import socket
import struct
import sys
import timeit

import dns.message

from authd.config import RrlConfig
from authd.serve import rrl
from authd.serve.responder import Responder
from authd.serve.zonetable import ZoneTable
from authd.zone import names
from authd.zone.loader import load_zone_file
from tests.robust.conftest import EXAMPLE_ZONE

NUMBER = 200_000


def main() -> None:
    table = ZoneTable()
    table.publish(
        names.key_from_text("example.test."), load_zone_file(EXAMPLE_ZONE, "example.test.")
    )
    responder = Responder(table, identity="", version="", nsid=b"", udp_payload=1232)
    client = (
        socket.AF_INET.to_bytes(2, sys.byteorder)
        + struct.pack(">H", 5353)
        + socket.inet_aton("192.0.2.1")
        + bytes(8)
    )
    off = rrl.install(responder, RrlConfig(rate=0), 1)
    on = rrl.install(responder, RrlConfig(rate=10**7), 1)
    assert off is responder and on is not responder
    for label, name in (("positive", "www.example.test."), ("nxdomain", "nope.example.test.")):
        query = dns.message.make_query(name, "A", use_edns=0).to_wire()
        for mode, respond in (("off", off.respond), ("on", on.respond)):
            respond(query, False, client)  # fill the cache
            timer = timeit.Timer(
                "respond(query, False, client)",
                globals={"respond": respond, "query": query, "client": client},
            )
            best = min(timer.repeat(number=NUMBER, repeat=7))
            print(f"{label:9s} RRL {mode:3s}: {best / NUMBER * 1e9:6.0f} ns/query")


if __name__ == "__main__":
    main()
