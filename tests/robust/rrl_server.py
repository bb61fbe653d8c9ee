"""`authd` with RRL installed the way App._make_responder is meant to (see the RRL report):
for measuring RRL against a live server before app.py wires it in. Usage as `authd`:

    python -m tests.robust.rrl_server serve -c authd.toml
"""

from __future__ import annotations

from authd import app, cli
from authd.serve import rrl
from authd.serve.workers import ResponderLike, worker_count
from authd.serve.zonetable import ZoneTable


def install() -> None:
    plain = app.App._make_responder

    def make_responder(self: app.App, table: ZoneTable) -> ResponderLike:
        responder = plain(self, table)
        if isinstance(responder, rrl.RateLimiter):
            return responder  # app.py already does it
        workers = worker_count(self.config.server.workers)
        return rrl.install(responder, self.config.rrl, workers)

    plain_counters = app.worker_counters

    def counters(responder: ResponderLike) -> dict[str, int]:
        return {**plain_counters(responder), **rrl.rrl_counters(responder)}

    app.App._make_responder = make_responder  # type: ignore[method-assign]
    app.worker_counters = counters


if __name__ == "__main__":
    install()
    cli.main()
