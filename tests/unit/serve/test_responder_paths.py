"""The cached paths of authd.serve.responder answer exactly as the full path does.

The hot path looks raw query bytes up without parsing, and negative answers are
shared between names of one class (answer.nxdomain_class); both are shortcuts
that must never change a byte. Every query here goes through one long-lived
responder (so later queries hit entries made by earlier ones, names of other
cases and lengths included) and is compared with the full path of a responder
that has never cached anything.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from authd import wire
from authd.serve.responder import Responder
from authd.serve.zonetable import ZoneTable
from authd.zone import names
from authd.zone.answer import nxdomain_class
from authd.zone.loader import load_zone_file
from authd.zone.snapshot import Snapshot

ZONES = Path(__file__).parents[1] / "zones"
VARIANTS = {
    "plain": "answer.zone",
    "nsec": "answer.nsec.zone",
    "nsec3": "answer.nsec3.zone",
    "optout": "answer.nsec3-optout.zone",
}
TYPES = (1, 2, 6, 15, 16, 28, 43, 46, 47, 50, 255)
COOKIE = struct.pack(">HH", 10, 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08"
NSID = struct.pack(">HH", wire.OPTION_NSID, 0)


def responder_for(snapshot: Snapshot) -> Responder:
    table = ZoneTable()
    table.publish(snapshot.origin, snapshot)
    return Responder(table, identity="", version="", nsid=b"ns-test", udp_payload=1232)


def query_bytes(
    qname: bytes, qtype: int, *, rd: bool, edns: tuple[int, bool, bytes] | None, ident: int
) -> bytes:
    header = struct.pack(">HHHHHH", ident, 0x0100 if rd else 0, 1, 0, 0, 1 if edns else 0)
    data = header + qname + struct.pack(">HH", qtype, 1)
    if edns is not None:
        payload, do, options = edns
        data += b"\x00\x00\x29" + struct.pack(">HBBHH", payload, 0, 0, 0x8000 if do else 0, 0)
        data = data[:-2] + struct.pack(">H", len(options)) + options
    return data


def mixed_case(rng: random.Random, key: bytes) -> bytes:
    return bytes(b - 32 if 97 <= b <= 122 and rng.random() < 0.5 else b for b in key)


def question_names(snapshot: Snapshot, rng: random.Random) -> list[bytes]:
    """Owners, names below them (random labels of several lengths), SOA RDATA names."""
    soa = snapshot.soa
    out = [*snapshot.owners(), soa.mname.lower(), soa.rname.lower()]
    for owner in list(snapshot.owners()):
        for length in (1, 5, 12):
            label = bytes(
                rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(length)
            )
            out.append(bytes((length,)) + label + owner)
    for _ in range(60):
        label = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz-") for _ in range(rng.randint(1, 20)))
        out.append(bytes((len(label),)) + label + snapshot.origin)
    out.append(b"\x0ahostmaster\x01x" + snapshot.origin)
    out.append(b"\x03ns1\x01y" + snapshot.origin)
    return out


@pytest.fixture(scope="module")
def snapshots() -> dict[str, Snapshot]:
    return {v: load_zone_file(ZONES / f, "example.") for v, f in VARIANTS.items()}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_and_negative_paths_match_the_full_path(
    snapshots: dict[str, Snapshot], variant: str
) -> None:
    snapshot = snapshots[variant]
    rng = random.Random(variant)
    warm = responder_for(snapshot)
    edns_choices: list[tuple[int, bool, bytes] | None] = [
        None,
        (1232, False, b""),
        (1232, True, b""),
        (512, True, b""),
        (4096, True, COOKIE),
        (1232, True, NSID),
    ]
    checked = 0
    for qname in question_names(snapshot, rng):
        for _ in range(3):
            qtype = rng.choice(TYPES)
            edns = rng.choice(edns_choices)
            tcp = rng.random() < 0.2
            data = query_bytes(
                mixed_case(rng, qname),
                qtype,
                rd=rng.random() < 0.5,
                edns=edns,
                ident=rng.randrange(65536),
            )
            reference = responder_for(snapshot)._respond_slow(data, tcp, None)
            assert warm.respond(data, tcp) == reference, (variant, data.hex(), tcp)
            assert warm.respond(data, tcp) == reference, (variant, data.hex(), tcp)
            checked += 1
    assert checked > 300
    # The shortcuts were taken: most second askings were hits, negative classes were shared.
    cache = warm.zones.get(snapshot.origin)
    assert cache is not None
    assert warm.cache_hits > checked and cache.cache.negative


def test_negative_classes_are_shared_by_random_names(snapshots: dict[str, Snapshot]) -> None:
    """Random names below the apex fall into few classes (one per NSEC gap), so a
    random-name flood is answered from a handful of rendered answers."""
    rng = random.Random(5)
    for variant, snapshot in snapshots.items():
        classes = set()
        for _ in range(300):
            label = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(10))
            key = nxdomain_class(snapshot, b"\x0a" + label + snapshot.origin, True)
            assert key is not None, variant
            classes.add(key)
        limit = 1 if variant == "plain" else 60
        assert len(classes) <= limit, (variant, len(classes))


def test_nxdomain_class_declines_what_is_not_a_plain_nxdomain(
    snapshots: dict[str, Snapshot],
) -> None:
    snapshot = snapshots["nsec"]
    for text in (
        "www.example.",  # exists
        "ent.example.",  # empty non-terminal
        "x.wild.example.",  # wildcard at the closest encloser
        "host.sub.example.",  # below a cut
        "x.dname.example.",  # below a DNAME
        "example.",  # the apex
    ):
        assert nxdomain_class(snapshot, names.key_from_text(text), True) is None, text
    assert nxdomain_class(snapshot, names.key_from_text("nope.example."), True) is not None


def test_raw_lookup_never_answers_a_malformed_lookalike(snapshots: dict[str, Snapshot]) -> None:
    """A query whose bytes equal a cached key under another shape must not hit it."""
    snapshot = snapshots["plain"]
    responder = responder_for(snapshot)
    qname = names.key_from_text("web.example.")
    edns_query = query_bytes(qname, 1, rd=False, edns=(1232, False, b""), ident=1)
    assert responder.respond(edns_query, False) is not None
    # The same bytes with ARCOUNT=0: the OPT becomes trailing junk (FORMERR, as Knot).
    junk = edns_query[:11] + b"\x00" + edns_query[12:]
    response = responder.respond(junk, False)
    assert response is not None and response[3] & 0x0F == 1
    # The OPT cut short by one byte: answered as the full path answers it, not as a hit.
    short = edns_query[:-1]
    fresh = responder_for(snapshot)._respond_slow(short, False, None)
    assert responder.respond(short, False) == fresh and fresh is not None and fresh[3] & 0x0F == 1
    hits = responder.cache_hits
    assert responder.respond(edns_query, True) is not None  # TCP has its own entries
    assert responder.cache_hits == hits


def test_cache_entries_follow_the_published_version(snapshots: dict[str, Snapshot]) -> None:
    table = ZoneTable()
    table.publish(snapshots["plain"].origin, snapshots["plain"])
    responder = Responder(table, identity="", version="", nsid=b"", udp_payload=1232)
    nx = query_bytes(
        names.key_from_text("nope.example."), 1, rd=True, edns=(1232, True, b""), ident=7
    )
    plain_answer = responder.respond(nx, False)
    table.publish(snapshots["nsec"].origin, snapshots["nsec"])
    signed_answer = responder.respond(nx, False)
    assert plain_answer is not None and signed_answer is not None
    assert len(signed_answer) > len(plain_answer)  # the NSEC proof of the new version
    zone = table.get(snapshots["nsec"].origin)
    assert (
        zone is not None and len(zone.cache.negative) == 1 and zone.cache.negative_names_size == 1
    )
