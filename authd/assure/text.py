"""The text forms of `authd zone report` and `authd zone drill` (the CLI prints these).

Kept apart from the checks so the CLI imports no DNSSEC code to print a result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_report(report: Mapping[str, Any]) -> str:
    """The text form: verdicts first, then the facts behind them."""
    out = list(report.get("verdicts") or [])
    out.append("")
    out.append(f"zone {report.get('zone')} serial {report.get('serial')}, {report.get('state')}")
    for name, members in (report.get("operators") or {}).items():
        out.append(f"  operator {name}: {', '.join(members)}")
    for prefix, members in (report.get("prefixes") or {}).items():
        out.append(f"  prefix {prefix}: {', '.join(members)}")
    for entry in report.get("ns_zones") or ():
        where = entry.get("zone") or "?"
        ns = ", ".join(entry.get("ns") or ()) or "?"
        out.append(f"  {entry.get('name')}: in {where} (NS {ns}; {entry.get('how')})")
    sig = report.get("signatures") or {}
    if sig.get("signed"):
        out.append(f"  signatures valid until {sig.get('signatures_valid_until')}")
    out.append(f"  carries the domain until {sig.get('valid_until') or 'no limit'}")
    out.append(f"  last successful refresh {report.get('last_success') or 'none'}")
    for peer in report.get("peers") or ():
        serial = peer.get("serial")
        shown = "no answer" if serial is None else f"serial {serial} (lag {peer.get('lag')})"
        out.append(f"  peer {peer.get('address')}: {shown}")
    delegation = report.get("delegation") or {}
    out.append(f"  delegation checked with {delegation.get('checked_with') or 'nothing'}")
    return "\n".join(out)


def format_drill(result: Mapping[str, Any]) -> str:
    checks = result.get("checks")
    lines = []
    for item in checks if isinstance(checks, list) else ():
        status = "ok  " if item.get("ok") else "FAIL"
        detail = f": {item['detail']}" if item.get("detail") else ""
        lines.append(f"{status} {item.get('name')}{detail}")
    passed = sum(1 for item in checks or () if item.get("ok")) if isinstance(checks, list) else 0
    total = len(checks) if isinstance(checks, list) else 0
    head = (
        f"{result.get('zone')} serial {result.get('serial')}: drill "
        f"{'passed' if result.get('ok') else 'FAILED'} ({passed}/{total} checks)"
    )
    until = result.get("valid_until") or "no limit"
    tail = (
        f"the copy would carry the domain until {until}"
        if result.get("ok")
        else f"the copy would not carry the domain: {total - passed} check(s) failed "
        f"(its horizon is {until})"
    )
    return "\n".join([head, *lines, tail])
