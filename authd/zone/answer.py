"""The authoritative lookup: a snapshot and a question in, response sections out.

Implements RFC 1034 4.3.2 with RFC 4592 (wildcards), RFC 6672 (DNAME), RFC 6604
(rcodes in CNAME chains), RFC 8482 (ANY), RFC 4035 3.1 / RFC 5155 7.2 (DNSSEC
proofs). Pure: no sockets, no clock, no dnspython on the lookup path.

Where the RFCs leave a choice, the answer is the one Knot DNS gives (checked
against knotd 3.2): ANY returns the RRset of the lowest type at the node (RRSIG
counting as type 46), qtype RRSIG the RRSIGs of the lowest covered type, qtype
NS at a cut is a referral, referrals carry glue for every NS target inside the
zone (below the cut, under a sibling cut, or authoritative), and proofs are
written in Knot's order because truncation keeps whole RRsets in order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from authd.zone import names
from authd.zone.snapshot import (
    CNAME,
    DNAME,
    DS,
    NS,
    NSEC,
    NSEC3,
    RRSIG,
    SOA,
    Node,
    Nsec3Params,
    RRData,
    Snapshot,
    is_sig_type,
    sig_type,
)

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, YXDOMAIN, NOTAUTH = 0, 1, 2, 3, 4, 5, 6, 9

A, MX, AAAA, SRV, SVCB, HTTPS, ANY = 1, 15, 28, 33, 64, 65, 255

_MAX_NAME = 255
_MAX_CHAIN = 16  # CNAME/DNAME steps followed inside the zone (loops stop earlier)
_GLUE_TYPES = (A, AAAA)
_NSEC3_CACHE_SIZE = 4096


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
    apex, signed = _apex_facts(snapshot)
    resolver = _Resolver(snapshot, apex, qtype, dnssec_ok and signed)
    resolver.run(qname)
    return resolver.result


def is_signed(snapshot: Snapshot) -> bool:
    """The zone carries DNSSEC data: its SOA is signed."""
    return _apex_facts(snapshot)[1]


# The apex node is needed by every negative answer; unpack it once per version.
# One entry per zone origin, replaced when a new version is first asked about.
_apex_cache: dict[bytes, tuple[Snapshot, Node, bool]] = {}


def _apex_facts(snapshot: Snapshot) -> tuple[Node, bool]:
    cached = _apex_cache.get(snapshot.origin)
    if cached is not None and cached[0] is snapshot:
        return cached[1], cached[2]
    apex = snapshot.node(snapshot.origin) or {}
    signed = sig_type(SOA) in apex
    _apex_cache[snapshot.origin] = (snapshot, apex, signed)
    return apex, signed


# -- negative answers by class ----------------------------------------------------------


class _NegativeFacts:
    """Per version: what classifying a nonexistent name needs beyond the snapshot."""

    __slots__ = ("nsec3_owners", "proven", "signed", "snapshot")

    def __init__(self, snapshot: Snapshot, signed: bool) -> None:
        self.snapshot = snapshot
        self.signed = signed
        self.nsec3_owners = frozenset(snapshot.nsec3_owners)
        self.proven: dict[bytes, bytes] = {}  # closest encloser -> closest provable encloser


_negative_cache: dict[bytes, _NegativeFacts] = {}


def _negative_facts(snapshot: Snapshot) -> _NegativeFacts:
    facts = _negative_cache.get(snapshot.origin)
    if facts is None or facts.snapshot is not snapshot:
        facts = _NegativeFacts(snapshot, _apex_facts(snapshot)[1])
        _negative_cache[snapshot.origin] = facts
    return facts


def nxdomain_class(snapshot: Snapshot, qname: bytes, dnssec_ok: bool) -> tuple[object, ...] | None:
    """A key such that lookup() gives the same Result for every qname of one key.

    Defined for the plain NXDOMAIN only (qname strictly below the apex, no cut or
    DNAME above it, no wildcard at its closest encloser); None for everything else.
    The Result of such a name is the SOA and, with DNSSEC, the NSEC covering the
    name and the one covering the wildcard (RFC 4035 3.1.3.2), or the NSEC3
    closest encloser proof (RFC 5155 7.2.2): so the key is the closest encloser
    and the position of the name (or of its next closer name's hash) in the
    canonical (hash) order, and random names share a few keys per gap.
    """
    snap = snapshot
    if snap.has_data(qname) or qname in snap.ents:
        return None
    origin = snap.origin
    origin_len = len(origin)
    facts = _negative_facts(snap)
    cuts, dnames, ents = snap.cuts, snap.dnames, snap.ents
    check_cuts = bool(cuts or dnames)
    encloser: bytes | None = None
    pos = qname[0] + 1
    while True:
        parent = qname[pos:]
        if len(parent) <= origin_len:
            if parent != origin:
                return None
            break
        if check_cuts and (parent in cuts or parent in dnames):
            return None
        if encloser is None:
            if parent in ents:
                encloser = parent
            elif snap.has_data(parent):
                if parent in facts.nsec3_owners:
                    return None  # lookup hides NSEC3-only owners; leave that case to it
                encloser = parent
        pos += qname[pos] + 1
    if encloser is None:
        encloser = origin
    wildcard = names.WILDCARD_LABEL + encloser
    if snap.has_data(wildcard) or wildcard in ents:
        return None
    if not (dnssec_ok and facts.signed):
        return (False,)
    params = snap.nsec3_params
    if params is None:
        return (True, encloser, snap.canonical_index(qname))
    proven = facts.proven.get(encloser)
    if proven is None:
        proven = _provable_encloser(snap, encloser, params)
        facts.proven[encloser] = proven
    next_closer = _Resolver._next_closer(qname, proven)
    return (True, encloser, snap.nsec3_predecessor(nsec3_hash(next_closer, params)))


def _provable_encloser(snap: Snapshot, encloser: bytes, params: Nsec3Params) -> bytes:
    """The encloser _nsec3_closest_encloser_proof settles on: the closest with an NSEC3."""
    while encloser != snap.origin:
        index = snap.nsec3_predecessor(nsec3_hash(encloser, params))
        if index >= 0 and snap.nsec3_hashes[index] == nsec3_hash(encloser, params):
            break
        encloser = names.parent(encloser)
    return encloser


# -- NSEC3 hashing (RFC 5155 section 5) ------------------------------------------------

_nsec3_cache: dict[tuple[bytes, int, bytes], bytes] = {}


def nsec3_hash(key: bytes, params: Nsec3Params) -> bytes:
    """The raw SHA-1 NSEC3 hash of a name key (already lowercase, as RFC 5155 wants)."""
    cache_key = (key, params.iterations, params.salt)
    cached = _nsec3_cache.get(cache_key)
    if cached is not None:
        return cached
    salt = params.salt
    digest = hashlib.sha1(key + salt).digest()
    for _ in range(params.iterations):
        digest = hashlib.sha1(digest + salt).digest()
    if len(_nsec3_cache) >= _NSEC3_CACHE_SIZE:
        _nsec3_cache.clear()  # bounded: random-name floods must not grow it
    _nsec3_cache[cache_key] = digest
    return digest


# -- rdata helpers ---------------------------------------------------------------------


def _target_name(rtype: int, rdata: bytes) -> bytes | None:
    """The domain name an NS/MX/SRV/SVCB/HTTPS record points at, as a key."""
    if rtype == NS:
        start = 0
    elif rtype in (MX, SVCB, HTTPS):
        start = 2
    elif rtype == SRV:
        start = 6
    else:
        return None
    end = start + names.wire_name_length(rdata, start)
    target = names.lower(rdata[start:end])
    return None if target == names.ROOT else target


def _only_nsec3(node: Node) -> bool:
    """NSEC3 owners live apart from the name tree (they are not names of the zone)."""
    return all(t == NSEC3 or is_sig_type(t) for t in node)


def _first_type(node: Node) -> int:
    """The type ANY answers with: the lowest, RRSIG counting as type 46 (as Knot)."""
    data_types = [t for t in node if not is_sig_type(t)]
    lowest = min(data_types) if data_types else RRSIG
    if lowest > RRSIG and len(data_types) < len(node):
        return RRSIG
    return lowest


def _sorted(rdatas: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """RDATA in canonical order (RFC 4034 6.3), the order Knot keeps and sends."""
    return rdatas if len(rdatas) < 2 else tuple(sorted(rdatas))


# -- the resolver ----------------------------------------------------------------------


class _Resolver:
    """Working state of one lookup: follows CNAME/DNAME steps, then adds proofs."""

    __slots__ = (
        "apex",
        "dnssec",
        "origin",
        "qtype",
        "result",
        "seen",
        "snap",
        "wildcard_steps",
    )

    def __init__(self, snap: Snapshot, apex: Node, qtype: int, dnssec: bool) -> None:
        self.snap = snap
        self.apex = apex
        self.origin = snap.origin
        self.qtype = qtype
        self.dnssec = dnssec
        self.result = Result()
        self.seen: set[bytes] = set()
        # (qname, closest encloser) of each answer synthesized from a wildcard
        self.wildcard_steps: list[tuple[bytes, bytes]] = []

    # -- node access that hides NSEC3 owners ---------------------------------------

    def _node(self, key: bytes) -> Node | None:
        node = self.snap.node(key)
        if node is not None and NSEC3 in node and _only_nsec3(node):
            return None
        return node

    def _exists(self, key: bytes) -> bool:
        snap = self.snap
        if key in snap.ents:
            return True
        if not snap.has_data(key):
            return False
        return not snap.nsec3_hashes or self._node(key) is not None

    # -- output helpers -------------------------------------------------------------

    def _rrset(self, owner: bytes, node: Node, rtype: int, ttl: int | None = None) -> RRsetOut:
        entry_ttl, rdatas = node[rtype]
        sigs = node.get(sig_type(rtype)) if self.dnssec else None
        return RRsetOut(owner, rtype, entry_ttl if ttl is None else ttl, _sorted(rdatas), sigs)

    def _add_authority(self, rrset: RRsetOut) -> None:
        for present in self.result.authority:
            if present.owner == rrset.owner and present.rtype == rrset.rtype:
                return
        self.result.authority.append(rrset)

    def _add_soa(self) -> None:
        snap = self.snap
        apex = self.apex
        negative_ttl = min(snap.soa_ttl, snap.soa.minimum)
        soa = self._rrset(self.origin, apex, SOA, negative_ttl)
        if soa.sigs is not None:  # Knot caps the RRSIG's TTL the same way
            soa.sigs = (min(soa.sigs[0], negative_ttl), soa.sigs[1])
        self._add_authority(soa)

    def _add_nsec_at(self, key: bytes) -> bool:
        node = self.apex if key == self.origin else self.snap.node(key)
        if node is None or NSEC not in node:
            return False
        self._add_authority(self._rrset(key, node, NSEC))
        return True

    # -- main loop ------------------------------------------------------------------

    def run(self, qname: bytes) -> None:
        name: bytes | None = qname
        steps = 0
        while name is not None:
            self.seen.add(name)
            name = self._step(name)
            steps += 1
            if name is not None and (name in self.seen or steps >= _MAX_CHAIN):
                break
        if self.dnssec:
            self._prove_wildcards()
        self._add_additionals()

    def _step(self, name: bytes) -> bytes | None:
        """Resolve one name; returns the next name of a CNAME/DNAME chain, if any."""
        snap = self.snap
        if snap.cuts or snap.dnames:
            for ancestor in names.ancestors(name, self.origin):
                if ancestor in snap.cuts:
                    self._referral(ancestor)
                    return None
                if ancestor in snap.dnames:
                    return self._dname(ancestor, name)
            if name in snap.cuts and name != self.origin:
                if self.qtype == DS:
                    return self._at_node(name, name, self._node(name) or {}, None)
                self._referral(name)
                return None
        node = self._node(name)
        if node is not None:
            return self._at_node(name, name, node, None)
        if name in snap.ents:
            self._nodata(name, None, None)
            return None
        encloser = self._closest_encloser(name)
        if encloser not in snap.cuts:
            wildcard = names.WILDCARD_LABEL + encloser
            wild_node = self._node(wildcard)
            if wild_node is not None:
                return self._at_node(name, wildcard, wild_node, encloser)
            if wildcard in snap.ents:
                self._nodata(name, wildcard, encloser)
                return None
        self._nxdomain(name, encloser)
        return None

    def _closest_encloser(self, name: bytes) -> bytes:
        current = name
        while current != self.origin:
            current = names.parent(current)
            if self._exists(current):
                return current
        return self.origin

    # -- cases ----------------------------------------------------------------------

    def _at_node(
        self, owner: bytes, source: bytes, node: Node, encloser: bytes | None
    ) -> bytes | None:
        """Answer from `node` (at `source`, the wildcard when synthesizing) for `owner`."""
        qtype = self.qtype
        if encloser is not None:
            self.wildcard_steps.append((owner, encloser))
        if qtype == ANY and node:
            first = _first_type(node)
            if first == RRSIG:
                # Knot answers with the whole RRSIG set; one RRset per covered
                # type keeps each signature's own TTL.
                for rtype in sorted(t for t in node if is_sig_type(t)):
                    ttl, rdatas = node[rtype]
                    self.result.answer.append(RRsetOut(owner, RRSIG, ttl, _sorted(rdatas)))
            else:
                self.result.answer.append(self._rrset(owner, node, first))
            return None
        if qtype == RRSIG:
            # Knot: the RRSIGs of the lowest covered type; never follows a CNAME.
            if any(is_sig_type(t) for t in node):
                self._answer_rrsigs(owner, node)
                return None
        elif CNAME in node and qtype not in (CNAME, NSEC):
            # Knot answers qtype NSEC from the CNAME's own node (as it does RRSIG).
            self.result.answer.append(self._rrset(owner, node, CNAME))
            target = names.lower(node[CNAME][1][0])
            return target if names.is_subdomain(target, self.origin) else None
        elif qtype in node:
            self.result.answer.append(self._rrset(owner, node, qtype))
            return None
        self._nodata(owner, source if encloser is not None else None, encloser)
        return None

    def _answer_rrsigs(self, owner: bytes, node: Node) -> None:
        covered = min(t for t in node if is_sig_type(t)) & 0xFFFF
        ttl, rdatas = node[sig_type(covered)]
        self.result.answer.append(RRsetOut(owner, RRSIG, ttl, _sorted(rdatas)))

    def _nodata(self, name: bytes, wildcard: bytes | None, encloser: bytes | None) -> None:
        self._add_soa()
        if not self.dnssec:
            return
        if self.snap.nsec3_params is None:
            if wildcard is not None:
                self._add_nsec_at(wildcard)  # the covering NSEC follows with the wildcard proof
            elif not self._add_nsec_at(name):
                self._add_nsec_covering(name)  # empty non-terminal
        elif wildcard is not None and encloser is not None:
            # RFC 5155 7.2.5, in Knot's order: the wildcard's own NSEC3, then the
            # closest encloser proof.
            self._add_nsec3_match(wildcard)
            self._nsec3_closest_encloser_proof(name, encloser)
        elif not self._add_nsec3_match(name):
            # RFC 5155 7.2.4 (opt-out): no NSEC3 of its own, prove the closest provable encloser.
            self._nsec3_closest_encloser_proof(name, names.parent(name))

    def _nxdomain(self, name: bytes, encloser: bytes) -> None:
        self.result.rcode = NXDOMAIN
        self._add_soa()
        if not self.dnssec:
            return
        wildcard = names.WILDCARD_LABEL + encloser
        if self.snap.nsec3_params is None:
            self._add_nsec_covering(name)
            self._add_nsec_covering(wildcard)
        else:
            # With opt-out the provable encloser may sit above the real one; the
            # wildcard denied is the one at the encloser proven (as Knot does).
            proven = self._nsec3_closest_encloser_proof(name, encloser)
            self._add_nsec3_cover(names.WILDCARD_LABEL + proven)

    def _referral(self, cut: bytes) -> None:
        result = self.result
        if not result.answer:
            result.aa = False
        node = self._node(cut)
        assert node is not None and NS in node
        ns = RRsetOut(cut, NS, node[NS][0], _sorted(node[NS][1]))
        result.authority.append(ns)
        if self.dnssec:
            if DS in node:
                self._add_authority(self._rrset(cut, node, DS))
            elif self.snap.nsec3_params is None:
                self._add_nsec_at(cut)
            elif not self._add_nsec3_match(cut):
                self._nsec3_closest_encloser_proof(cut, names.parent(cut))
        self._add_glue(cut, ns)

    def _dname(self, owner: bytes, name: bytes) -> bytes | None:
        node = self._node(owner)
        assert node is not None and DNAME in node
        dname = self._rrset(owner, node, DNAME)
        self.result.answer.append(dname)
        prefix = name[: len(name) - len(owner)]
        target = node[DNAME][1][0]
        if len(prefix) + len(target) > _MAX_NAME:
            self.result.rcode = YXDOMAIN
            return None
        synthesized = prefix + target
        # RFC 6672 3.1: the synthesized CNAME has the DNAME's TTL and is not signed.
        self.result.answer.append(RRsetOut(name, CNAME, dname.ttl, (synthesized,)))
        target_key = names.lower(synthesized)
        return target_key if names.is_subdomain(target_key, self.origin) else None

    # -- additional section -----------------------------------------------------------

    def _add_glue(self, cut: bytes, ns: RRsetOut) -> None:
        """A/AAAA for NS targets inside the zone: required below the cut (RFC 9471)."""
        required: list[RRsetOut] = []
        optional: list[RRsetOut] = []
        for rdata in ns.rdatas:
            target = _target_name(NS, rdata)
            if target is None or not names.is_subdomain(target, self.origin):
                continue
            below = names.is_subdomain(target, cut)
            self._address_records(target, required if below else optional)
        result = self.result
        result.additional[:0] = required
        result.required_additional += len(required)
        result.additional.extend(optional)

    def _address_records(self, target: bytes, out: list[RRsetOut]) -> None:
        node = self.snap.node(target)
        if node is None and not self._exists(target) and not self._occluded(target):
            encloser = self._closest_encloser(target)
            node = self._node(names.WILDCARD_LABEL + encloser)
        if node is None:
            return
        for rtype in _GLUE_TYPES:
            if rtype in node and not self._already_added(target, rtype, out):
                out.append(self._rrset(target, node, rtype))

    def _occluded(self, key: bytes) -> bool:
        """At or below a zone cut (glue or occluded data)."""
        snap = self.snap
        if not snap.cuts:
            return False
        if key in snap.cuts:
            return True
        return any(a in snap.cuts for a in names.ancestors(key, self.origin))

    def _already_added(self, owner: bytes, rtype: int, pending: list[RRsetOut]) -> bool:
        result = self.result
        for section in (result.answer, result.additional, pending):
            for rrset in section:
                if rrset.owner == owner and rrset.rtype == rtype:
                    return True
        return False

    def _add_additionals(self) -> None:
        """A/AAAA of the names answer records point at (NS, MX, SRV, SVCB, HTTPS)."""
        extra: list[RRsetOut] = []
        for rrset in self.result.answer:
            if rrset.rtype not in (NS, MX, SRV, SVCB, HTTPS):
                continue
            for rdata in rrset.rdatas:
                target = _target_name(rrset.rtype, rdata)
                if target is not None and names.is_subdomain(target, self.origin):
                    self._address_records(target, extra)
                    if self.dnssec and rrset.rtype in (SVCB, HTTPS):
                        self._target_denial(target, extra)
        self.result.additional.extend(extra)

    def _target_denial(self, target: bytes, out: list[RRsetOut]) -> None:
        """Knot adds the service target's NSEC/NSEC3 (RFC 9460 4.1: proof that the
        target holds no SVCB of its own and which address types it has)."""
        snap = self.snap
        if snap.nsec3_params is None:
            node = snap.node(target)
            if node is not None and NSEC in node and not self._already_added(target, NSEC, out):
                out.append(self._rrset(target, node, NSEC))
            return
        index, matched = self._nsec3_lookup(target)
        if matched:
            owner = snap.nsec3_owners[index]
            node = snap.node(owner)
            if node is not None and not self._already_added(owner, NSEC3, out):
                out.append(self._rrset(owner, node, NSEC3))

    # -- NSEC proofs ------------------------------------------------------------------

    def _add_nsec_covering(self, key: bytes) -> None:
        """The NSEC whose owner is the last one at or before key in canonical order."""
        snap = self.snap
        order = snap.order
        pos = snap.canonical_index(key)
        if pos < len(order) and order[pos] == names.canonical_key(key):
            pos += 1
        for _ in range(len(order)):
            pos -= 1
            owner = names.key_from_canonical(order[pos])
            if self._add_nsec_at(owner):
                return

    def _prove_wildcards(self) -> None:
        """RFC 4035 3.1.3.3: each wildcard expansion needs proof that qname does not exist."""
        for owner, encloser in self.wildcard_steps:
            if self.snap.nsec3_params is None:
                self._add_nsec_covering(owner)
            else:
                self._add_nsec3_cover(self._next_closer(owner, encloser))

    # -- NSEC3 proofs -----------------------------------------------------------------

    def _nsec3_lookup(self, key: bytes) -> tuple[int, bool]:
        params = self.snap.nsec3_params
        assert params is not None
        hashed = nsec3_hash(key, params)
        index = self.snap.nsec3_predecessor(hashed)
        return index, index >= 0 and self.snap.nsec3_hashes[index] == hashed

    def _add_nsec3(self, index: int) -> None:
        owner = self.snap.nsec3_owners[index]
        node = self.snap.node(owner)
        assert node is not None
        self._add_authority(self._rrset(owner, node, NSEC3))

    def _add_nsec3_match(self, key: bytes) -> bool:
        index, matched = self._nsec3_lookup(key)
        if matched:
            self._add_nsec3(index)
        return matched

    def _add_nsec3_cover(self, key: bytes) -> None:
        index, _ = self._nsec3_lookup(key)
        if index >= 0:
            self._add_nsec3(index)

    @staticmethod
    def _next_closer(name: bytes, encloser: bytes) -> bytes:
        """The ancestor of name (or name) exactly one label below encloser."""
        current = name
        while names.parent(current) != encloser and current != encloser:
            current = names.parent(current)
        return current

    def _nsec3_closest_encloser_proof(self, name: bytes, encloser: bytes) -> bytes:
        """RFC 5155 7.2.1: NSEC3 matching the closest (provable) encloser, then the one
        covering the next closer name. With opt-out the encloser may have no NSEC3 of
        its own, so walk up to the closest one that has."""
        while True:
            index, matched = self._nsec3_lookup(encloser)
            if matched or encloser == self.origin:
                break
            encloser = names.parent(encloser)
        if matched:
            self._add_nsec3(index)
        if name != encloser:
            self._add_nsec3_cover(self._next_closer(name, encloser))
        return encloser
