"""authd.config: provide-xfr, provide-xfr-expired, notify and notify-delay (a distribution tier)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from authd.config import load_config
from tests.support.config import PREAMBLE, only_error, write_config

DOWN = """
[[remote]]
id = "edge1"
addresses = ["192.0.2.10", "2001:db8::10@5300"]
key = "other-key"

[[template]]
id = "hub"
primaries = ["provider"]
provide-xfr = [{ from = "192.0.2.0/24", key = "xfr-key" }, "edge1"]
notify = ["edge1"]
notify-delay = "2s"
"""


def test_provide_xfr_and_notify_from_template_and_zone(tmp_path: Path) -> None:
    text = (
        PREAMBLE
        + DOWN
        + '[[zone]]\nname = "a.test"\ntemplate = "hub"\n'
        + '[[zone]]\nname = "b.test"\nfile = "zones/local.zone"\n'
        + 'provide-xfr = ["198.51.100.0/24"]\nprovide-xfr-expired = true\nnotify = ["edge1"]\n'
        + '[[zone]]\nname = "c.test"\nprimaries = ["provider"]\n'
    )
    config = load_config(write_config(tmp_path, text))
    a, b, c = config.zones
    assert [
        (str(e.network), e.key.name if e.key else None, e.remote_id) for e in a.provide_xfr
    ] == [
        ("192.0.2.0/24", "xfr-key.", None),
        ("192.0.2.10/32", "other-key.", "edge1"),  # a remote id brings its key
        ("2001:db8::10/128", "other-key.", "edge1"),
    ]
    assert [r.id for r in a.notify] == ["edge1"] and a.notify_delay == 2.0
    assert not a.provide_xfr_expired
    assert b.provide_xfr[0].network == ipaddress.ip_network("198.51.100.0/24")
    assert b.provide_xfr[0].key is None and b.provide_xfr_expired
    assert [r.id for r in b.notify] == ["edge1"] and b.notify_delay == 0.0
    assert c.provide_xfr == () and c.notify == ()  # nothing is provided unless configured


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ('provide-xfr = [{ key = "xfr-key" }]\n', "zone[0].provide-xfr[0].from", "missing"),
        (
            'provide-xfr = [{ from = "192.0.2.0/24", key = "nokey" }]\n',
            "zone[0].provide-xfr[0].key",
            "not defined",
        ),
        ('provide-xfr = ["stranger"]\n', "zone[0].provide-xfr[0]", "not an address prefix"),
        ('provide-xfr = "192.0.2.0/24"\n', "zone[0].provide-xfr", "expected a list"),
        ('notify = ["gone"]\n', "zone[0].notify[0]", "no [[remote]]"),
        ('notify = ["provider", "provider"]\n', "zone[0].notify[1]", "listed twice"),
        ('notify-delay = "2h"\n', "zone[0].notify-delay", "out of range"),
        ("provide-xfr-expired = 1\n", "zone[0].provide-xfr-expired", "true or false"),
    ],
)
def test_errors(tmp_path: Path, body: str, key: str, reason: str) -> None:
    issue = only_error(
        tmp_path, PREAMBLE + '[[zone]]\nname = "a.test"\nprimaries = ["provider"]\n' + body
    )
    assert issue.key == key
    assert reason in issue.reason
