"""Peer configs: every server binds the same address (the load address, or --listen)."""

from __future__ import annotations

from pathlib import Path

from authd.bench import peers


def settings(listen: str = "") -> peers.PeerSettings:
    return peers.PeerSettings(
        "bench.test.", Path("/z/bench.zone"), "127.0.0.1", 5399, 1, Path("/w"), listen
    )


def test_servers_bind_the_load_address_by_default() -> None:
    s = settings()
    assert s.bind == "127.0.0.1"
    assert "listen: 127.0.0.1@5399" in peers.knot_config(s)
    assert "ip-address: 127.0.0.1@5399" in peers.nsd_config(s)
    assert 'listen = ["127.0.0.1@5399"]' in peers.authd_config(s)


def test_listen_puts_every_server_on_the_wildcard() -> None:
    s = settings("0.0.0.0")
    assert s.bind == "0.0.0.0"
    assert "listen: 0.0.0.0@5399" in peers.knot_config(s)
    assert "ip-address: 0.0.0.0@5399" in peers.nsd_config(s)
    assert 'listen = ["0.0.0.0@5399"]' in peers.authd_config(s)
    v6 = settings("::")
    assert "do-ip6: yes" in peers.nsd_config(v6)
    assert 'listen = ["::@5399"]' in peers.authd_config(v6)
