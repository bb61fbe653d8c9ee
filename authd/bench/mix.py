"""Query mixes: which questions a benchmark asks, derived from the zone being served.

A mix is a list of Query values built from a ZoneInventory (what the zone holds) and a MixSpec
(proportions). The same list is written in dnsperf's input format and prebuilt as wire packets
for the built-in generator, so both drivers ask exactly the same questions.

Random NXDOMAIN names are drawn fresh for every query slot (not from a small pool), so a
server's response cache cannot turn a random-name flood into cache hits.
"""

from __future__ import annotations

import random
import string
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone

# Types a server never answers positively for a plain query, or that describe the chain.
_META_TYPES = frozenset(
    {
        dns.rdatatype.RRSIG,
        dns.rdatatype.NSEC,
        dns.rdatatype.NSEC3,
        dns.rdatatype.NSEC3PARAM,
    }
)
# Types asked for NODATA: common ones, so the question looks like real traffic.
_NODATA_CANDIDATES = (
    dns.rdatatype.AAAA,
    dns.rdatatype.TXT,
    dns.rdatatype.MX,
    dns.rdatatype.SRV,
    dns.rdatatype.CAA,
    dns.rdatatype.A,
    dns.rdatatype.HTTPS,
)
KINDS = ("hits", "nxdomain", "nodata", "wildcard")


class MixError(ValueError):
    """The mix cannot be built from this zone (e.g. NODATA asked of a zone with no candidates)."""


@dataclass(frozen=True)
class Query:
    name: str  # absolute, text form with trailing dot
    rdtype: str  # mnemonic, e.g. "AAAA"
    kind: str  # one of KINDS
    do: bool = False
    tcp: bool = False


@dataclass(frozen=True)
class ZoneInventory:
    """What a zone holds, as far as choosing questions goes."""

    origin: str
    hits: tuple[tuple[str, str], ...]  # (owner, type) answered authoritatively with data
    nodata: tuple[tuple[str, str], ...]  # (owner, type) the owner exists but lacks
    wildcard_parents: tuple[tuple[str, str], ...]  # ("wild.zone.", type the "*" has)
    apex_wildcard: bool


@dataclass(frozen=True)
class MixSpec:
    """Proportions of each kind (any positive weights), and shares of DO=1 and TCP queries."""

    weights: dict[str, float] = field(default_factory=lambda: {"hits": 1.0})
    do_share: float = 0.0
    tcp_share: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(KINDS)
        if unknown:
            raise MixError(f"unknown query kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if any(weight < 0 for weight in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise MixError("weights must be non-negative and not all zero")
        for share_name, share in (("do share", self.do_share), ("tcp share", self.tcp_share)):
            if not 0.0 <= share <= 1.0:
                raise MixError(f"{share_name} must be between 0 and 1, got {share}")


@dataclass(frozen=True)
class Preset:
    spec: MixSpec
    zone: str  # "plain", "nsec" or "nsec3": which copy of the zone the peers serve
    description: str


_MIXED = {"hits": 70.0, "nxdomain": 20.0, "nodata": 10.0}
PRESETS: dict[str, Preset] = {
    "hits": Preset(MixSpec({"hits": 1.0}), "plain", "existing names and types"),
    "mixed": Preset(MixSpec(dict(_MIXED)), "plain", "70% hits, 20% random NXDOMAIN, 10% NODATA"),
    "dnssec": Preset(
        MixSpec(dict(_MIXED), do_share=1.0), "nsec", "the mixed load with DO=1, NSEC-signed zone"
    ),
    "nsec3": Preset(
        MixSpec(dict(_MIXED), do_share=1.0), "nsec3", "the mixed load with DO=1, NSEC3-signed zone"
    ),
    "tcp": Preset(MixSpec({"hits": 1.0}, tcp_share=1.0), "plain", "existing names over TCP"),
}


def parse_weights(text: str) -> dict[str, float]:
    """Parse "hits=70,nxdomain=20,nodata=10" into weights."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        kind, sep, value = part.partition("=")
        if not sep:
            raise MixError(f"expected KIND=WEIGHT, got {part!r}")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise MixError(f"weight of {kind.strip()!r} is not a number: {value!r}") from None
    return weights


def inventory_from_text(text: str, origin: str | None = None) -> ZoneInventory:
    zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=True)
    return inventory(zone)


def inventory_from_file(path: Path, origin: str | None = None) -> ZoneInventory:
    return inventory_from_text(path.read_text(), origin)


def inventory(zone: dns.zone.Zone) -> ZoneInventory:
    apex = zone.origin
    assert apex is not None
    cuts = [
        name
        for name, node in zone.nodes.items()
        if name != apex and node.get_rdataset(zone.rdclass, dns.rdatatype.NS) is not None
    ]
    hits: list[tuple[str, str]] = []
    nodata: list[tuple[str, str]] = []
    wildcards: list[tuple[str, str]] = []
    apex_wildcard = False
    for name, node in sorted(zone.nodes.items()):
        # At or below a delegation the answer is a referral, not authoritative data.
        if any(name.is_subdomain(cut) for cut in cuts):
            continue
        types = {rdataset.rdtype for rdataset in node.rdatasets} - _META_TYPES
        if not types:
            continue  # an NSEC3 hash owner or similar: not a name clients ask for
        if name.labels[0] == b"*":
            parent = name.parent()
            apex_wildcard = apex_wildcard or parent == apex
            wildcards.extend((parent.to_text(), dns.rdatatype.to_text(t)) for t in sorted(types))
            continue
        text_name = name.to_text()
        hits.extend((text_name, dns.rdatatype.to_text(t)) for t in sorted(types))
        # CNAME and DNAME owners answer every type with the alias: no NODATA there.
        if types & {dns.rdatatype.CNAME, dns.rdatatype.DNAME}:
            continue
        missing = next((t for t in _NODATA_CANDIDATES if t not in types), None)
        if missing is not None:
            nodata.append((text_name, dns.rdatatype.to_text(missing)))
    return ZoneInventory(
        apex.to_text(), tuple(hits), tuple(nodata), tuple(wildcards), apex_wildcard
    )


def _random_label(rng: random.Random, length: int = 12) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=length))


def generate(inv: ZoneInventory, spec: MixSpec, count: int, seed: int = 1) -> list[Query]:
    """`count` queries in random order whose kinds follow spec's weights as closely as possible.

    Deterministic for a given seed, so two servers (and two runs) get the same questions.
    """
    if count <= 0:
        raise MixError("a mix needs at least one query")
    rng = random.Random(seed)
    kinds = _apportion(spec.weights, count)
    pools = {"hits": inv.hits, "nodata": inv.nodata, "wildcard": inv.wildcard_parents}
    for kind, amount in kinds.items():
        if amount and kind in pools and not pools[kind]:
            raise MixError(f"the zone {inv.origin} has nothing to ask for {kind!r} queries")
    if kinds.get("nxdomain") and inv.apex_wildcard:
        raise MixError(f"the zone {inv.origin} has a wildcard at its apex: no name is NXDOMAIN")
    queries: list[Query] = []
    for kind, amount in kinds.items():
        for _ in range(amount):
            if kind == "nxdomain":
                name, rdtype = f"{_random_label(rng)}.{inv.origin}", "A"
            elif kind == "wildcard":
                parent, rdtype = rng.choice(inv.wildcard_parents)
                name = f"{_random_label(rng, 8)}.{parent}"
            else:
                name, rdtype = rng.choice(pools[kind])
            do = _share_pick(rng, spec.do_share)
            tcp = _share_pick(rng, spec.tcp_share)
            queries.append(Query(name, rdtype, kind, do, tcp))
    rng.shuffle(queries)
    return queries


def _share_pick(rng: random.Random, share: float) -> bool:
    # Exact 0 and 1 draw nothing, so all-or-none mixes stay identical across seeds.
    if share <= 0.0:
        return False
    if share >= 1.0:
        return True
    return rng.random() < share


def _apportion(weights: dict[str, float], count: int) -> dict[str, int]:
    """Split count by weight with the largest-remainder method (the total is exact)."""
    total = sum(weights.values())
    exact = {kind: count * weight / total for kind, weight in weights.items()}
    out = {kind: int(value) for kind, value in exact.items()}
    short = count - sum(out.values())
    by_remainder = sorted(exact, key=lambda kind: exact[kind] - out[kind], reverse=True)
    for kind in by_remainder[:short]:
        out[kind] += 1
    return out


def dnsperf_lines(queries: Iterable[Query]) -> list[str]:
    """dnsperf's input format: one "name TYPE" per line (DO and TCP are command-line flags)."""
    return [f"{q.name} {q.rdtype}" for q in queries]


def write_dnsperf_file(queries: Iterable[Query], path: Path) -> Path:
    path.write_text("\n".join(dnsperf_lines(queries)) + "\n")
    return path


def uniform_flags(queries: list[Query]) -> tuple[bool, bool] | None:
    """(do, tcp) when every query shares them (dnsperf can run it), else None."""
    first = queries[0]
    if all(q.do == first.do and q.tcp == first.tcp for q in queries):
        return first.do, first.tcp
    return None


def name_wire(text: str) -> bytes:
    """An absolute name in wire form; plain names by hand (fast), escaped ones by dnspython."""
    if "\\" in text:
        wire = dns.name.from_text(text).to_wire()
        assert wire is not None
        return wire
    out = bytearray()
    for label in text.rstrip(".").split(".") if text != "." else ():
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise MixError(f"bad label {label!r} in {text!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def wire_query(query: Query, payload: int = 1232) -> bytes:
    """The query as wire bytes with ID 0 (the generator patches the ID), RD clear, EDNS0 on.

    EDNS with a 1232-byte payload is what current resolvers send (DNS flag day 2020), and it
    keeps signed answers from being truncated over UDP. Built by hand because a mix holds
    hundreds of thousands of queries and dnspython's message builder is ~20x slower.
    """
    qname = name_wire(query.name)
    rdtype = dns.rdatatype.from_text(query.rdtype)
    header = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 1)
    question = qname + struct.pack("!HH", rdtype, dns.rdataclass.IN)
    edns_flags = 0x8000 if query.do else 0  # the DO bit (RFC 3225)
    opt = b"\x00" + struct.pack("!HHBBHH", dns.rdatatype.OPT, payload, 0, 0, edns_flags, 0)
    return header + question + opt
