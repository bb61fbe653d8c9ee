"""The launchers themselves: named as a TSIG-protected primary, the corpus's coverage."""

from __future__ import annotations

import base64
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import dns.xfr
import dns.zone
import pytest

from authd.bench.servers import TsigKey, running, start_named
from tests.interop.corpus import CORPUS
from tests.interop.zones import ZONE_SPECS, render_unsigned
from tests.support.system import require_binary


def test_corpus_covers_the_cases_of_issue_2() -> None:
    ids = [q.qid for q in CORPUS]
    assert len(ids) == len(set(ids)) >= 500
    for spec in ZONE_SPECS:
        assert sum(spec.origin in qid.lower() for qid in ids) >= 100, spec.origin
    for needle in ("/CH/", "/AXFR/", "/IXFR/", "-v1", "noedns", "edns512", "edns4096", "-nsid"):
        assert any(needle in qid for qid in ids), needle
    assert any(qid != qid.lower() for qid in ids)  # 0x20 mixed case
    assert sum(q.malformed for q in CORPUS) >= 20


@pytest.mark.interop
def test_named_primary_serves_axfr_only_with_its_tsig_key(tmp_path: Path) -> None:
    named = require_binary("named")
    zone_file = render_unsigned(ZONE_SPECS[0], tmp_path)
    key = TsigKey("xfr-key", "hmac-sha256", base64.b64encode(b"k" * 32).decode())
    server = start_named(
        named,
        tmp_path / "named",
        {"plain.test": zone_file},
        keys=[key],
        allow_transfer='key "xfr-key";',
    )
    with running(server):
        keyring = dns.tsigkeyring.from_text({key.name: (key.algorithm, key.secret)})
        zone = dns.zone.Zone("plain.test.")
        query, _ = dns.xfr.make_query(zone, keyring=keyring, keyname=dns.name.from_text(key.name))
        dns.query.inbound_xfr(server.host, zone, query, port=server.port, timeout=5)
        expected = dns.zone.from_file(str(zone_file), "plain.test.", relativize=False)
        assert len(zone.nodes) == len(expected.nodes)
        unsigned = dns.message.make_query("plain.test.", dns.rdatatype.AXFR)
        refused = dns.query.tcp(unsigned, server.host, port=server.port, timeout=5)
        assert refused.rcode() in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)
    assert server.process.poll() is not None


def test_require_binary_skips_or_fails_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHD_REQUIRE_INTEROP", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_binary("authd-no-such-program")
    monkeypatch.setenv("AUTHD_REQUIRE_INTEROP", "1")
    with pytest.raises(pytest.fail.Exception):
        require_binary("authd-no-such-program")
    assert Path(require_binary("sh")).name == "sh"
