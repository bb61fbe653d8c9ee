"""The shipped alert rules, unit-tested the way Prometheus users test theirs:
`promtool test rules contrib/prometheus/alerts_test.yml` with synthetic series.

Every alert in alerts.yml must have a test where it fires and one where it does not
(an empty `exp_alerts`). Skips with a printed reason when promtool (Debian package
`prometheus`) is missing; fails then when AUTHD_REQUIRE_INTEROP=1.
"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.ops.conftest import REPO
from tests.support.system import require_binary

RULES = REPO / "contrib" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alert_names() -> list[str]:
    document = yaml.safe_load(RULES.read_text())
    return [rule["alert"] for group in document["groups"] for rule in group["rules"]]


def rule_tests() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULE_TESTS.read_text())
    assert document["rule_files"] == [RULES.name]
    return [case for test in document["tests"] for case in test.get("alert_rule_test", [])]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing = {case["alertname"] for case in rule_tests() if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in rule_tests() if not case.get("exp_alerts")}
    names = set(alert_names())
    assert names - firing == set(), "never seen firing"
    assert names - quiet == set(), "never seen not firing"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_issue_12_alerts_are_shipped() -> None:
    names = alert_names()
    for needed in (
        "AuthdDown",
        "AuthdTransfersFailing",
        "AuthdRemoteUnreachable",
        "AuthdZoneValidityShort",
        "AuthdZoneValidityCritical",
    ):
        assert needed in names
