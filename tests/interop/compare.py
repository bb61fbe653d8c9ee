"""Comparison of two servers' responses to the same query (pure: bytes in, differences out).

Every response is decoded by dnspython and, independently, by dnslib (tests/support/decoders.py):
the two must read the same header and sections, or the difference "decoders" is reported (never
allowed). What must be identical between the servers: whether there is a reply at all, the
message ID, every header flag and the rcode (extended rcode included), the question section
byte for byte, EDNS (presence, version, DO and the other flags, advertised payload, options),
and answer and authority as multisets of RRsets (owner names case-insensitive, RDATA in
canonical form, TTLs equal). The additional section is compared the same way, except for the
allowed differences below.

ALLOWED DIFFERENCES (each one is reported with its reason, never silently dropped):
- TRUNCATED_CONTENT: over UDP, when both servers set TC=1, which RRsets made it into the
  truncated message is not compared; the TCP answer to the same query (the retry a client
  makes) is compared in full instead. Header, question and EDNS of the truncated ones still are.
- ADDITIONAL_DROPPED_FOR_SIZE: an A, AAAA or RRSIG RRset in the additional section that one
  side has and the other lacks, when adding it to the side lacking it would exceed the size
  limit of the query (optional additional data may be left out for size, RFC 1035 7 / RFC 9471
  is only about in-bailiwick glue, and that case changes TC, which is compared).
- TC_FROM_COMPRESSION: over UDP, one side sets TC=1 and the other does not, because the two
  servers compress names differently (Knot compresses an RDATA name only against its own
  owner, so its messages can be larger). Accepted only when the side without TC sent the
  complete answer (its sections equal the other side's TCP answer) within the size limit, and
  the other side's complete (TCP) answer really exceeds the limit.
- ANY_CHOICE: for qtype ANY, RFC 8482 lets each server choose which one RRset it returns; both
  must return exactly one RRset (with its RRSIGs) owned by the query name.
- TRANSFER_REFUSED: an AXFR or IXFR nobody allowed (no provide-xfr) is REFUSED by authd, as
  issue 15 asks and RFC 1035 4.1.1 gives as REFUSED's own example (BIND and NSD agree), where
  knotd 3.2 answers NOTAUTH; only the rcode (and its bits in the flags) may differ.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from tests.interop.corpus import Query
from tests.support import decoders

TRUNCATED_CONTENT = "both truncated over UDP: content compared on the TCP retry"
ADDITIONAL_DROPPED_FOR_SIZE = "optional additional RRset left out by one side for size"
ANY_CHOICE = "RFC 8482: each server picks which one RRset answers ANY"
TC_FROM_COMPRESSION = "TC on one side only: its complete answer is larger (name compression)"
TRANSFER_REFUSED = "a transfer not allowed: authd REFUSED (issue 15, RFC 1035), knotd NOTAUTH"
OPTIONS_KNOTD_LACKS = (
    "a server COOKIE or an Extended DNS Error only authd sends (the reference knotd 3.2 "
    "runs without mod-cookies and sends EDE only with REFUSED)"
)

ALLOWED_REASONS = (
    TRUNCATED_CONTENT,
    ADDITIONAL_DROPPED_FOR_SIZE,
    TC_FROM_COMPRESSION,
    ANY_CHOICE,
    OPTIONS_KNOTD_LACKS,
    TRANSFER_REFUSED,
)
_COOKIE, _EDE = 10, 15

TCP_LIMIT = 65535
RRKey = tuple[str, int, int, int]  # owner (lowercase text), class, type, covered type
RRValue = tuple[tuple[int, bytes], ...]  # sorted (ttl, canonical rdata)
Section = dict[RRKey, RRValue]


@dataclass(frozen=True)
class Difference:
    what: str
    detail: str
    allowed: str = ""  # the reason from ALLOWED_REASONS when this difference is accepted


@dataclass
class Parsed:
    wire: bytes
    header: tuple[int, int, int, int, int, int]
    question: bytes
    error: str = ""
    rcode: int = 0
    edns: tuple[int, int, int, tuple[tuple[int, bytes], ...]] | None = None  # ver, flags, size
    sections: list[Section] = field(default_factory=list)
    text: str = ""


def question_bytes(wire: bytes) -> bytes:
    """The raw first question (name, type, class) as sent, or b"" when there is none."""
    if len(wire) < 12 or struct.unpack("!H", wire[4:6])[0] == 0:
        return b""
    pos = 12
    while pos < len(wire):
        length = wire[pos]
        if length == 0:
            return wire[12 : pos + 5]
        if length & 0xC0:
            return wire[12 : pos + 6]
        pos += 1 + length
    return wire[12:]


def _section(rrsets: list[dns.rrset.RRset]) -> Section:
    grouped: dict[RRKey, list[tuple[int, bytes]]] = defaultdict(list)
    for rrset in rrsets:
        key = (rrset.name.to_text().lower(), rrset.rdclass, rrset.rdtype, rrset.covers)
        for rdata in rrset:
            grouped[key].append((rrset.ttl, rdata.to_digestable()))
    return {key: tuple(sorted(values)) for key, values in grouped.items()}


def parse(wire: bytes) -> Parsed:
    header = struct.unpack("!HHHHHH", wire[:12]) if len(wire) >= 12 else (0, 0, 0, 0, 0, 0)
    parsed = Parsed(wire, header, question_bytes(wire))
    try:
        msg = dns.message.from_wire(wire, one_rr_per_rrset=True)
    except (dns.exception.DNSException, ValueError, struct.error) as exc:
        parsed.error = f"{type(exc).__name__}: {exc}"
        parsed.text = f"unparseable ({parsed.error}): {wire.hex()}"
        return parsed
    parsed.rcode = msg.rcode()
    if msg.opt is not None:
        options = tuple(sorted((o.otype, o.to_wire()) for o in msg.options))
        parsed.edns = (msg.edns, msg.ednsflags & 0xFFFF, msg.payload, options)
    parsed.sections = [_section(msg.answer), _section(msg.authority), _section(msg.additional)]
    parsed.text = msg.to_text()
    return parsed


def _flag_text(flags: int) -> str:
    return (
        f"{dns.flags.to_text(flags & ~0x7800) or '-'} opcode={(flags >> 11) & 0xF} "
        f"rcode={flags & 0xF} z={(flags >> 6) & 1}"
    )


def _type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def _rcode_text(rcode: int) -> str:
    return dns.rcode.to_text(dns.rcode.Rcode.make(rcode))


def _rrset_text(key: RRKey, value: RRValue) -> str:
    owner, _rdclass, rdtype, covers = key
    kind = _type_text(rdtype)
    if covers:
        kind += f"({_type_text(covers)})"
    ttls = sorted({ttl for ttl, _ in value})
    return f"{owner} {kind} ttl={ttls} x{len(value)}"


def _rrset_size(value: RRValue) -> int:
    """The least wire size of an RRset: owner compressed to a pointer, 10 octets of RR header."""
    return sum(2 + 10 + len(rdata) for _, rdata in value)


def _section_diff(name: str, ref: Section, sut: Section) -> list[str]:
    lines = []
    for key in sorted(set(ref) | set(sut)):
        if key not in sut:
            lines.append(f"{name}: only knotd: {_rrset_text(key, ref[key])}")
        elif key not in ref:
            lines.append(f"{name}: only sut: {_rrset_text(key, sut[key])}")
        elif ref[key] != sut[key]:
            lines.append(
                f"{name}: differs: knotd {_rrset_text(key, ref[key])} / "
                f"sut {_rrset_text(key, sut[key])}"
            )
    return lines


def _single_rrset_at_qname(section: Section, qname: str) -> bool:
    types = {key[2] for key in section if key[2] != dns.rdatatype.RRSIG}
    covered = {key[3] for key in section if key[2] == dns.rdatatype.RRSIG}
    owners = {key[0] for key in section}
    return len(types) == 1 and covered <= types and owners == {qname}


def _additional(query: Query, transport: str, ref: Parsed, sut: Parsed) -> list[Difference]:
    limit = query.udp_limit if transport == "udp" else TCP_LIMIT
    ref_add, sut_add = ref.sections[2], sut.sections[2]
    out: list[Difference] = []
    optional = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.RRSIG)
    for key in sorted(set(ref_add) | set(sut_add)):
        if ref_add.get(key) == sut_add.get(key):
            continue
        detail = _section_diff(
            "additional",
            {k: ref_add[k] for k in [key] if k in ref_add},
            {k: sut_add[k] for k in [key] if k in sut_add},
        )[0]
        lacking = sut if key not in sut_add else ref if key not in ref_add else None
        present = ref_add if key not in sut_add else sut_add
        allowed = ""
        fits = lacking is not None and len(lacking.wire) + _rrset_size(present[key]) <= limit
        if lacking is not None and key[2] in optional and not fits:
            allowed = ADDITIONAL_DROPPED_FOR_SIZE
        out.append(Difference("additional", detail, allowed))
    return out


def _tc_from_compression(
    limit: int, ref: Parsed, sut: Parsed, retry: tuple[bytes | None, bytes | None] | None
) -> bool:
    """One side truncated, the other sent the complete answer (see TC_FROM_COMPRESSION)."""
    if retry is None or (ref.header[1] ^ sut.header[1]) != dns.flags.TC:
        return False
    truncated_is_ref = bool(ref.header[1] & dns.flags.TC)
    complete = sut if truncated_is_ref else ref
    full_wire = retry[0] if truncated_is_ref else retry[1]
    if full_wire is None or len(full_wire) <= limit or len(complete.wire) > limit:
        return False
    full = parse(full_wire)
    return not full.error and full.sections == complete.sections


def _decoder_differences(
    ref_wire: bytes, sut_wire: bytes, retry: tuple[bytes | None, bytes | None] | None
) -> list[Difference]:
    """Every response also decoded by dnslib: it must read what dnspython reads (never allowed)."""
    wires = {"knotd": ref_wire, "sut": sut_wire}
    if retry is not None:
        wires |= {"knotd over TCP": retry[0], "sut over TCP": retry[1]}
    out = []
    for who, wire in wires.items():
        problem = None if wire is None else decoders.disagreement(wire)
        if problem is not None:
            out.append(Difference("decoders", f"{who}: {problem}"))
    return out


def compare(
    query: Query,
    transport: str,
    ref_wire: bytes | None,
    sut_wire: bytes | None,
    retry: tuple[bytes | None, bytes | None] | None = None,
) -> list[Difference]:
    """Every difference between the reference's (knotd) and the SUT's response to `query`.

    `retry` holds both servers' TCP responses to the same query, for a UDP comparison where
    exactly one side truncated."""
    if ref_wire is None or sut_wire is None:
        if ref_wire is None and sut_wire is None:
            return []
        ref_s = "no reply" if ref_wire is None else f"reply of {len(ref_wire)} octets"
        sut_s = "no reply" if sut_wire is None else f"reply of {len(sut_wire)} octets"
        return [Difference("reply", f"knotd: {ref_s}; sut: {sut_s}")]
    ref, sut = parse(ref_wire), parse(sut_wire)
    diffs = _decoder_differences(ref_wire, sut_wire, retry)
    if ref.error or sut.error:
        if ref_wire != sut_wire:
            diffs.append(
                Difference("parse", f"knotd: {ref.error or 'ok'}; sut: {sut.error or 'ok'}")
            )
        return diffs
    if ref.header[0] != sut.header[0]:
        diffs.append(Difference("id", f"knotd {ref.header[0]}; sut {sut.header[0]}"))
    tc_from_compression = transport == "udp" and _tc_from_compression(
        query.udp_limit, ref, sut, retry
    )
    transfer_refused = (
        query.qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
        and ref.rcode == dns.rcode.NOTAUTH
        and sut.rcode == dns.rcode.REFUSED
    )
    if ref.header[1] != sut.header[1]:
        flags = f"knotd {_flag_text(ref.header[1])}; sut {_flag_text(sut.header[1])}"
        allowed = TC_FROM_COMPRESSION if tc_from_compression else ""
        if transfer_refused and not (ref.header[1] ^ sut.header[1]) & ~0xF:
            allowed = TRANSFER_REFUSED
        diffs.append(Difference("flags", flags, allowed))
    if ref.rcode != sut.rcode:
        diffs.append(
            Difference(
                "rcode",
                f"knotd {_rcode_text(ref.rcode)}; sut {_rcode_text(sut.rcode)}",
                TRANSFER_REFUSED if transfer_refused else "",
            )
        )
    if ref.header[2] != sut.header[2] or ref.question != sut.question:
        diffs.append(
            Difference(
                "question",
                f"knotd qd={ref.header[2]} {ref.question.hex()}; "
                f"sut qd={sut.header[2]} {sut.question.hex()}",
            )
        )
    if ref.edns != sut.edns:
        allowed = OPTIONS_KNOTD_LACKS if _without_added(sut.edns, ref.edns) == ref.edns else ""
        diffs.append(
            Difference("edns", f"knotd {_edns_text(ref.edns)}; sut {_edns_text(sut.edns)}", allowed)
        )

    both_truncated = bool(ref.header[1] & sut.header[1] & dns.flags.TC)
    if transport == "udp" and both_truncated:
        if ref.sections != sut.sections:
            diffs.append(Difference("sections", "truncated content differs", TRUNCATED_CONTENT))
        return diffs
    if tc_from_compression:
        if ref.sections != sut.sections:
            detail = "one side truncated; the other's complete answer equals its TCP answer"
            diffs.append(Difference("sections", detail, TC_FROM_COMPRESSION))
        return diffs

    answer_diff = _section_diff("answer", ref.sections[0], sut.sections[0])
    if answer_diff:
        qname = parse_qname(query.wire)
        allowed = ""
        if (
            query.qtype == dns.rdatatype.ANY
            and _single_rrset_at_qname(ref.sections[0], qname)
            and _single_rrset_at_qname(sut.sections[0], qname)
        ):
            allowed = ANY_CHOICE
        diffs += [Difference("answer", line, allowed) for line in answer_diff]
    diffs += [
        Difference("authority", line)
        for line in _section_diff("authority", ref.sections[1], sut.sections[1])
    ]
    diffs += _additional(query, transport, ref, sut)
    return diffs


def parse_qname(wire: bytes) -> str:
    try:
        return dns.message.from_wire(wire).question[0].name.to_text().lower()
    except (dns.exception.DNSException, IndexError, ValueError):
        return ""


def _without_added(
    sut: tuple[int, int, int, tuple[tuple[int, bytes], ...]] | None,
    ref: tuple[int, int, int, tuple[tuple[int, bytes], ...]] | None,
) -> tuple[int, int, int, tuple[tuple[int, bytes], ...]] | None:
    """sut's OPT without the COOKIE and EDE options the reference has none of."""
    if sut is None or ref is None:
        return sut
    ref_codes = {code for code, _ in ref[3]}
    dropped = {code for code in (_COOKIE, _EDE) if code not in ref_codes}
    return (*sut[:3], tuple(o for o in sut[3] if o[0] not in dropped))


def _edns_text(edns: tuple[int, int, int, tuple[tuple[int, bytes], ...]] | None) -> str:
    if edns is None:
        return "no OPT"
    version, flags, payload, options = edns
    opts = ",".join(f"{code}={data.hex()}" for code, data in options) or "none"
    return f"version={version} flags={flags:#06x} payload={payload} options={opts}"


def unexplained(diffs: list[Difference]) -> list[Difference]:
    return [d for d in diffs if not d.allowed]


def render(
    query: Query,
    transport: str,
    ref_wire: bytes | None,
    sut_wire: bytes | None,
    diffs: list[Difference],
) -> str:
    """A readable report: the query, each difference, then both responses in full."""
    lines = [f"query {query.qid} over {transport} ({query.wire.hex()})"]
    lines += [f"  {'allowed' if d.allowed else 'DIFF'} {d.what}: {d.detail}" for d in diffs]
    for who, wire in (("knotd", ref_wire), ("sut", sut_wire)):
        lines.append(f"--- {who} ---")
        lines.append("no reply" if wire is None else parse(wire).text)
    return "\n".join(lines)
