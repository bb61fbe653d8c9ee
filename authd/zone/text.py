"""A zone version as master-file text (for `authd zone dump`); a cold path, so dnspython."""

from __future__ import annotations

from collections.abc import Iterator

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from authd.zone import names
from authd.zone.snapshot import Snapshot


def master_file_lines(snapshot: Snapshot) -> Iterator[str]:
    """One line per record, SOA first, owners in canonical order, names absolute."""
    yield f"; zone {names.to_text(snapshot.origin)} serial {snapshot.serial}"
    for owner, rtype, ttl, rdata in snapshot.records():
        kind = dns.rdatatype.RdataType.make(rtype)
        value = dns.rdata.from_wire(dns.rdataclass.IN, kind, rdata, 0, len(rdata))
        yield f"{names.to_text(owner)} {ttl} IN {dns.rdatatype.to_text(kind)} {value.to_text()}"
