"""Issue 13, items 3 and 4 as periodic, alerted checks, against real components (the loopback
hierarchy of authd/bench/hierarchy.py: knotd parent with the DS, knotd provider signing
online, authd as the extra NS set, unbound validating), plus a real Prometheus scraping authd
with the shipped rules.

- The provider's copy changes while its ACL refuses authd's transfers: within 2 drift
  intervals authd's status shows the provider ahead (serial-ahead), /metrics has
  authd_peer_ahead_since_timestamp_seconds, and Prometheus evaluates the AuthdBehindProvider
  expression true on what it scraped. With the ACL back, authd catches up and it clears.
- authd's NS withdrawn from the parent: the periodic delegation check finds it.
- A KSK rollover done wrong on the provider (new key, old key removed, the parent's DS left
  as it was): the transfer is rejected with `ds-mismatch`, the old copy keeps serving, and
  with the provider stopped unbound's answers through authd stay secure.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from authd.bench.hierarchy import (
    BINARIES,
    OWN_NS,
    PARENT,
    ZONE,
    Hierarchy,
    Layout,
    can_bind_port_53,
    start_hierarchy,
)
from authd.bench.peers import free_port
from authd.bench.primaries import wait_for
from tests.conftest import interop_required, require_binary

pytestmark = pytest.mark.interop

DRIFT_INTERVAL = 1.0
RULES = Path(__file__).resolve().parents[2] / "contrib" / "prometheus" / "alerts.yml"
SETTINGS: dict[str, str | int | list[str]] = {
    "drift-interval": "1s",
    # refresh + retry = 3 s, so that "ahead for longer than refresh + retry" comes soon
    "refresh-max": "2s",
    "retry-max": "1s",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    binaries = {name: require_binary(name) for name in (*BINARIES, "prometheus")}
    why = can_bind_port_53()
    if why is not None:
        if interop_required():
            pytest.fail(f"{why}; AUTHD_REQUIRE_INTEROP=1 demands it", pytrace=False)
        print(f"SKIP: {why}")
        pytest.skip(why)
    hierarchy = start_hierarchy(
        binaries, tmp_path_factory.mktemp("drift"), Layout(block=14), SETTINGS
    )
    try:
        yield hierarchy
    finally:
        hierarchy.stop()


def status(tree: Hierarchy) -> dict[str, Any]:
    done = tree.authd.cli("zone", "status", ZONE, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    return dict(data[0] if isinstance(data, list) else data)


def provider_peer(tree: Hierarchy) -> dict[str, Any] | None:
    peers = status(tree).get("drift", {}).get("peers", [])
    address = f"{tree.layout.provider}@53"
    return next((p for p in peers if p["peer"] == address), None)


def kinds(peer: dict[str, Any] | None) -> set[str]:
    return {f["kind"] for f in peer["findings"]} if peer else set()


def scrape(tree: Hierarchy) -> str:
    url = f"http://127.0.0.1:{tree.authd.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a scrape, None when absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def set_transfer_acl(tree: Hierarchy, allowed: bool) -> None:
    """Reconfigure the provider's knotd: with `allowed` False, example.test has no transfer
    ACL, so knotd refuses authd's IXFR/AXFR (SOA queries and NOTIFY go on)."""
    provider = tree.provider
    for zone in provider.zones:
        if zone.name == ZONE:
            zone.transfer = allowed
    provider.conf.write_text(provider.config_text())
    provider.control("reload")


class Prometheus:
    """A real Prometheus scraping authd every second with the shipped rules loaded."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port("127.0.0.1")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "authd", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
            )

    def query(self, expr: str) -> list[dict[str, Any]] | None:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
        except OSError:
            return None
        return list(body["data"]["result"]) if body.get("status") == "success" else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def alert_expr(name: str) -> str:
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return str(rule["expr"])
    raise AssertionError(f"no alert {name} in {RULES}")


def test_drift_baseline_agrees(tree: Hierarchy) -> None:
    """The peer (found through ns-names and the resolver) agrees with authd."""
    serial = tree.authd.serial(ZONE)
    assert wait_for(
        lambda: (p := provider_peer(tree)) is not None and p["serial"] == serial and not kinds(p),
        20,
        0.2,
    ), json.dumps(status(tree).get("drift"), indent=1) + tree.logs()
    metrics = scrape(tree)
    peer = {"zone": ZONE, "peer": f"{tree.layout.provider}@53"}
    assert sample(metrics, "authd_peer_serial", **peer) == serial, metrics
    assert sample(metrics, "authd_zone_drift", kind="serial-ahead", **peer) == 0, metrics
    assert sample(metrics, "authd_peer_ahead_since_timestamp_seconds", **peer) is None


def test_refused_transfers_are_drift_and_alert(tree: Hierarchy, tmp_path: Path) -> None:
    before = tree.authd.serial(ZONE) or 0
    prometheus = Prometheus(
        require_binary("prometheus"),
        tmp_path / "prometheus",
        f"127.0.0.1:{tree.authd.metrics_port}",
    )
    expr = alert_expr("AuthdBehindProvider")
    try:
        set_transfer_acl(tree, False)
        tree.provider.change(ZONE, ("set", f"drift.{ZONE}.", "60", "A", "192.0.2.99"))
        changed = time.monotonic()
        newer = tree.provider.serial(ZONE) or 0
        assert newer > before
        # within 2 drift intervals (and 2 s for the queries and the status call)
        assert wait_for(
            lambda: "serial-ahead" in kinds(provider_peer(tree)), 2 * DRIFT_INTERVAL + 2.0, 0.1
        ), json.dumps(status(tree).get("drift"), indent=1) + tree.logs()
        print(f"drift reported {time.monotonic() - changed:.2f} s after the change")
        peer = provider_peer(tree)
        assert peer is not None and peer["serial"] == newer and peer["ahead_since"], peer
        assert tree.authd.serial(ZONE) == before  # the transfers are refused
        text = scrape(tree)
        labels = {"zone": ZONE, "peer": f"{tree.layout.provider}@53"}
        assert sample(text, "authd_peer_ahead_since_timestamp_seconds", **labels), text
        assert sample(text, "authd_zone_drift", kind="serial-ahead", **labels) == 1, text
        assert sample(text, "authd_zone_retry_interval_seconds", zone=ZONE) == 1, text
        # refresh + retry = 3 s: Prometheus, scraping every second, finds the rule true
        assert wait_for(lambda: bool(prometheus.query(expr)), 30, 0.5), prometheus.log() + scrape(
            tree
        )
        print(f"alert expression true {time.monotonic() - changed:.2f} s after the change")
        [firing] = prometheus.query(expr) or [{}]
        assert firing["metric"]["zone"] == ZONE, firing
        assert firing["metric"]["peer"] == f"{tree.layout.provider}@53", firing
    except BaseException:
        prometheus.stop()
        raise
    finally:
        set_transfer_acl(tree, True)
    try:
        # transfers allowed again: authd catches up, the drift and the rule clear
        assert tree.authd.wait_serial(ZONE, newer, 20), tree.logs()
        assert wait_for(lambda: not kinds(provider_peer(tree)), 10, 0.2), status(tree)
        assert wait_for(lambda: prometheus.query(expr) == [], 15, 0.5), prometheus.log()
    finally:
        prometheus.stop()


def test_withdrawn_delegation_is_a_periodic_finding(tree: Hierarchy) -> None:
    tree.withdraw_own_ns()
    try:

        def found() -> bool:
            findings = (status(tree).get("delegation") or {}).get("findings") or []
            return any(f["kind"] == "own-ns-not-delegated" for f in findings)

        assert wait_for(found, 20, 0.3), status(tree).get("delegation")
        found_now = sample(
            scrape(tree), "authd_zone_delegation_findings", zone=ZONE, kind="own-ns-not-delegated"
        )
        assert found_now == 1
    finally:
        tree.parent.change(
            PARENT,
            ("set", f"{ZONE}.", "60", "NS", f"{OWN_NS}."),
            ("set", f"{OWN_NS}.", "60", "A", tree.layout.authd),
        )


def keymgr(tree: Hierarchy, *args: str) -> str:
    provider = tree.provider
    done = subprocess.run(
        [provider.keymgr, "-c", str(provider.conf), ZONE, *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_wrong_ksk_rollover_is_rejected_as_ds_mismatch(tree: Hierarchy) -> None:
    """Last: it stops the provider."""
    served = tree.authd.serial(ZONE)
    assert served is not None and served == tree.provider.serial(ZONE), tree.logs()
    old_keys = [line.split()[0] for line in keymgr(tree, "list").splitlines() if line.strip()]
    keymgr(tree, "generate", "algorithm=ecdsap256sha256", "ksk=yes", "zsk=yes")
    for key in old_keys:
        keymgr(tree, "delete", key)
    tree.provider.control("zone-sign", ZONE)
    assert wait_for(lambda: (tree.provider.serial(ZONE) or 0) > served, 15), tree.logs()

    def rejected() -> bool:
        return "ds-mismatch" in (status(tree).get("last_rejection") or "")

    assert wait_for(rejected, 20, 0.3), json.dumps(status(tree), indent=1) + tree.logs()
    assert tree.authd.serial(ZONE) == served  # the old copy keeps serving
    text = scrape(tree)
    rejected_total = sample(text, "authd_zone_rejections_total", zone=ZONE, reason="ds-mismatch")
    assert rejected_total is not None and rejected_total >= 1, text
    assert "ds-mismatch" in tree.authd.log()
    tree.provider.stop()
    assert wait_for(lambda: tree.resolver.secure(f"h3.{ZONE}.", "A"), 30, 0.5), tree.logs()
    assert tree.resolver.secure(f"{ZONE}.", "DNSKEY"), tree.logs()
