"""The provider-independence report's pure parts: grouping by operator and prefix, and the
finding and verdict line for each fact (authd/assure/operators.py, report.py)."""

from __future__ import annotations

import ipaddress

from authd.assure import operators, report
from authd.assure.operators import NsServer, classify
from authd.assure.report import (
    AT_RISK,
    NO,
    UNKNOWN,
    Delegation,
    NsZone,
    PeerState,
    ReportInput,
    Signatures,
)
from authd.config import Operator
from authd.zone.delegation import DelegationFinding
from authd.zone.drift import DriftFinding

DAY = 86400
NOW = 1_900_000_000.0
OWN = "ns.extra.example"
PROVIDER = ("ns1.provider.example", "ns2.provider.example")
ADDRESSES = {
    "ns1.provider.example": ["192.0.2.1", "2001:db8:1:2::1"],
    "ns2.provider.example": ["198.51.100.1"],
    OWN: ["203.0.113.5"],
}


def servers(own_addresses: list[str] | None = None) -> list[NsServer]:
    addresses = dict(ADDRESSES)
    if own_addresses is not None:
        addresses[OWN] = own_addresses
    return classify([*PROVIDER, OWN], addresses, [OWN])


def test_registered_domain_and_prefix() -> None:
    assert operators.registered_domain("NS1.Provider.Example.") == "provider.example"
    assert operators.registered_domain("ns1.dns.provider.co.uk") == "provider.co.uk"
    assert operators.registered_domain("a.b.github.io") == "b.github.io"  # a private suffix
    assert operators.registered_domain("co.uk") == "co.uk"  # a public suffix stays itself
    assert operators.prefix_of("192.0.2.77") == "192.0.2.0/24"
    assert operators.prefix_of("2001:db8:1:2::1") == "2001:db8:1::/48"


def test_grouping_by_operator_and_prefix() -> None:
    found = servers()
    assert operators.by_operator(found) == {
        "provider.example": list(PROVIDER),
        "extra.example": [OWN],
    }
    assert operators.by_prefix(found) == {
        "2001:db8:1::/48": ["ns1.provider.example"],
        "192.0.2.0/24": ["ns1.provider.example"],
        "198.51.100.0/24": ["ns2.provider.example"],
        "203.0.113.0/24": [OWN],
    }
    assert [s.name for s in found if s.own] == [OWN]


def test_labels_from_config_override_the_registered_domain() -> None:
    labels = (
        Operator("BigDNS", ns=("provider.example", "bigdns-cdn.example")),
        Operator("OwnRack", prefixes=(ipaddress.ip_network("203.0.113.0/24"),)),
    )
    found = classify([*PROVIDER, OWN, "x.bigdns-cdn.example"], ADDRESSES, [OWN], labels)
    assert operators.by_operator(found) == {
        "BigDNS": ["ns1.provider.example", "ns2.provider.example", "x.bigdns-cdn.example"],
        "OwnRack": [OWN],
    }


def test_independent_when_nothing_is_shared() -> None:
    built = report.build(
        ReportInput(
            "example.com",
            7,
            NOW,
            tuple(servers()),
            "server.ns-names",
            last_success=NOW - 60,
            delegation=Delegation("parent 192.0.2.200@53"),
        )
    )
    assert built["independent"] == "yes"
    assert built["verdicts"] == ["independent: yes"]


def test_own_ns_run_by_the_provider_is_no() -> None:
    found = classify([*PROVIDER, "ns3.provider.example"], ADDRESSES, ["ns3.provider.example"])
    [finding] = report.operator_findings(found)
    assert (finding.kind, finding.verdict) == ("shared-operator", NO)
    assert finding.line == (
        "independent: no: ns3.provider.example is run by provider.example, as "
        "ns1.provider.example, ns2.provider.example"
    )


def test_own_ns_in_the_providers_prefix_is_at_risk() -> None:
    [finding] = report.operator_findings(servers(["192.0.2.99"]))
    assert (finding.kind, finding.verdict) == ("shared-prefix", AT_RISK)
    assert finding.detail == f"{OWN} shares 192.0.2.0/24 with ns1.provider.example"


def test_ns_name_inside_a_zone_served_only_by_the_provider() -> None:
    """The issue's own example."""
    found = servers()
    served_by = tuple(classify(["ns1.provider.example"], {}, [OWN]))
    entry = NsZone(OWN, "extra.example", served_by, "via resolver 127.0.0.1@53")
    [finding] = report.ns_zone_findings("example.com", found, [entry])
    assert finding.kind == "ns-inside-provider-zone"
    assert finding.line == (
        "independent: no: ns.extra.example is inside extra.example, "
        "served only by ns1.provider.example"
    )
    # the same zone also served by someone else (or by authd) is fine
    mixed = tuple(classify(["ns1.provider.example", "ns.other.example"], {}, [OWN]))
    assert not report.ns_zone_findings(
        "example.com", found, [NsZone(OWN, "extra.example", mixed, "")]
    )
    mine = tuple(classify(["ns1.provider.example", OWN], {}, [OWN]))
    assert not report.ns_zone_findings(
        "example.com", found, [NsZone(OWN, "extra.example", mine, "")]
    )


def test_in_zone_names_pass_and_unchecked_ones_say_why() -> None:
    found = servers()
    inside = NsZone("ns2.example.com", "example.com", tuple(found), "in the zone itself")
    unchecked = NsZone(OWN, None, None, "no server.resolver configured")
    [finding] = report.ns_zone_findings("example.com", found, [inside, unchecked])
    assert (finding.kind, finding.verdict) == ("ns-zone-unchecked", UNKNOWN)
    assert finding.detail == f"{OWN}: not checked: no server.resolver configured"


def test_signatures_versus_expire() -> None:
    soon = Signatures(NOW + 2 * DAY, NOW + 2 * DAY, NOW + 20 * DAY, warning_days=3)
    [finding] = report.signature_findings(soon, NOW)
    assert (finding.kind, finding.verdict) == ("signatures-expire-soon", NO)
    before = Signatures(NOW + 10 * DAY, NOW + 10 * DAY, NOW + 20 * DAY)
    [finding] = report.signature_findings(before, NOW)
    assert (finding.kind, finding.verdict) == ("signatures-depend-on-provider", AT_RISK)
    assert "before expire at" in finding.detail
    assert not report.signature_findings(before, NOW, secondary=False)  # a file zone
    after = Signatures(NOW + 30 * DAY, NOW + 20 * DAY, NOW + 20 * DAY)
    assert not report.signature_findings(after, NOW)
    assert not report.signature_findings(Signatures(None, None, NOW + DAY), NOW)


def test_peers_refresh_and_delegation_map_to_verdicts() -> None:
    peers = (
        PeerState("192.0.2.1@53", 9, (DriftFinding("serial-ahead", "peer 9, authd 7"),)),
        PeerState("198.51.100.1@53", None, (DriftFinding("unreachable", "no answer"),)),
    )
    delegation = Delegation(
        "parent 192.0.2.200@53",
        (
            DelegationFinding("own-ns-not-delegated", f"{OWN} is not in the parent's NS set"),
            DelegationFinding("glue-differs", "glue"),
        ),
    )
    inp = ReportInput(
        "example.com",
        7,
        NOW,
        tuple(servers()),
        "server.ns-names",
        peers=peers,
        state="ok",
        last_success=None,
        delegation=delegation,
    )
    kinds = {f.kind: f.verdict for f in report.findings_of(inp)}
    assert kinds == {
        "serial-ahead": AT_RISK,
        "unreachable": UNKNOWN,
        "own-ns-not-delegated": NO,
        "glue-differs": AT_RISK,
        "never-refreshed": AT_RISK,
    }
    built = report.build(inp)
    assert built["independent"] == "no"
    assert built["verdicts"][0] == "independent: no"
    assert f"independent: no: {OWN} is not in the parent's NS set" in built["verdicts"]
    assert [p["lag"] for p in built["peers"]] == [2, None]


def test_unchecked_parent_and_unknown_own_names() -> None:
    inp = ReportInput(
        "example.com",
        7,
        NOW,
        tuple(classify(PROVIDER, ADDRESSES, [])),
        "unknown",
        secondary=False,
        delegation=Delegation(None, (), "no parent servers configured (parent)"),
    )
    kinds = [(f.kind, f.verdict) for f in report.findings_of(inp)]
    assert kinds == [("own-ns-unknown", UNKNOWN), ("parent-unchecked", UNKNOWN)]
    assert report.build(inp)["independent"] == "unknown"


def test_lag_is_serial_arithmetic() -> None:
    assert report.lag(7, 7) == 0
    assert report.lag(7, 10) == 3
    assert report.lag(10, 7) == -3
    assert report.lag(4294967295, 2) == 3  # the peer wrapped past 2^32
    assert report.lag(7, None) is None


def test_text_form_puts_the_verdicts_first() -> None:
    from authd.assure.text import format_report

    inp = ReportInput(
        "example.com",
        7,
        NOW,
        tuple(servers()),
        "server.ns-names",
        peers=(PeerState("192.0.2.1@53", 9),),
        last_success=NOW - 60,
        delegation=Delegation("parent 192.0.2.200@53"),
    )
    lines = format_report(report.build(inp)).splitlines()
    assert lines[0] == "independent: yes"
    assert "  operator provider.example: ns1.provider.example, ns2.provider.example" in lines
    assert "  peer 192.0.2.1@53: serial 9 (lag 2)" in lines
    assert "  delegation checked with parent 192.0.2.200@53" in lines
