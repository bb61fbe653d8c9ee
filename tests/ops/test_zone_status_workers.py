"""`authd zone status` says `ok` only while the workers answer for the zone (issue 15: with
every worker dead, status used to say `ok` for every zone while nothing answered)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from authd import control
from tests.ops.conftest import start_server, stop_server, worker_children


def state(directory: Path) -> str:
    (status,) = control.call(directory / "authd.sock", "status", zone="example.test", timeout=5)
    return str(status["state"])


def test_status_is_not_ok_while_a_worker_slot_has_no_serving_worker(tmp_path: Path) -> None:
    server = start_server(tmp_path / "status", workers=2)
    try:
        assert state(server.directory) == "ok"
        seen: set[str] = set()
        # Kill the same slot's fresh workers: each young crash doubles the restart delay
        # (0.4 s, 0.8 s, ...), a window status must report.
        for _ in range(3):
            workers = [pid for pid, _ in worker_children(server.process.pid)]
            assert len(workers) == 2
            os.kill(workers[0], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                now = state(server.directory)
                seen.add(now)
                if now == "not-answering":
                    break
            deadline = time.monotonic() + 15
            while state(server.directory) != "ok" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert state(server.directory) == "ok", server.stderr()[-2000:]
        assert "not-answering" in seen, seen
        assert "re-forking it" in server.stderr()
    finally:
        stop_server(server)
