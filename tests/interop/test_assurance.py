"""Issue 13, items 5 and 6, against real components: knotd as the parent (test., signed, with
the DS), knotd as the provider signing example.test online (NOTIFY, TSIG), authd as the extra
NS set, unbound validating from the parent's DS (authd/bench/hierarchy.py).

Baseline: unbound's answers are secure; `authd zone drill` passes; `authd zone report` says
independent. A DS at the parent that matches no key fails the drill and is ds-mismatch in the
report. Then authd's NS is withdrawn from the parent's delegation: the report names the
finding own-ns-not-delegated and exits 1. An own NS name inside provider.test (a zone only the
provider serves) is found through unbound and reported as ns-inside-provider-zone. Last, the
provider is stopped: unbound still gets secure answers, from authd alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from authd.bench.hierarchy import (
    BINARIES,
    OWN_NS,
    PARENT,
    PROVIDER_NS,
    PROVIDER_ZONE,
    ZONE,
    Hierarchy,
    can_bind_port_53,
    start_hierarchy,
)
from authd.bench.primaries import wait_for
from tests.conftest import interop_required, require_binary

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    binaries = {name: require_binary(name) for name in BINARIES}
    why = can_bind_port_53()
    if why is not None:
        if interop_required():
            pytest.fail(f"{why}; AUTHD_REQUIRE_INTEROP=1 demands it", pytrace=False)
        print(f"SKIP: {why}")
        pytest.skip(why)
    tree = start_hierarchy(binaries, tmp_path_factory.mktemp("hierarchy"))
    try:
        yield tree
    finally:
        tree.stop()


def run_json(tree: Hierarchy, *args: str) -> tuple[int, dict[str, object]]:
    done = tree.authd.cli(*args, "--json")
    assert done.stdout.strip(), done.stderr + tree.logs()
    return done.returncode, json.loads(done.stdout)


def test_baseline_answers_are_secure_through_unbound(hierarchy: Hierarchy) -> None:
    assert hierarchy.resolver.secure(f"{PARENT}.", "SOA"), hierarchy.logs()
    assert hierarchy.resolver.secure(f"www.{ZONE}.", "A"), hierarchy.logs()
    assert hierarchy.resolver.secure(f"{ZONE}.", "DNSKEY"), hierarchy.logs()


def test_drill_passes(hierarchy: Hierarchy) -> None:
    code, result = run_json(hierarchy, "zone", "drill", ZONE)
    print(json.dumps(result, indent=2))
    failed = [c for c in result["checks"] if not c["ok"]]  # type: ignore[union-attr]
    assert code == 0 and result["ok"] and not failed, failed
    names = [c["name"] for c in result["checks"]]  # type: ignore[union-attr]
    address = f"{hierarchy.layout.authd}@53"
    for transport in ("udp", "tcp"):
        for rtype in ("SOA", "NS", "DNSKEY"):
            assert f"{transport} {address} {ZONE} {rtype}" in names, names
    assert "parent-ds" in names and "verify against the DS" in names, names
    assert result["valid_until"] is not None  # knotd's signatures: about 14 days
    # the text form, as cron would mail it
    text = hierarchy.authd.cli("zone", "drill", ZONE)
    assert text.returncode == 0 and "drill passed" in text.stdout, text.stdout + text.stderr


def test_drill_and_report_catch_a_ds_that_matches_no_key(hierarchy: Hierarchy) -> None:
    """The registrar holds a DS for a key the zone does not use: validating resolvers would
    SERVFAIL. The drill's verification against the parent's DS fails, and the report says
    ds-mismatch. The right DS is put back afterwards."""
    tree = hierarchy
    tag, algorithm, digest_type, digest = tree.zone_ds.split(" DS ", 1)[1].split()[:4]
    wrong = f"{ZONE}. DS {tag} {algorithm} {digest_type} {'0' * len(digest)}\n"
    tree.set_parent_ds(wrong)
    try:
        code, result = run_json(tree, "zone", "drill", ZONE)
        checks = {c["name"]: c for c in result["checks"]}  # type: ignore[union-attr]
        assert code == 1 and not result["ok"], checks
        assert checks["parent-ds"]["ok"], checks  # the parent answered, with one DS
        assert not checks["verify against the DS"]["ok"], checks
        assert "anchor" in checks["verify against the DS"]["detail"], checks
        text = tree.authd.cli("zone", "drill", ZONE)
        assert text.returncode == 1 and "FAIL verify against the DS" in text.stdout, text.stdout

        code, report = run_json(tree, "zone", "report", ZONE)
        kinds = {f["kind"]: f["verdict"] for f in report["findings"]}  # type: ignore[union-attr]
        assert code == 1 and kinds.get("ds-mismatch") == "no", report["verdicts"]
    finally:
        tree.set_parent_ds(tree.zone_ds)
    code, result = run_json(tree, "zone", "drill", ZONE)
    assert code == 0 and result["ok"], result


def test_report_says_independent(hierarchy: Hierarchy) -> None:
    code, report = run_json(hierarchy, "zone", "report", ZONE)
    print("\n".join(report["verdicts"]))  # type: ignore[arg-type]
    assert report["independent"] == "yes" and code == 0, report["verdicts"]
    assert report["operators"] == {"example.test": [OWN_NS], "provider.test": [PROVIDER_NS]}
    own = [s for s in report["ns"] if s["own"]]  # type: ignore[union-attr]
    assert [s["name"] for s in own] == [OWN_NS], report["ns"]
    # the peer is the provider, found through the resolver; same serial, no drift
    [peer] = report["peers"]  # type: ignore[misc]
    assert peer["address"] == f"{hierarchy.layout.provider}@53", peer
    assert peer["lag"] == 0 and peer["drift"] == [], peer
    assert report["delegation"] == {
        "checked_with": f"parent {hierarchy.layout.parent}@53",
        "findings": [],
    }
    assert report["signatures"]["signed"], report["signatures"]  # type: ignore[index]
    assert report["queries"] <= 96  # type: ignore[operator]


def test_withdrawn_delegation_is_a_finding(hierarchy: Hierarchy) -> None:
    hierarchy.withdraw_own_ns()
    code, report = run_json(hierarchy, "zone", "report", ZONE)
    print("\n".join(report["verdicts"]))  # type: ignore[arg-type]
    kinds = {f["kind"]: f for f in report["findings"]}  # type: ignore[union-attr]
    assert code == 1 and report["independent"] == "no", report["verdicts"]
    assert kinds["own-ns-not-delegated"]["verdict"] == "no", kinds
    assert OWN_NS in kinds["own-ns-not-delegated"]["detail"], kinds
    assert any(
        line.startswith("independent: no: ") and OWN_NS in line
        for line in report["verdicts"]  # type: ignore[union-attr]
    ), report["verdicts"]


def test_own_ns_name_in_a_provider_zone_is_a_finding(hierarchy: Hierarchy) -> None:
    """The issue's example: an extra NS name inside a zone that only the provider serves
    (here provider.test) is unresolvable once the provider is gone. The resolver finds out."""
    tree = hierarchy
    extra = f"authd.{PROVIDER_ZONE}"
    tree.provider.change(PROVIDER_ZONE, ("set", f"{extra}.", "60", "A", tree.layout.authd))
    before = tree.provider.serial(ZONE) or 0
    tree.provider.change(ZONE, ("set", f"{ZONE}.", "60", "NS", f"{extra}."))
    assert wait_for(lambda: (tree.provider.serial(ZONE) or 0) > before, 10), tree.logs()
    serial = tree.provider.serial(ZONE)
    assert serial is not None and tree.authd.wait_serial(ZONE, serial, 10), tree.logs()
    tree.authd.reconfigure(ns_names=[OWN_NS, extra])

    code, report = run_json(tree, "zone", "report", ZONE)
    print("\n".join(report["verdicts"]))  # type: ignore[arg-type]
    assert code == 1 and report["independent"] == "no", report["verdicts"]
    line = f"independent: no: {extra} is inside {PROVIDER_ZONE}, served only by {PROVIDER_NS}"
    assert line in report["verdicts"], report["verdicts"]  # type: ignore[operator]
    [entry] = [z for z in report["ns_zones"] if z["name"] == extra]  # type: ignore[union-attr]
    assert entry["how"] == f"via resolver {tree.layout.resolver}@53", entry
    kinds = {f["kind"] for f in report["findings"]}  # type: ignore[union-attr]
    assert "shared-operator" in kinds, kinds  # run under the provider's own domain, too
    tree.authd.reconfigure(ns_names=[OWN_NS])


def test_provider_loss_answers_stay_secure(hierarchy: Hierarchy) -> None:
    """Last (it stops the provider): with authd's NS delegated again, unbound still
    validates answers it can only get from authd."""
    tree = hierarchy
    tree.parent.change(
        PARENT,
        ("set", f"{ZONE}.", "60", "NS", f"{OWN_NS}."),
        ("set", f"{OWN_NS}.", "60", "A", tree.layout.authd),
    )
    tree.provider.stop()
    assert wait_for(lambda: tree.resolver.secure(f"h3.{ZONE}.", "A"), 20, 0.5), tree.logs()
    code, result = run_json(tree, "zone", "drill", ZONE)
    assert code == 0 and result["ok"], result
