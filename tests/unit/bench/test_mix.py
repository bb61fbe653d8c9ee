"""Query mixes drawn from a zone: what is asked, in which proportions, in which formats."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.zone
import pytest

from authd.bench import mix, zonegen

EXAMPLE = Path(__file__).resolve().parents[3] / "zones" / "example.test.zone"


@pytest.fixture(scope="module")
def example() -> mix.ZoneInventory:
    return mix.inventory_from_file(EXAMPLE, "example.test.")


def test_inventory_keeps_authoritative_data_only(example: mix.ZoneInventory) -> None:
    hits = set(example.hits)
    assert ("www.example.test.", "CNAME") in hits
    assert ("example.test.", "SOA") in hits
    # Glue and the delegation itself get referrals, not answers.
    assert not any(name.endswith("sub.example.test.") for name, _ in hits)
    # Wildcard owners are not asked literally; their parents are remembered instead.
    assert not any(name.startswith("*") for name, _ in hits)
    assert ("apps.example.test.", "A") in example.wildcard_parents
    assert ("wild.example.test.", "CNAME") in example.wildcard_parents
    assert not example.apex_wildcard


def test_nodata_types_are_really_missing_and_never_at_aliases(example: mix.ZoneInventory) -> None:
    zone = dns.zone.from_file(str(EXAMPLE), origin="example.test.", relativize=False)
    assert example.nodata
    for name, rdtype in example.nodata:
        node = zone.get_node(name)
        assert node is not None
        present = {dns.rdatatype.to_text(r.rdtype) for r in node.rdatasets}
        assert rdtype not in present
        assert not present & {"CNAME", "DNAME"}


def test_generate_apportions_exactly_and_is_deterministic(example: mix.ZoneInventory) -> None:
    spec = mix.MixSpec({"hits": 70, "nxdomain": 20, "nodata": 10})
    queries = mix.generate(example, spec, 1001, seed=7)
    kinds = Counter(q.kind for q in queries)
    assert sum(kinds.values()) == 1001
    assert kinds == {"hits": 701, "nxdomain": 200, "nodata": 100}
    assert queries == mix.generate(example, spec, 1001, seed=7)
    assert queries != mix.generate(example, spec, 1001, seed=8)


def test_nxdomain_names_are_fresh_and_absent(example: mix.ZoneInventory) -> None:
    queries = mix.generate(example, mix.MixSpec({"nxdomain": 1}), 500)
    names = [q.name for q in queries]
    assert len(set(names)) == len(names)
    existing = {name for name, _ in example.hits}
    for name in names:
        assert name.endswith(".example.test.")
        assert name not in existing
        assert name.count(".") == 3  # one label directly below the apex


def test_wildcard_queries_fall_under_a_wildcard(example: mix.ZoneInventory) -> None:
    queries = mix.generate(example, mix.MixSpec({"wildcard": 1}), 50)
    parents = {parent for parent, _ in example.wildcard_parents}
    for query in queries:
        assert query.name.split(".", 1)[1] in parents


def test_shares_of_do_and_tcp(example: mix.ZoneInventory) -> None:
    spec = mix.MixSpec({"hits": 1}, do_share=0.3, tcp_share=1.0)
    queries = mix.generate(example, spec, 4000)
    do = sum(q.do for q in queries)
    assert 0.25 * 4000 < do < 0.35 * 4000
    assert all(q.tcp for q in queries)
    assert mix.uniform_flags(queries) is None
    uniform = mix.generate(example, mix.PRESETS["dnssec"].spec, 100)
    assert mix.uniform_flags(uniform) == (True, False)


def test_apex_wildcard_makes_nxdomain_impossible() -> None:
    text = "$ORIGIN w.test.\n@ 300 IN SOA a b 1 2 3 4 5\n@ 300 IN NS ns\nns 300 IN A 192.0.2.1\n"
    inventory = mix.inventory_from_text(text + "* 300 IN A 192.0.2.2\n")
    assert inventory.apex_wildcard
    with pytest.raises(mix.MixError, match="apex"):
        mix.generate(inventory, mix.MixSpec({"nxdomain": 1}), 10)
    with pytest.raises(mix.MixError, match="wildcard"):
        mix.generate(mix.inventory_from_text(text), mix.MixSpec({"wildcard": 1}), 10)


def test_spec_and_weights_validation() -> None:
    assert mix.parse_weights("hits=70, nxdomain=20,nodata=10") == {
        "hits": 70.0,
        "nxdomain": 20.0,
        "nodata": 10.0,
    }
    with pytest.raises(mix.MixError):
        mix.parse_weights("hits")
    with pytest.raises(mix.MixError):
        mix.parse_weights("hits=lots")
    with pytest.raises(mix.MixError, match="unknown"):
        mix.MixSpec({"servfail": 1})
    with pytest.raises(mix.MixError):
        mix.MixSpec({"hits": 0})
    with pytest.raises(mix.MixError):
        mix.MixSpec({"hits": 1}, do_share=1.5)


def test_dnsperf_format_and_wire_query(example: mix.ZoneInventory, tmp_path: Path) -> None:
    queries = mix.generate(example, mix.PRESETS["dnssec"].spec, 20)
    path = mix.write_dnsperf_file(queries, tmp_path / "q.txt")
    lines = path.read_text().splitlines()
    assert lines == [f"{q.name} {q.rdtype}" for q in queries]
    message = dns.message.from_wire(mix.wire_query(queries[0]))
    assert message.id == 0
    assert message.question[0].name.to_text() == queries[0].name
    assert dns.rdatatype.to_text(message.question[0].rdtype) == queries[0].rdtype
    assert message.edns == 0 and message.payload == 1232
    assert message.ednsflags & dns.flags.DO
    assert not message.flags & dns.flags.RD


def test_generated_zone_has_every_kind() -> None:
    inventory = mix.inventory_from_text(zonegen.zone_text(names=100))
    assert inventory.origin == zonegen.DEFAULT_ORIGIN
    owners = {name for name, _ in inventory.hits}
    assert len(owners) == 100 + 3  # the hosts, the apex, ns1, ns2
    assert inventory.nodata and inventory.wildcard_parents
    for preset in mix.PRESETS.values():
        assert len(mix.generate(inventory, preset.spec, 100)) == 100


@pytest.mark.parametrize("text", ["www.example.test.", "Mixed.Case.", "x\\.y.example.", "."])
def test_name_wire_matches_dnspython(text: str) -> None:
    assert mix.name_wire(text) == dns.name.from_text(text).to_wire()
