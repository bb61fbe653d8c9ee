"""`authd` with RRL installed the way App._make_responder is meant to (see the RRL report):
for measuring RRL against a live server before app.py wires it in. Usage as `authd`:

    python -m tests.robust.rrl_server serve -c authd.toml
"""

from __future__ import annotations

from authd import app, cli
from authd.serve import rrl, stats
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

    app.App._make_responder = make_responder  # type: ignore[method-assign]
    counters = rrl.with_rrl_counters(stats.responder_counters)
    setattr(app, "responder_counters", counters)  # noqa: B010 - the name App.start reads


if __name__ == "__main__":
    install()
    cli.main()
