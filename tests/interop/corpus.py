"""The query corpus: several hundred queries generated from the interop zones.

Every query has a readable id (it names the test), fixed wire bytes (deterministic message ID
and 0x20 case pattern, so a failure reproduces) and the UDP size limit a server must respect.
Malformed packets are written byte by byte; for them "no reply" versus reply is compared.
"""

from __future__ import annotations

import random
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone

from tests.interop.zones import RICH_TEMPLATE, ZONE_SPECS, ZoneSpec

OUR_UDP_PAYLOAD = 1232  # what both servers are configured to advertise (udp-payload)
COOKIE_OPTION = 10
UNKNOWN_OPTION = 65001


@dataclass(frozen=True)
class Edns:
    """EDNS settings of a query; None on Query means no OPT record at all."""

    payload: int = 1232
    do: bool = False
    version: int = 0
    nsid: bool = False
    extra_options: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True)
class Query:
    qid: str
    wire: bytes
    udp_limit: int  # the largest UDP response allowed for this query
    qtype: int = 0
    malformed: bool = False
    note: str = ""


def udp_limit(edns: Edns | None) -> int:
    if edns is None:
        return 512
    return min(max(512, edns.payload), OUR_UDP_PAYLOAD)


def _message_id(qid: str) -> int:
    return zlib.crc32(qid.encode()) & 0xFFFF


def mixed_case(name: str, seed: str) -> str:
    """The 0x20 pattern of `name`, fixed by `seed` so that reruns send the same bytes."""
    rng = random.Random(seed)
    return "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in name)


def edns_tag(edns: Edns | None) -> str:
    if edns is None:
        return "noedns"
    tag = f"edns{edns.payload}" + ("-do" if edns.do else "")
    if edns.version:
        tag += f"-v{edns.version}"
    if edns.nsid:
        tag += "-nsid"
    if edns.extra_options:
        tag += "-opt" + ",".join(str(code) for code, _ in edns.extra_options)
    return tag


def make_query(
    name: str,
    rdtype: int,
    edns: Edns | None,
    *,
    rdclass: int = dns.rdataclass.IN,
    rd: bool = False,
    cd: bool = False,
    case_seed: str | None = None,
    tag: str = "",
) -> Query:
    """A well-formed query; the id is zone-relative-free: it shows the name as sent."""
    sent_name = mixed_case(name, case_seed) if case_seed is not None else name
    rtype = dns.rdatatype.RdataType.make(rdtype)
    rclass = dns.rdataclass.RdataClass.make(rdclass)
    parts = [sent_name, dns.rdatatype.to_text(rtype)]
    if rclass != dns.rdataclass.IN:
        parts.append(dns.rdataclass.to_text(rclass))
    parts.append(edns_tag(edns))
    if rd:
        parts.append("rd")
    if cd:
        parts.append("cd")
    if tag:
        parts.append(tag)
    qid = "/".join(parts)
    msg = dns.message.make_query(dns.name.from_text(sent_name), rtype, rclass, use_edns=False)
    msg.id = _message_id(qid)
    msg.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    if edns is not None:
        options: list[dns.edns.Option] = []
        if edns.nsid:
            options.append(dns.edns.GenericOption(dns.edns.OptionType.NSID, b""))
        options += [
            dns.edns.GenericOption(dns.edns.OptionType.make(code), data)
            for code, data in edns.extra_options
        ]
        msg.use_edns(
            edns.version,
            dns.flags.DO if edns.do else 0,
            edns.payload,
            options=options,
        )
    return Query(qid, msg.to_wire(), udp_limit(edns), qtype=rdtype)


# --- what the zones contain ----------------------------------------------------------------

_REPETITIVE = re.compile(r"^(mx|nameserver-with-a-long-label-)(\d\d)\b")
_NODATA_CANDIDATES = ("TXT", "MX", "AAAA", "SRV", "NAPTR")


@dataclass(frozen=True)
class ZoneFacts:
    spec: ZoneSpec
    rrsets: tuple[tuple[str, str], ...]  # (relative owner, type) as in the unsigned zone
    owners: tuple[str, ...]
    ents: tuple[str, ...]


def zone_facts(spec: ZoneSpec) -> ZoneFacts:
    origin = dns.name.from_text(spec.origin)
    text = f"$ORIGIN {spec.origin}.\n" + RICH_TEMPLATE.read_text()
    zone = dns.zone.from_text(text, origin=origin, relativize=True, check_origin=True)
    rrsets: list[tuple[str, str]] = []
    owners: list[str] = []
    ents: set[str] = set()
    for name, node in sorted(zone.nodes.items()):
        owner = name.to_text()
        owners.append(owner)
        rrsets += [(owner, dns.rdatatype.to_text(rds.rdtype)) for rds in node.rdatasets]
        parent = name.parent() if len(name) > 1 else None
        while parent is not None and parent != dns.name.empty:
            if parent not in zone.nodes:
                ents.add(parent.to_text())
            parent = parent.parent() if len(parent) > 1 else None
    return ZoneFacts(spec, tuple(rrsets), tuple(owners), tuple(sorted(ents)))


def absolute(relative: str, spec: ZoneSpec) -> str:
    return spec.origin + "." if relative == "@" else f"{relative}.{spec.origin}."


def nsec3_owner(relative: str, spec: ZoneSpec) -> str:
    hashed = dns.dnssec.nsec3_hash(absolute(relative, spec), spec.salt or None, spec.iterations, 1)
    return f"{hashed.lower()}.{spec.origin}."


# --- the corpus ------------------------------------------------------------------------------


def _default_edns(spec: ZoneSpec, index: int) -> list[Edns | None]:
    """EDNS variants every base question is sent with (alternating keeps the corpus small)."""
    if not spec.signed:
        return [None] if index % 3 == 0 else [Edns(1232)]
    return [Edns(1232, do=True), Edns(1232)] if index % 3 == 0 else [Edns(1232, do=True)]


# Names (relative) whose answers are size-sensitive, sent with every EDNS size and DO.
SIZE_SENSITIVE: tuple[tuple[str, str], ...] = (
    ("big", "A"),
    ("huge", "AAAA"),
    ("longtxt", "TXT"),
    ("manymx", "MX"),
    ("mx-multi", "MX"),
    ("biggl", "A"),
    ("x.biggl", "NS"),
    ("@", "DNSKEY"),
    ("@", "MX"),
    ("@", "NS"),
    ("nothing.wild.nx", "A"),
    ("chain1", "A"),
)
SIZE_VARIANTS: tuple[Edns | None, ...] = (
    None,
    Edns(512),
    Edns(512, do=True),
    Edns(1232),
    Edns(1232, do=True),
    Edns(4096),
    Edns(4096, do=True),
)

# Extra questions per zone: NXDOMAIN, ENT, wildcard, DNAME, delegation and DNSSEC cases.
SPECIAL_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("nx", "A"),
    ("0-sorts-first", "A"),
    ("zzzz-sorts-last", "TXT"),
    ("nx.web", "A"),
    ("nx.ent", "A"),
    ("nx.b.ent", "TXT"),
    ("foo.wild", "A"),
    ("foo.wild", "MX"),
    ("foo.wild", "TXT"),
    ("foo.wild", "ANY"),
    ("foo.wild", "RRSIG"),
    ("a.b.wild", "A"),
    ("a.exists.wild", "A"),
    ("y.ent.wild", "A"),
    ("ent.wild", "A"),
    ("foo.cw", "A"),
    ("foo.cw", "CNAME"),
    ("foo.cwo", "A"),
    ("foo.apps", "AAAA"),
    ("x.legacy", "A"),
    ("a.b.legacy", "TXT"),
    ("legacy", "A"),
    ("x.inner", "A"),
    ("a.b.inner", "A"),
    ("x.inner", "DNAME"),
    ("host.sub", "A"),
    ("deep.host.sub", "AAAA"),
    ("sub", "A"),
    ("sub", "DS"),
    ("sub", "ANY"),
    ("secure", "DS"),
    ("secure", "A"),
    ("host.secure", "DS"),
    ("insecure", "DS"),
    ("insecure", "A"),
    ("oob", "DS"),
    ("oob", "A"),
    ("sib", "A"),
    ("x.biggl", "A"),
    ("@", "DS"),
    ("@", "ANY"),
    ("@", "RRSIG"),
    ("@", "NSEC"),
    ("@", "NSEC3"),
    ("@", "NSEC3PARAM"),
    ("@", "DNSKEY"),
    ("@", "CDS"),
    ("www", "ANY"),
    ("www", "RRSIG"),
    ("www", "NSEC"),
    ("web", "ANY"),
    ("web", "RRSIG"),
    ("nx", "ANY"),
    ("nx", "RRSIG"),
    ("nx", "NSEC"),
    ("ent", "ANY"),
    ("loop1", "ANY"),
    ("to-deleg", "A"),
    ("to-wild", "MX"),
    ("mail", "TYPE65280"),
)


def _long_dname_questions(spec: ZoneSpec) -> list[tuple[str, str]]:
    """Below long-dname: one query whose synthesis fits in 255 octets, one that exceeds it."""
    owner_len = len(name_wire(absolute("long-dname", spec)))
    target_len = 64 + 64 + 61 + len(b"\x07example\x00")
    fits = 255 - target_len  # prefix octets that still fit after synthesis
    too_long = "q" * 63
    fitting = "f" * (fits - 1)
    assert owner_len + 64 <= 255
    return [(f"{fitting}.long-dname", "A"), (f"{too_long}.long-dname", "A"), ("long-dname", "A")]


def zone_queries(spec: ZoneSpec) -> Iterator[Query]:
    facts = zone_facts(spec)
    questions: list[tuple[str, str]] = []
    for owner, rdtype in facts.rrsets:
        match = _REPETITIVE.match(owner)
        if match and int(match.group(2)) > 2:
            continue
        questions.append((owner, rdtype))
    for owner in facts.owners:
        match = _REPETITIVE.match(owner)
        if match and int(match.group(2)) > 2:
            continue
        present = {t for o, t in facts.rrsets if o == owner}
        if "CNAME" in present:
            continue  # every type follows the CNAME; covered by the present-type query
        absent = next(t for t in _NODATA_CANDIDATES if t not in present)
        questions.append((owner, absent))
    questions += [(ent, "A") for ent in facts.ents]
    questions += list(SPECIAL_QUESTIONS)
    questions += _long_dname_questions(spec)

    for index, (owner, type_text) in enumerate(questions):
        name = absolute(owner, spec)
        for edns in _default_edns(spec, index):
            seed = name if index % 2 else None
            yield make_query(
                name, dns.rdatatype.from_text(type_text), edns, rd=index % 5 == 0, case_seed=seed
            )

    for owner, rdtype_text in SIZE_SENSITIVE:
        for edns in SIZE_VARIANTS:
            yield make_query(absolute(owner, spec), dns.rdatatype.from_text(rdtype_text), edns)

    if spec.nsec3:
        for index, owner in enumerate(("@", "www", "ent", "sub", "insecure", "nx")):
            hashed = nsec3_owner(owner, spec)
            edns = Edns(1232, do=index % 2 == 0)
            yield make_query(hashed, dns.rdatatype.NSEC3, edns)
            yield make_query(hashed, dns.rdatatype.A, Edns(1232, do=True), tag=f"hash-of-{owner}")


def protocol_queries() -> Iterator[Query]:
    """Queries about the protocol rather than a zone's data (CHAOS, classes, opcodes, EDNS)."""
    plain = "plain.test."
    signed = "nsec.test."
    txt, a = dns.rdatatype.TXT, dns.rdatatype.A
    ch = dns.rdataclass.CH
    for name in ("id.server.", "hostname.bind.", "version.bind.", "version.server."):
        yield make_query(name, txt, None, rdclass=ch)
        yield make_query(name, txt, Edns(1232, do=True), rdclass=ch, case_seed=name)
    yield make_query("id.server.", a, None, rdclass=ch)
    yield make_query("authors.bind.", txt, None, rdclass=ch)
    yield make_query("foo.example.", txt, Edns(), rdclass=ch)
    yield make_query(plain, dns.rdatatype.SOA, None, rdclass=ch)
    any_class = dns.rdataclass.ANY
    yield make_query("www." + plain, a, None, rdclass=any_class)
    yield make_query(plain, dns.rdatatype.SOA, Edns(), rdclass=any_class)
    yield make_query("www." + signed, a, Edns(do=True), rdclass=any_class)
    yield make_query("nx." + plain, a, None, rdclass=any_class)
    yield make_query("www." + plain, a, None, rdclass=dns.rdataclass.from_text("CLASS42"))
    for name in ("example.org.", "test.", ".", "nottest.", "plain.test.example."):
        yield make_query(name, a, None)
        yield make_query(name, dns.rdatatype.NS, Edns(do=True))
    for zone in (plain, signed):
        for edns in (None, Edns()):
            yield make_query(zone, dns.rdatatype.AXFR, edns, tag="")
            yield make_query(zone, dns.rdatatype.IXFR, edns, tag="")
    yield make_query(plain, dns.rdatatype.MAILB, None)
    yield make_query(plain, dns.rdatatype.from_text("TYPE0"), None)
    yield make_query(plain, dns.rdatatype.OPT, None)
    yield make_query(plain, dns.rdatatype.TSIG, None)
    # EDNS: versions, payload edge cases, NSID, options that must not be echoed, flags.
    for zone in (plain, signed):
        www = "www." + zone
        yield make_query(www, a, Edns(version=1))
        yield make_query(www, a, Edns(version=1, do=True))
        yield make_query("nx." + zone, a, Edns(version=2, payload=4096))
        yield make_query(www, a, Edns(payload=0))
        yield make_query(www, a, Edns(payload=100, do=True))
        yield make_query(www, a, Edns(payload=65535))
        yield make_query(www, a, Edns(nsid=True))
        yield make_query(www, a, Edns(do=True, nsid=True, version=1))
        yield make_query(www, a, Edns(extra_options=((UNKNOWN_OPTION, b"abc"),)))
        yield make_query(www, a, Edns(extra_options=((COOKIE_OPTION, bytes(range(8))),)))
        yield make_query(www, a, Edns(do=True), cd=True)
        yield make_query(www, a, None, rd=True, cd=True)
    yield from _opcode_queries(plain)


def _header(msg_id: int, flags: int, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", msg_id, flags, qd, an, ns, ar)


def _question(name: str, rdtype: int, rdclass: int = dns.rdataclass.IN) -> bytes:
    return name_wire(name) + struct.pack("!HH", rdtype, rdclass)


def name_wire(name: str) -> bytes:
    wire = dns.name.from_text(name).to_wire()
    assert wire is not None
    return wire


def _opt(payload: int = 1232, ext: int = 0, version: int = 0, flags: int = 0) -> bytes:
    return b"\x00" + struct.pack("!HHBBHH", dns.rdatatype.OPT, payload, ext, version, flags, 0)


def _raw(qid: str, body: bytes, limit: int = 512, note: str = "") -> Query:
    return Query(qid, body, limit, malformed=True, note=note)


_OPCODE_NAMES = {1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}


def _opcode_queries(zone: str) -> Iterator[Query]:
    soa = _question(zone, dns.rdatatype.SOA)
    for opcode in (1, 2, 3, 4, 5, 6, 7, 15):
        flags = opcode << 11
        name = _OPCODE_NAMES.get(opcode, f"OPCODE{opcode}")
        msg_id = _message_id(f"opcode-{opcode}")
        yield _raw(f"opcode/{name}/soa", _header(msg_id, flags) + soa, note="opcode")
        yield _raw(
            f"opcode/{name}/soa/edns",
            _header(msg_id, flags, ar=1) + soa + _opt(),
            limit=1232,
            note="opcode with EDNS",
        )


def malformed_queries() -> Iterator[Query]:
    """Packets a server must not crash on; whether and what it answers is compared."""
    zone = "plain.test."
    www = _question("www." + zone, dns.rdatatype.A)
    h = _header
    yield _raw("malformed/empty", b"")
    yield _raw("malformed/short-header", h(1, 0)[:5])
    yield _raw("malformed/header-only-qd1", h(2, 0))
    yield _raw("malformed/qdcount0", h(3, 0, qd=0))
    yield _raw("malformed/qdcount0-with-opt", h(4, 0, qd=0, ar=1) + _opt(), limit=1232)
    yield _raw("malformed/qdcount2", h(5, 0, qd=2) + www + _question(zone, dns.rdatatype.SOA))
    yield _raw("malformed/trailing-junk", h(6, 0) + www + b"\x01\x02\x03")
    yield _raw("malformed/trailing-junk-edns", h(7, 0, ar=1) + www + _opt() + b"junk", 1232)
    yield _raw("malformed/two-opt", h(8, 0, ar=2) + www + _opt() + _opt(), limit=1232)
    yield _raw("malformed/qr-set", h(9, 0x8000) + www)
    yield _raw("malformed/tc-set", h(10, 0x0200) + www)
    yield _raw("malformed/aa-set", h(11, 0x0400) + www)
    yield _raw("malformed/z-bit-set", h(12, 0x0040) + www)
    yield _raw("malformed/ad-set", h(13, 0x0020) + www)
    yield _raw("malformed/truncated-question", h(14, 0) + www[:-2])
    yield _raw("malformed/truncated-name", h(15, 0) + www[:6])
    yield _raw("malformed/label-64", h(16, 0) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01")
    yield _raw("malformed/extended-label-type", h(17, 0) + b"\x41" + b"a" + b"\x00\x00\x01\x00\x01")
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"
    yield _raw("malformed/name-over-255", h(18, 0) + long_name + b"\x00\x01\x00\x01")
    yield _raw("malformed/pointer-in-question", h(19, 0) + b"\x03www\xc0\x0c\x00\x01\x00\x01")
    yield _raw("malformed/pointer-loop", h(20, 0) + b"\xc0\x0c\x00\x01\x00\x01")
    yield _raw("malformed/ancount1-no-data", h(21, 0, an=1) + www)
    yield _raw("malformed/arcount1-no-data", h(22, 0, ar=1) + www)
    yield _raw("malformed/opt-bad-owner", h(23, 0, ar=1) + www + b"\x03www" + _opt()[0:], 1232)
    yield _raw(
        "malformed/opt-rdlen-overrun", h(24, 0, ar=1) + www + _opt()[:-2] + b"\x00\x10", 1232
    )
    yield _raw(
        "malformed/opt-in-answer", h(25, 0, an=1) + www + _opt(), note="OPT outside additional"
    )


def build_corpus(specs: Iterable[ZoneSpec] = ZONE_SPECS) -> list[Query]:
    queries: list[Query] = []
    for spec in specs:
        queries += zone_queries(spec)
    queries += protocol_queries()
    queries += malformed_queries()
    unique: dict[str, Query] = {}
    for query in queries:
        unique.setdefault(query.qid, query)
    return list(unique.values())


# Built at import time so that every query becomes its own parametrized test.
CORPUS: list[Query] = build_corpus()
