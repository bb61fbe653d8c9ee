"""The authoritative lookup: a snapshot and a question in, response sections out.

Implements RFC 1034 4.3.2 with RFC 4592 (wildcards), RFC 6672 (DNAME), RFC 6604
(rcodes in CNAME chains), RFC 8482 (ANY), RFC 4035 3.1 / RFC 5155 7.2 (DNSSEC
proofs). Pure: no sockets, no clock, no dnspython on the lookup path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authd.zone.snapshot import RRData, Snapshot

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, YXDOMAIN, NOTAUTH = 0, 1, 2, 3, 4, 5, 6, 9


@dataclass(slots=True)
class RRsetOut:
    """One RRset to write into a response section."""

    owner: bytes  # lowercase wire key; the renderer compresses it (e.g. against the question)
    rtype: int
    ttl: int
    rdatas: tuple[bytes, ...]
    sigs: RRData | None = None  # the RRSIGs covering it, present only when DO=1 and signed


@dataclass(slots=True)
class Result:
    rcode: int = NOERROR
    aa: bool = True
    answer: list[RRsetOut] = field(default_factory=list)
    authority: list[RRsetOut] = field(default_factory=list)
    additional: list[RRsetOut] = field(default_factory=list)
    # The first `required_additional` RRsets of `additional` are in-bailiwick glue
    # of a referral: if they do not fit, the response is truncated (RFC 9471).
    required_additional: int = 0


def lookup(snapshot: Snapshot, qname: bytes, qtype: int, dnssec_ok: bool) -> Result:
    """Answer qname (a lowercase key at or below snapshot.origin) for qtype."""
    raise NotImplementedError
