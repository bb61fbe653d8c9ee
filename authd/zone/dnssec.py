"""DNSSEC validation of a whole zone version, from its wire form, with a budget.

What a version must satisfy when it is signed (issue 4):
- the apex DNSKEY RRset is signed by a key matching the trust anchor (DS or DNSKEY
  entries; several allowed for rollovers), or by any key of the set without one;
- every authoritative RRset (not glue, not the NS at a cut) has an RRSIG by an apex
  zone key that verifies, inside its validity window (inception may be `skew` ahead);
  an RRSIG by a known key that does not verify is corruption and rejects the version;
- the NSEC chain, or the NSEC3 chain, covers every name exactly once, is closed, and
  its type bitmaps match the data; NSEC3 parameters agree, iterations under the cap;
- ZONEMD (RFC 8976, SIMPLE scheme) verifies when present, and is present when required.

Hostile zones are bounded (KeyTrap, CVE-2023-50387 / 50868): caps on apex DNSKEYs,
on keys sharing a tag, on signatures tried per RRset, on NSEC3 iterations, and a
deadline for the whole run. Cryptography is done by `cryptography` on canonical
wire bytes built here; dnspython's validate() is too slow for whole zones.
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from authd.zone import names
from authd.zone.canonical import canonical_rdata, rr_wire, rrset_wire
from authd.zone.snapshot import (
    DNSKEY,
    DS,
    NSEC,
    NSEC3,
    NSEC3PARAM,
    RRSIG,
    Node,
    Nsec3Params,
    Snapshot,
    is_sig_type,
    sig_type,
)

ZONEMD = 63
DNAME = 39
_SIG_KEYS = sig_type(0)  # node keys from here on hold RRSIGs (sig_type(covered))
_RRSIG_TIMES = struct.Struct(">IIIH")  # original TTL, expiration, inception, key tag
SUPPORTED_ALGORITHMS = frozenset({5, 7, 8, 10, 13, 14, 15, 16})
DEPRECATED_ALGORITHMS = frozenset({5, 7})  # SHA-1: validated, with a warning


@dataclass(frozen=True)
class Budget:
    max_dnskeys: int = 16
    max_keys_per_tag: int = 4
    max_signatures_per_rrset: int = 8
    max_nsec3_iterations: int = 150
    seconds: float = 600.0


@dataclass(frozen=True)
class Finding:
    """One problem: the first offending owner, type and check, and a sentence."""

    owner: str
    rtype: str
    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.rtype}: {self.message}"


@dataclass
class Report:
    signed: bool = False
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    rrsets_checked: int = 0
    signatures_verified: int = 0
    horizon: int | None = None  # earliest RRSIG expiration (unix time)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


class _Stop(Exception):
    """Raised inside the walk once the first error is recorded or the budget is spent."""


@dataclass(frozen=True)
class Anchor:
    """A trust anchor entry: a DS (digest type + digest) or a full DNSKEY rdata."""

    key_tag: int
    algorithm: int
    digest_type: int | None = None
    digest: bytes | None = None
    dnskey: bytes | None = None

    @classmethod
    def from_ds(cls, rdata: bytes) -> Anchor:
        tag, alg, digest_type = struct.unpack_from(">HBB", rdata)
        return cls(tag, alg, digest_type=digest_type, digest=rdata[4:])

    @classmethod
    def from_dnskey(cls, rdata: bytes) -> Anchor:
        return cls(key_tag(rdata), rdata[3], dnskey=rdata)

    def matches(self, owner: bytes, dnskey: bytes) -> bool:
        if self.dnskey is not None:
            return self.dnskey == dnskey
        digester = {1: hashlib.sha1, 2: hashlib.sha256, 4: hashlib.sha384}.get(
            self.digest_type or 0
        )
        if digester is None or self.key_tag != key_tag(dnskey) or self.algorithm != dnskey[3]:
            return False
        return digester(owner + dnskey).digest() == self.digest


def key_tag(dnskey: bytes) -> int:
    """RFC 4034 appendix B."""
    if dnskey[3] == 1:
        return (dnskey[-3] << 8) | dnskey[-2]
    total = 0
    for index, octet in enumerate(dnskey):
        total += octet if index & 1 else octet << 8
    total += (total >> 16) & 0xFFFF
    return total & 0xFFFF


Verifier = Callable[[bytes, bytes], bool]


def _public_key(dnskey: bytes) -> Verifier | None:
    """A function (signature, data) -> valid, or None for an unsupported algorithm."""
    algorithm, key = dnskey[3], dnskey[4:]
    try:
        if algorithm in (5, 7, 8, 10):
            if key[0]:
                exp_len, pos = key[0], 1
            else:
                exp_len, pos = struct.unpack_from(">H", key, 1)[0], 3
            exponent = int.from_bytes(key[pos : pos + exp_len], "big")
            modulus = int.from_bytes(key[pos + exp_len :], "big")
            rsa_key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
            digest: hashes.HashAlgorithm = (
                hashes.SHA256()
                if algorithm == 8
                else hashes.SHA512()
                if algorithm == 10
                else hashes.SHA1()
            )

            def verify_rsa(signature: bytes, data: bytes) -> bool:
                try:
                    rsa_key.verify(signature, data, padding.PKCS1v15(), digest)
                except InvalidSignature:
                    return False
                return True

            return verify_rsa
        if algorithm in (13, 14):
            curve: ec.EllipticCurve = ec.SECP256R1() if algorithm == 13 else ec.SECP384R1()
            size = 32 if algorithm == 13 else 48
            ec_key = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + key)
            ec_hash = ec.ECDSA(hashes.SHA256() if algorithm == 13 else hashes.SHA384())

            def verify_ec(signature: bytes, data: bytes) -> bool:
                if len(signature) != 2 * size:
                    return False
                der = encode_dss_signature(
                    int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
                )
                try:
                    ec_key.verify(der, data, ec_hash)
                except InvalidSignature:
                    return False
                return True

            return verify_ec
        if algorithm in (15, 16):
            ed_key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey = (
                ed25519.Ed25519PublicKey.from_public_bytes(key)
                if algorithm == 15
                else ed448.Ed448PublicKey.from_public_bytes(key)
            )

            def verify_ed(signature: bytes, data: bytes) -> bool:
                try:
                    ed_key.verify(signature, data)
                except InvalidSignature:
                    return False
                return True

            return verify_ed
    except (ValueError, IndexError, struct.error):
        return lambda signature, data: False  # a malformed key verifies nothing
    return None


def _type_text(rtype: int) -> str:
    import dns.rdatatype

    return dns.rdatatype.to_text(rtype)  # type: ignore[arg-type]


@dataclass
class _Key:
    rdata: bytes
    tag: int
    algorithm: int
    verify: Verifier | None


class ZoneValidator:
    """Validates one Snapshot. Create one per run; call validate()."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        now: float,
        anchors: Iterable[Anchor] = (),
        skew: int = 300,
        budget: Budget | None = None,
        zonemd_required: bool = False,
        reject_unknown_algorithm: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snap = snapshot
        self.now = int(now)
        self.anchors = tuple(anchors)
        self.skew = skew
        self.budget = budget or Budget()
        self.zonemd_required = zonemd_required
        self.reject_unknown_algorithm = reject_unknown_algorithm
        self.clock = clock
        self.report = Report()
        self.keys: dict[tuple[int, int], list[_Key]] = {}
        self._deadline = 0.0

    # -- reporting ------------------------------------------------------------

    def _error(self, owner: bytes, rtype: int, check: str, message: str) -> NoReturn:
        self.report.errors.append(Finding(names.display(owner), _type_text(rtype), check, message))
        raise _Stop

    def _warn(self, owner: bytes, rtype: int, check: str, message: str) -> None:
        if len(self.report.warnings) < 100:
            finding = Finding(names.display(owner), _type_text(rtype), check, message)
            self.report.warnings.append(finding)

    def _check_deadline(self) -> None:
        if self.clock() > self._deadline:
            self._error(
                self.snap.origin,
                DNSKEY,
                "budget-deadline",
                f"validation did not finish within {self.budget.seconds:g} s",
            )

    # -- entry points ---------------------------------------------------------------

    def validate(self) -> Report:
        """The whole version: keys, every authoritative RRset, the whole chain."""
        return self._run(lambda apex: self._walk_zone())

    def validate_owners(self, owners: Iterable[bytes]) -> Report:
        """Check the signatures and the chain around the given owners only (IXFR).

        Sound only against a previous version that passed, and only when
        verify.needs_full_check() said so: the keys, ZONEMD and NSEC3PARAM are
        unchanged and, for NSEC3, every changed NSEC3 is judged here (nsec3_diff_is_local).
        """
        touched = list(owners)

        def around_owners(apex: Node) -> None:
            nsec3 = self._require_denial(apex)
            selected = self._with_uncovered_descendants(touched)
            # The full walk's order: every signature first, then the chain.
            for count, owner in enumerate(selected, 1):
                self._check_owner_signatures(owner, nsec3)
                if count % 1024 == 0:
                    self._check_deadline()
            if nsec3:
                self._check_nsec3_around(touched)
            else:
                for owner in selected:
                    self._check_owner_nsec(owner)

        return self._run(around_owners)

    def _run(self, check_signed: Callable[[Node], None]) -> Report:
        """ZONEMD, then (for a signed version) the keys and `check_signed`; the first error
        ends the run."""
        started = self.clock()
        self._deadline = started + self.budget.seconds
        try:
            apex = self.snap.node(self.snap.origin) or {}
            self._check_zonemd(apex)
            if DNSKEY in apex:
                self.report.signed = True
                self._load_keys(apex)
                self._check_dnskey_set(apex)
                check_signed(apex)
        except _Stop:
            pass
        self.report.seconds = self.clock() - started
        return self.report

    # -- keys -----------------------------------------------------------------------

    def _load_keys(self, apex: Node) -> None:
        origin = self.snap.origin
        _, dnskeys = apex[DNSKEY]
        if len(dnskeys) > self.budget.max_dnskeys:
            self._error(
                origin,
                DNSKEY,
                "budget-dnskeys",
                f"{len(dnskeys)} DNSKEYs at the apex, more than the cap of "
                f"{self.budget.max_dnskeys}",
            )
        for rdata in dnskeys:
            if len(rdata) < 5:
                self._error(origin, DNSKEY, "dnskey-malformed", "a DNSKEY is too short")
            flags, protocol, algorithm = struct.unpack_from(">HBB", rdata)
            if protocol != 3 or not flags & 0x0100:
                continue  # not a zone key (RFC 4034 2.1.1); cannot sign zone data
            verify = _public_key(rdata)
            if verify is None:
                message = f"DNSKEY algorithm {algorithm} is not supported"
                if self.reject_unknown_algorithm:
                    self._error(origin, DNSKEY, "unknown-algorithm", message)
                self._warn(origin, DNSKEY, "unknown-algorithm", message)
            elif algorithm in DEPRECATED_ALGORITHMS:
                self._warn(
                    origin, DNSKEY, "deprecated-algorithm", f"algorithm {algorithm} uses SHA-1"
                )
            key = _Key(rdata, key_tag(rdata), algorithm, verify)
            same_tag = self.keys.setdefault((key.tag, algorithm), [])
            same_tag.append(key)
            if len(same_tag) > self.budget.max_keys_per_tag:
                self._error(
                    origin,
                    DNSKEY,
                    "budget-keytag",
                    f"more than {self.budget.max_keys_per_tag} DNSKEYs share key tag {key.tag}",
                )

    def _check_dnskey_set(self, apex: Node) -> None:
        origin = self.snap.origin
        _, dnskeys = apex[DNSKEY]
        sigs = apex.get(sig_type(DNSKEY))
        if sigs is None:
            self._error(origin, DNSKEY, "rrsig-missing", "the DNSKEY RRset is not signed")
        trusted: set[tuple[int, int]] | None = None
        if self.anchors:
            trusted = {
                (key_tag(k), k[3]) for k in dnskeys for a in self.anchors if a.matches(origin, k)
            }
            if not trusted:
                # Several DS digests of one key name its tag once.
                tags = ", ".join(str(t) for t in dict.fromkeys(a.key_tag for a in self.anchors))
                self._error(
                    origin,
                    DNSKEY,
                    "dnskey-anchor-mismatch",
                    f"no DNSKEY matches the trust anchor (key tags {tags}): "
                    "validating resolvers would answer SERVFAIL",
                )
        valid_by = self._verify_rrset(origin, DNSKEY, dnskeys, sigs[1] if sigs else (), trusted)
        if trusted is not None and not valid_by:
            self._error(
                origin,
                DNSKEY,
                "dnskey-anchor-unsigned",
                "the DNSKEY RRset has no valid signature by a key matching the trust anchor",
            )

    # -- signatures -----------------------------------------------------------------

    def _verify_rrset(
        self,
        owner: bytes,
        rtype: int,
        rdatas: tuple[bytes, ...],
        sigs: tuple[bytes, ...],
        only_keys: set[tuple[int, int]] | None = None,
        owner_labels: int = -1,
    ) -> bool:
        """Verify the RRSIGs over one RRset. True if one by `only_keys` (if given) holds.

        Records an error when none verifies; a signature by a known key that fails
        the cryptographic check is corruption and is an error even beside a good one.
        `owner_labels` is the owner's label count when the caller knows it.
        """
        self.report.rrsets_checked += 1
        if not sigs:
            self._error(owner, rtype, "rrsig-missing", "no RRSIG covers this RRset")
        if len(sigs) > self.budget.max_signatures_per_rrset:
            self._error(
                owner,
                rtype,
                "budget-signatures",
                f"{len(sigs)} RRSIGs over one RRset, more than the cap of "
                f"{self.budget.max_signatures_per_rrset}",
            )
        good = False
        good_trusted = only_keys is None
        first_problem: tuple[str, str] | None = None
        if owner_labels < 0:
            owner_labels = names.label_count(owner)
        origin = self.snap.origin
        signer_end = 18 + len(origin)
        now = self.now
        for sig in sigs:
            # The signer is the apex in nearly every RRSIG; a wire name is self-delimiting,
            # so bytes equal to the apex's are exactly the apex (no name walk needed).
            signer = sig[18:signer_end]
            if signer == origin or names.lower(signer) == origin:
                signer_len = signer_end - 18
            else:
                length = _name_length(sig, 18)
                if length is None:
                    self._error(owner, rtype, "rrsig-malformed", "an RRSIG rdata is malformed")
                signer_len = length
                signer = names.lower(sig[18 : 18 + signer_len])
            algorithm, labels = sig[2], sig[3]
            original_ttl, expiration, inception, tag = _RRSIG_TIMES.unpack_from(sig, 4)
            if signer != origin:
                first_problem = first_problem or (
                    "rrsig-signer",
                    f"RRSIG signer {names.to_text(signer)} is not the zone apex",
                )
                continue
            keys = self.keys.get((tag, algorithm))
            if not keys:
                first_problem = first_problem or (
                    "rrsig-unknown-key",
                    f"RRSIG by key {tag} (algorithm {algorithm}), which is not in the apex "
                    "DNSKEY set",
                )
                continue
            signed_owner = owner
            if labels < owner_labels:  # a wildcard's RRSIG: sign "*." + the rightmost labels
                signed_owner = names.WILDCARD_LABEL + _rightmost(owner, labels)
            if len(rdatas) == 1:  # one RR: nothing to sort or deduplicate (RFC 4034 6.3)
                wire = rr_wire(signed_owner, rtype, original_ttl, canonical_rdata(rtype, rdatas[0]))
            else:
                wire = rrset_wire(signed_owner, rtype, original_ttl, rdatas)
            data = sig[:18] + signer + wire
            signature = sig[18 + signer_len :]
            verified = False
            for key in keys:
                if key.verify is None:
                    continue
                self.report.signatures_verified += 1
                if key.verify(signature, data):
                    verified = True
                    break
            if not verified:
                if any(k.verify is not None for k in keys):
                    self._error(
                        owner, rtype, "rrsig-invalid", f"RRSIG by key {tag} does not verify"
                    )
                continue  # unsupported algorithm, already reported as configured
            # RFC 4034 3.1.5: the 32-bit times read as the instants closest to now
            expires = now + ((expiration - now + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            begins = now + ((inception - now + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            if expires < self.now:
                first_problem = first_problem or (
                    "rrsig-expired",
                    f"RRSIG by key {tag} expired {self.now - expires} s ago",
                )
                continue
            if begins - self.skew > self.now:
                first_problem = first_problem or (
                    "rrsig-not-yet-valid",
                    f"RRSIG by key {tag} is valid only in {begins - self.now} s",
                )
                continue
            if self.report.horizon is None or expires < self.report.horizon:
                self.report.horizon = expires
            good = True
            if only_keys is not None and (tag, algorithm) in only_keys:
                good_trusted = True
        if not good:
            check, message = first_problem or ("rrsig-invalid", "no RRSIG verifies")
            self._error(owner, rtype, check, message)
        return good and good_trusted

    # -- the walk ---------------------------------------------------------------------

    def _walk_zone(self) -> None:
        snap = self.snap
        origin = snap.origin
        apex = snap.node(origin) or {}
        nsec3 = self._require_denial(apex)
        occluded: bytes | None = None  # canonical key of the cut or DNAME hiding its subtree
        authoritative: list[tuple[bytes, Node]] = []
        checked = 0
        for canonical in snap.order:
            if occluded is not None and canonical.startswith(occluded):
                continue  # glue or occluded data: not signed, not in the chain
            occluded = None
            owner = names.key_from_canonical(canonical)
            node = snap.node(owner)
            assert node is not None
            at_cut = owner in snap.cuts
            if at_cut or (DNAME in node and owner != origin):
                occluded = canonical
            if nsec3 and NSEC3 in node and names.parent(owner) == origin:
                self._check_signatures(owner, node, at_cut=False)
                continue  # NSEC3 records are checked with their chain
            self._check_signatures(owner, node, at_cut)
            authoritative.append((owner, node))
            checked += 1
            if checked % 1024 == 0:
                self._check_deadline()
        if nsec3:
            self._check_nsec3_chain(authoritative)
        else:
            self._check_nsec_chain(authoritative)

    def _require_denial(self, apex: Node) -> bool:
        """True for an NSEC3 zone; an error when a signed zone has neither chain."""
        nsec3 = self.snap.nsec3_params is not None or NSEC3PARAM in apex
        if not nsec3 and NSEC not in apex:
            origin = self.snap.origin
            self._error(origin, NSEC, "nsec-missing", "a signed zone without NSEC or NSEC3")
        return nsec3

    def _check_signatures(self, owner: bytes, node: Node, at_cut: bool) -> None:
        owner_labels = names.label_count(owner)
        apex = owner == self.snap.origin
        for rtype, (_, rdatas) in node.items():
            if rtype >= _SIG_KEYS or rtype == RRSIG:
                continue  # the signatures themselves (kept under sig_type(covered))
            if at_cut and rtype not in (DS, NSEC):
                continue  # the NS set at a cut and its glue belong to the child
            if rtype == DNSKEY and apex:
                continue  # checked against the trust anchor
            sigs = node.get(_SIG_KEYS | rtype)
            self._verify_rrset(owner, rtype, rdatas, sigs[1] if sigs else (), None, owner_labels)

    def _check_nsec_chain(self, authoritative: list[tuple[bytes, Node]]) -> None:
        count = len(authoritative)
        for index, (owner, node) in enumerate(authoritative):
            entry = node.get(NSEC)
            if entry is None:
                self._error(owner, NSEC, "nsec-chain-gap", "no NSEC at this name")
            if len(entry[1]) != 1:
                self._error(owner, NSEC, "nsec-chain", "more than one NSEC at this name")
            rdata = entry[1][0]
            expected = authoritative[(index + 1) % count][0]
            # Wire names are self-delimiting: a prefix equal to the expected name is it.
            next_len = len(expected)
            head = rdata[:next_len]
            if head != expected and names.lower(head) != expected:
                next_len = self._nsec_next_length(owner, rdata)
                next_name = names.lower(rdata[:next_len])
                self._error(
                    owner,
                    NSEC,
                    "nsec-chain-gap",
                    f"NSEC points to {names.to_text(next_name)}, the next name is "
                    f"{names.to_text(expected)}",
                )
            self._check_bitmap(owner, NSEC, rdata[next_len:], _types_present(node))

    def _nsec_next_length(self, owner: bytes, rdata: bytes) -> int:
        length = _name_length(rdata, 0)
        if length is None:
            self._error(owner, NSEC, "nsec-malformed", "the NSEC rdata is malformed")
        return length

    def _check_bitmap(self, owner: bytes, rtype: int, bitmap: bytes, expected: set[int]) -> None:
        listed = _bitmap_types(bitmap)
        if listed != expected:
            missing = sorted(expected - listed)
            extra = sorted(listed - expected)
            parts = []
            if missing:
                parts.append("misses " + " ".join(_type_text(t) for t in missing))
            if extra:
                parts.append("lists absent " + " ".join(_type_text(t) for t in extra))
            self._error(owner, rtype, "nsec-bitmap", "type bitmap " + ", ".join(parts))

    def _nsec3_params_checked(self) -> Nsec3Params:
        """The zone's NSEC3 parameters, or an error when they are unusable or over budget."""
        origin = self.snap.origin
        params = self.snap.nsec3_params
        if params is None:
            self._error(origin, NSEC3PARAM, "nsec3-params", "no usable NSEC3PARAM at the apex")
        if params.iterations > self.budget.max_nsec3_iterations:
            self._error(
                origin,
                NSEC3PARAM,
                "nsec3-iterations",
                f"{params.iterations} NSEC3 iterations, more than the cap of "
                f"{self.budget.max_nsec3_iterations} (RFC 9276)",
            )
        if params.algorithm != 1:
            self._error(
                origin, NSEC3PARAM, "nsec3-params", f"NSEC3 hash algorithm {params.algorithm}"
            )
        return params

    def _check_nsec3_record(self, index: int, params: Nsec3Params) -> tuple[bytes, int, bytes]:
        """One NSEC3 of the hash order: single, same parameters, linked to the next one.

        Returns its owner, flags and type bitmap.
        """
        snap = self.snap
        hashes = snap.nsec3_hashes
        owner = snap.nsec3_owners[index]
        node = snap.node(owner) or {}
        rdatas = node[NSEC3][1]
        if len(rdatas) != 1:
            self._error(owner, NSEC3, "nsec3-chain", "more than one NSEC3 at this name")
        rdata = rdatas[0]
        fields = _nsec3_fields(rdata)
        if fields is None:
            self._error(owner, NSEC3, "nsec3-malformed", "the NSEC3 rdata is malformed")
        algorithm, flags, iterations, salt, next_hash, bitmap = fields
        if (algorithm, iterations, salt) != (params.algorithm, params.iterations, params.salt):
            self._error(owner, NSEC3, "nsec3-params", "NSEC3 parameters differ from NSEC3PARAM")
        if next_hash != hashes[(index + 1) % len(hashes)]:
            self._error(
                owner,
                NSEC3,
                "nsec3-chain",
                "next hashed owner is not the following NSEC3 in hash order",
            )
        return owner, flags, bitmap

    def _check_nsec3_chain(self, authoritative: list[tuple[bytes, Node]]) -> None:
        snap = self.snap
        origin = snap.origin
        params = self._nsec3_params_checked()
        # What must be in the chain: every authoritative name except insecure
        # delegations under opt-out, plus the empty non-terminals above them.
        expected: dict[bytes, tuple[bytes, set[int]]] = {}
        optional: set[bytes] = set()
        for owner, node in authoritative:
            hashed = nsec3_hash(owner, params.salt, params.iterations)
            insecure_cut = owner in snap.cuts and DS not in node
            target = optional if insecure_cut else None
            if target is not None:
                target.add(hashed)
            else:
                expected[hashed] = (owner, _types_present(node) - {NSEC3})
                for ancestor in names.ancestors(owner, origin):
                    if ancestor in snap.ents:
                        ent_hash = nsec3_hash(ancestor, params.salt, params.iterations)
                        expected.setdefault(ent_hash, (ancestor, set()))
        for ent in snap.ents:
            ent_hash = nsec3_hash(ent, params.salt, params.iterations)
            if ent_hash not in expected:
                optional.add(ent_hash)
        hashes = snap.nsec3_hashes
        opt_out_seen = False
        for index, hashed in enumerate(hashes):
            owner, flags, bitmap = self._check_nsec3_record(index, params)
            opt_out_seen |= bool(flags & 1)
            if hashed in expected:
                original, types = expected.pop(hashed)
                self._check_bitmap(owner, NSEC3, bitmap, types)
            elif hashed not in optional:
                self._error(owner, NSEC3, "nsec3-orphan", "this NSEC3 matches no name of the zone")
        if expected:
            hashed, (original, _) = next(iter(expected.items()))
            self._error(
                original,
                NSEC3,
                "nsec3-missing",
                f"no NSEC3 for this name (hash {_b32(hashed)})",
            )
        if optional and not opt_out_seen:
            # Insecure delegations without NSEC3 need opt-out; with it they may be absent.
            covered = set(hashes)
            missing = [h for h in optional if h not in covered]
            if missing:
                self._error(
                    origin,
                    NSEC3,
                    "nsec3-missing",
                    "an insecure delegation lacks NSEC3 (no opt-out)",
                )

    def _check_nsec3_around(self, touched: list[bytes]) -> None:
        """The NSEC3 chain where an IXFR can have changed it; the rest is the previous
        version's, which passed.

        Checked, in the full walk's order: every NSEC3 whose hash is that of an affected
        name (nsec3_scope) or of a touched owner's label, with the NSEC3 before it (whose
        link the change may break), then the affected names whose NSEC3 is missing.
        """
        snap = self.snap
        params = self._nsec3_params_checked()
        scope = nsec3_scope(snap, touched, params)
        self._check_deadline()
        hashes = snap.nsec3_hashes
        indexes: set[int] = set()
        present: set[bytes] = set()
        labelled = (h for h in map(nsec3_label_hash, touched) if h is not None)
        for hashed in (*scope, *labelled):
            if not hashes:
                break
            pos = bisect.bisect_left(hashes, hashed)
            if pos < len(hashes) and hashes[pos] == hashed:
                indexes.add(pos)
                present.add(hashed)
            indexes.add((pos - 1) % len(hashes))
        opt_out_seen = False
        for index in sorted(indexes):
            owner, flags, bitmap = self._check_nsec3_record(index, params)
            opt_out_seen |= bool(flags & 1)
            entry = scope.get(hashes[index])
            if entry is None:
                continue  # a name the diff did not affect: as in the previous version
            if entry.kind == EXPECTED:
                self._check_bitmap(owner, NSEC3, bitmap, set(entry.types))
            elif entry.kind == ABSENT:
                self._error(owner, NSEC3, "nsec3-orphan", "this NSEC3 matches no name of the zone")
        optional_missing = False
        for hashed, entry in scope.items():
            if hashed in present:
                continue
            if entry.kind == EXPECTED:
                self._error(
                    entry.name,
                    NSEC3,
                    "nsec3-missing",
                    f"no NSEC3 for this name (hash {_b32(hashed)})",
                )
            optional_missing |= entry.kind == OPTIONAL
        if optional_missing and not opt_out_seen and not any_opt_out(snap):
            self._error(
                snap.origin,
                NSEC3,
                "nsec3-missing",
                "an insecure delegation lacks NSEC3 (no opt-out)",
            )

    def _with_uncovered_descendants(self, owners: Iterable[bytes]) -> list[bytes]:
        """The touched owners, plus the names below any touched non-apex owner, sorted.

        A diff that removes a cut or a DNAME turns the names below it (glue, occluded
        data) into authoritative data without touching them; they must be checked too.
        """
        snap = self.snap
        order = snap.order
        selected = {names.canonical_key(o): o for o in owners}
        for canonical, owner in list(selected.items()):
            if owner == snap.origin or owner in snap.cuts or owner in snap.dnames:
                continue  # the apex's descendants are the zone; a cut still occludes
            index = bisect.bisect_right(order, canonical)
            while index < len(order) and order[index].startswith(canonical):
                selected.setdefault(order[index], names.key_from_canonical(order[index]))
                index += 1
        return [selected[c] for c in sorted(selected)]

    def _check_owner_signatures(self, owner: bytes, nsec3: bool) -> None:
        snap = self.snap
        node = snap.node(owner)
        if node is None or self._is_occluded(owner):
            return
        # As in the full walk: an NSEC3 owner's RRsets are all checked, NS included.
        nsec3_owner = nsec3 and NSEC3 in node and names.parent(owner) == snap.origin
        self._check_signatures(owner, node, owner in snap.cuts and not nsec3_owner)

    def _check_owner_nsec(self, owner: bytes) -> None:
        """The NSECs at the owner's predecessor and at the owner (if authoritative) link up."""
        snap = self.snap
        for name in (self._authoritative_predecessor(owner), owner):
            if name is None:
                continue
            current = snap.node(name)
            if current is None or self._is_occluded(name):
                continue
            entry = current.get(NSEC)
            if entry is None:
                self._error(name, NSEC, "nsec-chain-gap", "no NSEC at this name")
            if len(entry[1]) != 1:
                self._error(name, NSEC, "nsec-chain", "more than one NSEC at this name")
            rdata = entry[1][0]
            next_len = self._nsec_next_length(name, rdata)
            next_name = names.lower(rdata[:next_len])
            expected = self._authoritative_successor(name)
            if next_name != expected:
                self._error(
                    name,
                    NSEC,
                    "nsec-chain-gap",
                    f"NSEC points to {names.to_text(next_name)}, the next name is "
                    f"{names.to_text(expected)}",
                )
            self._check_bitmap(name, NSEC, rdata[next_len:], _types_present(current))

    def _is_occluded(self, owner: bytes) -> bool:
        return is_occluded(self.snap, owner)

    def _authoritative_predecessor(self, owner: bytes) -> bytes | None:
        order = self.snap.order
        index = self.snap.canonical_index(owner) - 1
        while index >= 0:
            name = names.key_from_canonical(order[index])
            if not self._is_occluded(name):
                return name
            index -= 1
        return None

    def _authoritative_successor(self, owner: bytes) -> bytes:
        order = self.snap.order
        canonical = names.canonical_key(owner)
        index = self.snap.canonical_index(owner)
        if index < len(order) and order[index] == canonical:
            index += 1
        while index < len(order):
            name = names.key_from_canonical(order[index])
            if not self._is_occluded(name):
                return name
            index += 1
        return self.snap.origin

    # -- ZONEMD ---------------------------------------------------------------------

    def _check_zonemd(self, apex: Node) -> None:
        origin = self.snap.origin
        entry = apex.get(ZONEMD)
        if entry is None:
            if self.zonemd_required:
                self._error(origin, ZONEMD, "zonemd-missing", "ZONEMD is required but absent")
            return
        serial = self.snap.serial
        usable = [
            r for r in entry[1] if len(r) > 6 and r[4] == 1 and r[5] in (1, 2)
        ]  # scheme SIMPLE, SHA-384 or SHA-512
        if not usable:
            self._warn(origin, ZONEMD, "zonemd-unsupported", "no ZONEMD with a supported scheme")
            return
        digests = {alg: zonemd_digest(self.snap, alg) for alg in {r[5] for r in usable}}
        for rdata in usable:
            if struct.unpack_from(">I", rdata)[0] == serial and rdata[6:] == digests[rdata[5]]:
                return
        self._error(
            origin,
            ZONEMD,
            "zonemd-mismatch",
            f"ZONEMD digest does not match the zone content at serial {serial}",
        )


def _name_length(data: bytes, offset: int) -> int | None:
    """Length of an uncompressed wire name at offset, or None if it is malformed."""
    pos = offset
    while pos < len(data) and data[pos]:
        if data[pos] > 63:
            return None
        pos += data[pos] + 1
    if pos >= len(data):
        return None
    return pos + 1 - offset


def _rightmost(owner: bytes, count: int) -> bytes:
    parts = names.labels(owner)
    keep = parts[len(parts) - count :] if count else []
    return b"".join(bytes([len(p)]) + p for p in keep) + b"\x00"


def _types_present(node: Node) -> set[int]:
    types = {t for t in node if t < _SIG_KEYS}
    if len(types) != len(node):  # some key holds RRSIGs
        types.add(RRSIG)
    return types


@functools.lru_cache(maxsize=1024)  # bitmaps are at most ~8 kB
def _bitmap_types(bitmap: bytes) -> frozenset[int]:
    """RFC 4034 4.1.2 window blocks -> set of types (cached: zones repeat a few bitmaps)."""
    types: set[int] = set()
    pos = 0
    while pos + 2 <= len(bitmap):
        window, length = bitmap[pos], bitmap[pos + 1]
        block = bitmap[pos + 2 : pos + 2 + length]
        for byte_index, octet in enumerate(block):
            for bit in range(8):
                if octet & (0x80 >> bit):
                    types.add(window * 256 + byte_index * 8 + bit)
        pos += 2 + length
    return frozenset(types)


def nsec3_hash(owner: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5155 5: IH(salt, x, 0) = H(x || salt); IH(k) = H(IH(k-1) || salt)."""
    digest = hashlib.sha1(owner + salt).digest()
    for _ in range(iterations):
        digest = hashlib.sha1(digest + salt).digest()
    return digest


def _nsec3_fields(rdata: bytes) -> tuple[int, int, int, bytes, bytes, bytes] | None:
    """RFC 5155 3.2: algorithm, flags, iterations, salt, next hashed owner, type bitmap."""
    if len(rdata) < 5:
        return None
    algorithm, flags, iterations, salt_len = struct.unpack_from(">BBHB", rdata)
    pos = 5 + salt_len
    if pos >= len(rdata) or pos + 1 + rdata[pos] > len(rdata):
        return None
    hash_len = rdata[pos]
    salt = rdata[5:pos]
    return (
        algorithm,
        flags,
        iterations,
        salt,
        rdata[pos + 1 : pos + 1 + hash_len],
        rdata[pos + 1 + hash_len :],
    )


def nsec3_label_hash(owner: bytes) -> bytes | None:
    """The raw hash an NSEC3 owner's first label spells (as the snapshot indexes it)."""
    if not owner[0]:
        return None
    label = owner[1 : 1 + owner[0]]
    try:
        return base64.b32hexdecode(label.upper() + b"=" * (-len(label) % 8))
    except ValueError:
        return None


def is_occluded(snap: Snapshot, owner: bytes) -> bool:
    """Below a zone cut or a non-apex DNAME: glue or occluded data, neither signed nor chained."""
    for ancestor in names.ancestors(owner, snap.origin):
        if ancestor in snap.cuts or ancestor in snap.dnames:
            return True
    return False


# What the NSEC3 chain must hold for one name (the full walk's rules, name by name):
EXPECTED = 2  # an NSEC3 whose bitmap lists the name's types
OPTIONAL = 1  # an insecure delegation, or an empty non-terminal with none below it: may
# lack an NSEC3 when the zone uses opt-out; its NSEC3's bitmap is not checked
ABSENT = 0  # no name (glue, occluded, an NSEC3 owner, gone): an NSEC3 for it is an orphan


@dataclass(frozen=True, slots=True)
class ChainEntry:
    name: bytes
    kind: int
    types: frozenset[int] = frozenset()


def _subtree_end(order: list[bytes], canonical: bytes) -> int:
    """Index in `order` just past the names below `canonical` (whose keys extend it)."""
    return bisect.bisect_left(
        order, canonical[:-1] + b"\x01", bisect.bisect_right(order, canonical)
    )


def _has_secure_descendant(snap: Snapshot, name: bytes) -> bool:
    """Some name below `name` is in the chain: it has data and is not an insecure cut."""
    order = snap.order
    canonical = names.canonical_key(name)
    index = bisect.bisect_right(order, canonical)
    end = _subtree_end(order, canonical)
    while index < end:
        key = names.key_from_canonical(order[index])
        if key not in snap.cuts or DS in (snap.node(key) or {}):
            return True
        index = _subtree_end(order, order[index])  # an insecure cut hides what is below
    return False


def chain_entry(snap: Snapshot, name: bytes) -> ChainEntry:
    """What the NSEC3 chain of `snap` must hold for `name`."""
    node = snap.node(name)
    if node is None:
        if name not in snap.ents:
            return ChainEntry(name, ABSENT)
        if not is_occluded(snap, name) and _has_secure_descendant(snap, name):
            return ChainEntry(name, EXPECTED)
        return ChainEntry(name, OPTIONAL)
    if is_occluded(snap, name) or (NSEC3 in node and names.parent(name) == snap.origin):
        return ChainEntry(name, ABSENT)
    if name in snap.cuts and DS not in node:
        return ChainEntry(name, OPTIONAL)
    return ChainEntry(name, EXPECTED, frozenset(_types_present(node) - {NSEC3}))


def _affected_names(snap: Snapshot, touched: Iterable[bytes]) -> list[bytes]:
    """Names whose place in the NSEC3 chain an IXFR touching `touched` can change.

    A touched owner (its types, cut or DNAME); the empty non-terminals above it (made,
    removed, or left with only insecure delegations below); and, not knowing whether it
    became or stopped being a cut or DNAME, every name below it and the empty
    non-terminals between.
    """
    origin = snap.origin
    order = snap.order
    selected: dict[bytes, None] = {}

    def add_with_ancestors(owner: bytes, stop: bytes) -> None:
        selected[owner] = None
        for ancestor in names.ancestors(owner, stop):
            if not snap.has_data(ancestor):
                selected[ancestor] = None

    for owner in touched:
        add_with_ancestors(owner, origin)
        if owner == origin:
            continue
        canonical = names.canonical_key(owner)
        index = bisect.bisect_right(order, canonical)
        end = _subtree_end(order, canonical)
        while index < end:
            add_with_ancestors(names.key_from_canonical(order[index]), owner)
            index += 1
    return list(selected)


def nsec3_scope(
    snap: Snapshot, touched: Iterable[bytes], params: Nsec3Params
) -> dict[bytes, ChainEntry]:
    """Hash -> what the chain must hold there, for every name the IXFR can have affected."""
    scope: dict[bytes, ChainEntry] = {}
    for name in sorted(_affected_names(snap, touched), key=names.canonical_key):
        scope[nsec3_hash(name, params.salt, params.iterations)] = chain_entry(snap, name)
    return scope


def _nsec3_rdatas(snap: Snapshot, owner: bytes) -> tuple[bytes, ...]:
    entry = (snap.node(owner) or {}).get(NSEC3)
    return entry[1] if entry else ()


def _opt_out(rdatas: tuple[bytes, ...]) -> bool:
    return any(len(r) > 1 and r[1] & 1 for r in rdatas)


def _same_types(before: tuple[bytes, ...], after: tuple[bytes, ...]) -> bool:
    """One NSEC3 before and after, listing the same types: it still fits its name, and
    its link, parameters and signature are checked where it stands. (A changed opt-out
    flag matters only to the whole zone: see nsec3_diff_is_local.)"""
    if len(before) != 1 or len(after) != 1:
        return False
    old, new = _nsec3_fields(before[0]), _nsec3_fields(after[0])
    return old is not None and new is not None and _bitmap_types(old[5]) == _bitmap_types(new[5])


def any_opt_out(snap: Snapshot) -> bool:
    """Some NSEC3 of the zone has the opt-out flag (a scan that stops at the first)."""
    return any(_opt_out(_nsec3_rdatas(snap, owner)) for owner in snap.nsec3_owners)


def nsec3_diff_is_local(previous: Snapshot, snapshot: Snapshot, touched: Iterable[bytes]) -> bool:
    """Whether validate_owners() can judge the NSEC3 chain of an IXFR from `previous`.

    It can when the parameters are unchanged and every changed NSEC3 either sits at the
    hash of a name the diff affected (judged against that name) or keeps its type bitmap
    (only its link, flags or signature changed: checked where it stands). An NSEC3
    added, removed or rewritten elsewhere belongs to a name whose types are not at hand,
    and a diff that clears the zone's last opt-out flag needs every insecure delegation
    checked: both take the full pass, as do iterations above the default cap (hashing
    is the cost).
    """
    params = snapshot.nsec3_params
    if params is None or params != previous.nsec3_params:
        return False
    if params.algorithm != 1 or params.iterations > Budget.max_nsec3_iterations:
        return False
    touched = list(touched)
    scope = nsec3_scope(snapshot, touched, params)
    lost_opt_out = False
    for owner in touched:
        hashed = nsec3_label_hash(owner)
        if hashed is None:
            continue
        before, after = _nsec3_rdatas(previous, owner), _nsec3_rdatas(snapshot, owner)
        if before == after:
            continue
        lost_opt_out |= _opt_out(before) and not _opt_out(after)
        if hashed not in scope and not _same_types(before, after):
            return False
    return not lost_opt_out or any_opt_out(snapshot)


def _b32(raw: bytes) -> str:
    return base64.b32hexencode(raw).decode().rstrip("=").lower()


def zonemd_digest(snapshot: Snapshot, algorithm: int) -> bytes:
    """RFC 8976 SIMPLE scheme over the whole version (the apex ZONEMD and its RRSIGs excluded).

    Owners in canonical order; at each owner the RRsets by type number, RRSIG (46)
    in its numeric place with all its RRs sorted by canonical RDATA.
    """
    hasher = hashlib.sha384() if algorithm == 1 else hashlib.sha512()
    origin = snapshot.origin
    for canonical in snapshot.order:
        owner = names.key_from_canonical(canonical)
        node = snapshot.node(owner)
        assert node is not None
        groups: list[tuple[int, bytes]] = []
        sigs: dict[bytes, int] = {}  # canonical RRSIG rdata -> ttl
        for rtype, (ttl, rdatas) in node.items():
            if is_sig_type(rtype):
                if rtype & 0xFFFF == ZONEMD and owner == origin:
                    continue
                for rdata in rdatas:
                    sigs.setdefault(canonical_rdata(RRSIG, rdata), ttl)
            elif not (rtype == ZONEMD and owner == origin):
                groups.append((rtype, rrset_wire(owner, rtype, ttl, rdatas)))
        if sigs:
            wire = b"".join(rr_wire(owner, RRSIG, sigs[r], r) for r in sorted(sigs))
            groups.append((RRSIG, wire))
        for _, wire in sorted(groups):
            hasher.update(wire)
    return hasher.digest()


def validate(snapshot: Snapshot, now: float, **options: object) -> Report:
    """Validate a whole version (see ZoneValidator for the options)."""
    return ZoneValidator(snapshot, now=now, **options).validate()  # type: ignore[arg-type]
