"""A zone's configuration turned into the values the verify step takes."""

from __future__ import annotations

from authd.config import ZoneConfig
from authd.zone.dnssec import Budget
from authd.zone.verify import Limits, Policy


def policy_for(zone: ZoneConfig) -> Policy:
    limits = zone.limits
    return Policy(
        dnssec=zone.dnssec_validation,
        zonemd=zone.zonemd,
        anchors=tuple((anchor.rdtype, anchor.rdata) for anchor in zone.trust_anchors),
        clock_skew=zone.clock_skew,
        unknown_algorithm=zone.unknown_algorithm,
        limits=Limits(
            max_records=limits.max_records,
            max_bytes=limits.max_bytes,
            max_rrset_records=limits.max_rrset_records,
            max_types_per_name=limits.max_types_per_name,
        ),
        budget=Budget(),
    )
