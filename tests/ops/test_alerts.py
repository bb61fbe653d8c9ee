"""contrib/prometheus/alerts.yml and contrib/grafana/authd.json against a live server.

Every expression must parse as PromQL, and every authd_* metric either file references must
be exported by a running `authd serve` (as a family in /metrics, even while it is empty).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.conftest import REPO, LiveServer

ALERTS = REPO / "contrib" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "authd.json"

# Referenced by a rule but not exported yet; strict xfail, so the entry must go once it is.
PENDING: dict[str, str] = {}
# Series Prometheus makes itself (not on authd's /metrics).
PROMETHEUS_SERIES = {"up"}

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
LABEL_VALUES = re.compile(r"label_values\((?:(.*),\s*)?(\w+)\)")
DURATION = re.compile(r"(\d+[smhdwy])+")


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and variable queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                expressions.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else None
        if isinstance(text, str):
            match = LABEL_VALUES.fullmatch(text)
            assert match is not None, f"variable {variable['name']}: {text}"
            if match.group(1):
                expressions.append(match.group(1))
    return expressions


def substitute_variables(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def selectors(node: object) -> Iterator[Any]:
    """Every VectorSelector in a parsed expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
        return
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from selectors(child)
    for argument in getattr(node, "args", None) or ():
        yield from selectors(argument)


def metric_names(expression: str) -> set[str]:
    parsed = promql_parser.parse(substitute_variables(expression))
    return {selector.name for selector in selectors(parsed) if selector.name}


def referenced_metrics() -> set[str]:
    names: set[str] = set()
    for expression in [rule["expr"] for rule in alert_rules()] + dashboard_expressions():
        names |= metric_names(expression)
    return names - PROMETHEUS_SERIES


def test_metric_names_are_found_in_nested_expressions() -> None:
    expression = (
        'sum by (zone) (rate(a_total{x="1"}[5m])) > 0 unless on (zone) '
        "topk(3, b) or -(c offset 5m) and max_over_time(d[1h:5m])"
    )
    assert metric_names(expression) == {"a_total", "b", "c", "d"}


def test_alert_rules_are_complete_and_parse() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert DURATION.fullmatch(str(rule.get("for", "0m"))), rule["alert"]
        promql_parser.parse(rule["expr"])  # raises on a syntax error


def test_alerts_cover_the_dangers_of_a_secondary() -> None:
    """Staleness, expiry, signatures, failing transfers, serial lag, nothing loaded."""
    by_metric: dict[str, list[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            by_metric.setdefault(name, []).append(rule["alert"])
    for needed in (
        "authd_zone_refresh_age_seconds",
        "authd_zone_expired",
        "authd_zone_signature_horizon_seconds",
        "authd_xfr_transfers_total",
        "authd_zone_primary_serial",
        "authd_zone_state",
    ):
        assert needed in by_metric, f"no alert uses {needed}"
    horizon_rules = [r for r in alert_rules() if "signature_horizon" in r["expr"]]
    assert any("3 * 86400" in rule["expr"] for rule in horizon_rules)


def test_dashboard_is_valid_and_every_expression_parses() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "authd"
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    expressions = dashboard_expressions()
    assert len(expressions) > 20
    for expression in expressions:
        promql_parser.parse(substitute_variables(expression))


def exported_names(server: LiveServer) -> set[str]:
    code, text = server.get("/metrics")
    assert code == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.parametrize(
    "metric",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=PENDING[name]))
        if name in PENDING
        else name
        for name in sorted(referenced_metrics())
    ],
)
def test_referenced_metric_is_exported(metric: str, shared_server: LiveServer) -> None:
    assert metric in exported_names(shared_server)
