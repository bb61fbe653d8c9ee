"""Canonical forms of records (RFC 4034 section 6), used for signatures and ZONEMD.

Only the RDATA of the types listed in RFC 4034 6.2 (as amended by RFC 6840 5.1,
which drops NSEC) has its embedded names lowercased; every other type is used
as received. Stored RDATA is uncompressed, so names are walked directly.
"""

from __future__ import annotations

import struct

from authd.zone import names

# Per type: how to walk the RDATA. An int skips that many octets, "n" is a domain
# name (lowercased), "s" is a <character-string> (copied), None: the rest is copied.
_LAYOUTS: dict[int, tuple[int | str, ...]] = {
    2: ("n",),  # NS
    3: ("n",),  # MD
    4: ("n",),  # MF
    5: ("n",),  # CNAME
    6: ("n", "n"),  # SOA (the 20 octets after the names are copied)
    7: ("n",),  # MB
    8: ("n",),  # MG
    9: ("n",),  # MR
    12: ("n",),  # PTR
    14: ("n", "n"),  # MINFO
    15: (2, "n"),  # MX
    17: ("n", "n"),  # RP
    18: (2, "n"),  # AFSDB
    21: (2, "n"),  # RT
    24: (18, "n"),  # SIG
    26: (2, "n", "n"),  # PX
    30: ("n",),  # NXT
    33: (6, "n"),  # SRV
    35: (4, "s", "s", "s", "n"),  # NAPTR
    36: (2, "n"),  # KX
    39: ("n",),  # DNAME
    46: (18, "n"),  # RRSIG
}

_RR_HEADER = struct.Struct(">HHIH")  # type, class, ttl, rdlength
CLASS_IN = 1


def canonical_rdata(rtype: int, rdata: bytes) -> bytes:
    """RDATA with the names RFC 4034 6.2 lists lowercased."""
    layout = _LAYOUTS.get(rtype)
    if layout is None:
        return rdata
    lowered = names.lower(rdata)
    if lowered == rdata:  # nothing to lowercase (the common case): no walk needed
        return rdata
    out = bytearray()
    pos = 0
    try:
        for step in layout:
            if step == "n":
                length = names.wire_name_length(rdata, pos)
                out += lowered[pos : pos + length]
            elif step == "s":
                length = rdata[pos] + 1
                out += rdata[pos : pos + length]
            else:
                assert isinstance(step, int)
                length = step
                out += rdata[pos : pos + length]
            pos += length
    except IndexError:
        return rdata  # malformed RDATA: leave it, the signature check will say so
    out += rdata[pos:]
    return bytes(out)


def rr_wire(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One RR in canonical wire form: owner | type | class IN | ttl | rdlength | rdata."""
    return owner + _RR_HEADER.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata


def rrset_wire(owner: bytes, rtype: int, ttl: int, rdatas: tuple[bytes, ...]) -> bytes:
    """An RRset in canonical order (RFC 4034 6.3): RRs sorted by canonical RDATA, no duplicates."""
    header = owner + struct.pack(">HHI", rtype, CLASS_IN, ttl)
    canon = sorted({canonical_rdata(rtype, rdata) for rdata in rdatas})
    return b"".join(header + struct.pack(">H", len(r)) + r for r in canon)
