"""Master files (RFC 1035 section 5) to Snapshots.

Two readers produce the same records. The fast one (zone/fastparse.py) reads the
common shapes of records straight into wire form, about 20x faster. Whatever it
is not certain about (a type it does not convert, an unusual spelling, any
error) it hands to dnspython's zonefile.Reader one entry at a time, with the
reader's state (origin, previous owner, TTLs) carried across, so the result and
every error message (file:line) are dnspython's. $UNICODE sends the whole file
to dnspython.

dnspython's Reader is not given a dnspython Zone: a Zone silently replaces a
node's other data when a CNAME is added (dns/node.py), which would hide exactly
the error an operator must see. Records go straight into a SnapshotBuilder,
remembering where each owner first appeared so that errors can name the file
and line. Structural rules are then checked on the built snapshot by
zone/checks.py.
"""

from __future__ import annotations

import gc
import io
import logging
import os
from pathlib import Path
from typing import Any, cast

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.tokenizer
import dns.zonefile

from authd.zone import fastparse, names
from authd.zone.checks import Severity, check_structure
from authd.zone.snapshot import (
    RRSIG,
    Node,
    Snapshot,
    SnapshotBuilder,
    ZoneError,
    build_compact,
    covered_type,
    sig_type,
)

log = logging.getLogger(__name__)


class ZoneLoadError(Exception):
    """A master file that cannot be served; the message names the file and the
    line (syntax) or the owner and the rule (semantics)."""


class _IncludeRelativeTokenizer(dns.tokenizer.Tokenizer):
    """A tokenizer that makes a relative $INCLUDE path relative to the including
    file's directory (as BIND, NSD and Knot do), not to the working directory.

    Reader creates a plain Tokenizer for each included file; `adopt` turns it into
    one of these before anything is read from it (rdata parsing insists on a real
    Tokenizer, so a wrapper object will not do)."""

    _after_include = False

    @classmethod
    def adopt(cls, plain: dns.tokenizer.Tokenizer) -> _IncludeRelativeTokenizer:
        adopted = cls.__new__(cls)
        adopted.__dict__.update(plain.__dict__)
        return adopted

    def get(self, want_leading: bool = False, want_comment: bool = False) -> dns.tokenizer.Token:
        token = super().get(want_leading, want_comment)
        if self._after_include:
            self._after_include = False
            if token.is_identifier() and not os.path.isabs(token.value):
                base = os.path.dirname(str(self.filename))
                token = dns.tokenizer.Token(
                    token.ttype, os.path.join(base, token.value), token.has_escape, token.comment
                )
        elif token.is_identifier() and token.value.upper() == "$INCLUDE":
            self._after_include = True
        return token


class _Reader(dns.zonefile.Reader):
    """A Reader whose tokenizers (the top file's and every included file's) are adopted."""

    _tok: dns.tokenizer.Tokenizer

    @property
    def tok(self) -> dns.tokenizer.Tokenizer:
        return self._tok

    @tok.setter
    def tok(self, value: dns.tokenizer.Tokenizer) -> None:
        if not isinstance(value, _IncludeRelativeTokenizer):
            value = _IncludeRelativeTokenizer.adopt(value)
        self._tok = value


class _Manager:
    """The part of a dnspython TransactionManager that Reader consults."""

    def __init__(self, origin: dns.name.Name) -> None:
        self.origin = origin

    def origin_information(self) -> tuple[dns.name.Name, bool, dns.name.Name]:
        return (self.origin, False, self.origin)


class _Collector:
    """Stands in for the transaction the Reader writes to: records go to a builder."""

    def __init__(self, origin: dns.name.Name, builder: SnapshotBuilder) -> None:
        self.manager = _Manager(origin)
        self.builder = builder
        self.reader: _Reader | None = None
        self.first_seen: dict[bytes, tuple[str, int]] = {}

    def _where(self) -> tuple[str, int]:
        if self.reader is None:
            return ("?", 0)
        tok = self.reader.tok
        # The record's end of line has been read already, except at the end of the file.
        return (str(tok.filename), tok.line_number - (0 if tok.eof else 1))

    def check_put_rdataset(self, check: object) -> None:
        """Reader installs dnspython's CNAME check here; zone/checks.py does it instead."""

    def _set_origin(self, origin: dns.name.Name) -> None:
        """$ORIGIN changes only how names are read; the zone's origin stays."""

    def add_unicode(self, value: str) -> None:
        """$UNICODE needs no bookkeeping here."""

    def add(self, name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata) -> None:
        key = names.key_from_name(name)
        if key not in self.first_seen:
            self.first_seen[key] = self._where()
        if not names.is_subdomain(key, self.builder.origin):
            filename, line = self._where()
            zone = names.to_text(self.builder.origin)
            raise ZoneLoadError(f"{filename}:{line}: {name.to_text()} is outside the zone {zone}")
        wire = rdata.to_wire()
        assert wire is not None
        self.builder.add(key, rdata.rdtype, ttl, wire)


def load_zone_file(path: Path, origin: str, *, fast: bool = True) -> Snapshot:
    """Read and check a master file; raises ZoneLoadError naming file and line or owner and rule.

    fast=False reads with dnspython alone (the reference the fast reader is tested against).
    The cyclic garbage collector is paused meanwhile: reading creates millions of small
    objects and no cycles, and its passes over them cost a third of the load time.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        # Compacted once _load has returned: its reader state (e.g. the line of every
        # owner, for error messages) must be gone too, or the copy fills its arenas.
        return build_compact(lambda: _load(path, origin, fast))
    finally:
        if collecting:
            gc.enable()


def _load(path: Path, origin: str, fast: bool) -> Snapshot:
    origin_name = dns.name.from_text(origin)
    builder = SnapshotBuilder(names.key_from_name(origin_name))
    collector = _Collector(origin_name, builder)
    try:
        try:
            if not fast:
                raise _NeedsDnspython
            reader = _FastReader(collector)
            reader.read_file(str(path))
            log.debug("%s: %d entries read by dnspython", path, reader.handed_over)
        except _NeedsDnspython:
            builder = SnapshotBuilder(names.key_from_name(origin_name))
            collector = _Collector(origin_name, builder)
            _read_with_dnspython(path, collector)
    except OSError as error:
        raise ZoneLoadError(f"{path}: cannot read: {error.strerror or error}") from error
    except dns.zonefile.UnknownOrigin as error:
        raise ZoneLoadError(f"{path}: $ORIGIN must be an absolute name") from error
    except dns.exception.DNSException as error:
        # Reader's SyntaxError text already starts with "file:line:".
        raise ZoneLoadError(str(error)) from error
    except UnicodeDecodeError as error:
        raise ZoneLoadError(f"{path}: not UTF-8 text: {error.reason}") from error
    try:
        snapshot = builder.build()
    except ZoneError as error:
        raise ZoneLoadError(f"{path}: {error}") from error
    problems = check_structure(snapshot)
    fatal = [p for p in problems if p.severity is Severity.REJECT]
    for p in problems:
        if p.severity is Severity.WARN:
            log.warning("%s: %s (%s)", path, p.message, p.rule)
    if fatal:
        details = "; ".join(_located(p.message, p.owner, collector.first_seen) for p in fatal)
        raise ZoneLoadError(f"{path}: {details}")
    return snapshot


def _read_with_dnspython(path: Path, collector: _Collector) -> None:
    with open(path, encoding="utf-8") as stream:
        tokenizer = dns.tokenizer.Tokenizer(stream, str(path))
        reader = _new_reader(tokenizer, collector)
        reader.read()


def _new_reader(tokenizer: dns.tokenizer.Tokenizer, collector: _Collector) -> _Reader:
    reader = _Reader(tokenizer, dns.rdataclass.IN, cast(Any, collector), allow_include=True)
    # Reader silently skips names outside zone_origin; with the root there,
    # every name reaches the collector, which reports out-of-zone data with
    # its file and line. Relative names still use the real origin
    # (current_origin), and nothing is relativized.
    reader.zone_origin = dns.name.root
    collector.reader = reader
    return reader


class _NeedsDnspython(Exception):
    """The file uses something the fast reader cannot follow across entries ($UNICODE)."""


class _FastReader:
    """The fast path: fastparse for the common entries, dnspython's Reader for the rest.

    Its state mirrors dns.zonefile.Reader's (RFC 2308 TTL rules included), so an
    entry handed to dnspython sees exactly what it would have seen in a full read.
    """

    def __init__(self, collector: _Collector) -> None:
        self.collector = collector
        self.builder = collector.builder
        self.zone = collector.builder.origin
        self.origin = collector.manager.origin.to_wire() or b"\x00"  # case kept, for RDATA
        self.last_wire = self.origin
        self.last_ttl = 0
        self.last_ttl_known = False
        self.default_ttl = 0
        self.default_ttl_known = False
        self.default_ttl_from_soa = False
        self.handed_over = 0  # entries read by dnspython

    def read_file(self, filename: str) -> None:
        with open(filename, encoding="utf-8") as stream:
            text = stream.read()
        self._read_lines(text.split("\n"), filename)

    def _read_lines(self, lines: list[str], filename: str) -> None:
        name_wire = fastparse.name_wire
        key_of = fastparse.key_of
        parse_ttl = fastparse.parse_ttl
        converters = fastparse.CONVERTERS
        is_subdomain = names.is_subdomain
        quoted = fastparse.Quoted
        not_in = fastparse.NOT_IN_CLASSES
        first_seen = self.collector.first_seen
        nodes = self.builder.nodes
        node: Node = {}
        added = 0
        zone = self.zone
        soa = fastparse.SOA_TYPE
        node_key = b""
        # The previous owner (key, whether it is in the zone) and the spelling and origin
        # it was read with: consecutive records mostly share an owner.
        last_key = key_of(self.last_wire)
        last_inside = is_subdomain(last_key, zone)
        last_head = ""
        last_origin = b""
        for first, last, blank_owner, tokens, rest in fastparse.iter_entries(lines):
            rtype = -1  # stays -1 when the entry is dnspython's
            if tokens is None:
                pass
            elif not blank_owner and tokens[0][:1] == "$" and not isinstance(tokens[0], quoted):
                if self._directive(tokens, filename):
                    last_head = ""
                    continue
            else:
                # owner [ttl] [class] [ttl] type rdata..., as dns.zonefile.Reader._rr_line
                head = tokens[0]
                pos = 1
                owner = self.last_wire
                owner_key = last_key
                inside = last_inside
                if blank_owner:
                    pos = 0
                elif head != last_head or self.origin != last_origin:
                    found = name_wire(head, self.origin)
                    if found is None:
                        pos = len(tokens)
                    else:
                        owner = found
                        owner_key = key_of(owner)
                        inside = is_subdomain(owner_key, zone)
                count = len(tokens)
                ttl: int | None = None
                explicit = False
                word = tokens[pos] if pos < count else ""
                if word[:1].isdigit() and not isinstance(word, quoted):
                    ttl = parse_ttl(word)
                    explicit = True
                    pos += 1
                    if ttl is None:
                        pos = count
                if pos < count and not isinstance(tokens[pos], quoted):
                    word = tokens[pos].upper()
                    if word == "IN":
                        pos += 1
                    elif word in not_in or word.startswith("CLASS"):
                        pos = count  # another class: dnspython's error
                if not explicit and pos < count:
                    word = tokens[pos]
                    if word[:1].isdigit() and not isinstance(word, quoted):
                        ttl = parse_ttl(word)
                        explicit = True
                        pos += 1
                        if ttl is None:
                            pos = count
                if pos < count and inside and not isinstance(tokens[pos], quoted):
                    word = tokens[pos]
                    found_type = converters.get(word) or converters.get(word.upper())
                    rdata = tokens[pos + 1 :]
                    if found_type is not None and (not rdata or rdata[0] != "\\#"):
                        converted = found_type[1](rdata, self.origin)
                        if converted is not None:
                            rtype = found_type[0]
                            wire = converted
                            if ttl is None:
                                ttl = self._implicit_ttl()
                            if rtype == soa and not self.default_ttl_known:
                                self.default_ttl = fastparse.soa_minimum(wire)
                                self.default_ttl_known = True
                                self.default_ttl_from_soa = True
                                if ttl is None:
                                    ttl = self._implicit_ttl()
                            if ttl is None:
                                rtype = -1  # "Missing default TTL value"
                if rtype >= 0 and ttl is not None:
                    if explicit:
                        self.last_ttl = ttl
                        self.last_ttl_known = True
                    self.last_wire = owner
                    last_key = owner_key
                    last_inside = inside
                    if not blank_owner:
                        last_head = head
                        last_origin = self.origin
                    if owner_key is not node_key:
                        if owner_key not in first_seen:
                            first_seen[owner_key] = (filename, last)
                        found_node = nodes.get(owner_key)
                        if found_node is None:
                            found_node = nodes[owner_key] = {}
                        node = found_node
                        node_key = owner_key
                    # SnapshotBuilder.add without its per-record checks (done per owner above):
                    # RRsets are sets, and their TTLs must agree, the lowest wins (RFC 2181 5.2).
                    slot = sig_type(covered_type(wire)) if rtype == RRSIG else rtype
                    entry = node.get(slot)
                    if entry is None:
                        node[slot] = (ttl, (wire,))
                        added += 1
                    elif wire not in entry[1]:
                        node[slot] = (min(entry[0], ttl), (*entry[1], wire))
                        added += 1
                    continue
            self.builder.record_count += added
            added = 0
            self._with_dnspython(lines, first, last, filename)
            node_key = b""  # dnspython may have added to any node, or made it new
            if rest:
                return
            last_key = key_of(self.last_wire)
            last_inside = is_subdomain(last_key, zone)
            last_head = ""
        self.builder.record_count += added

    def _implicit_ttl(self) -> int | None:
        """dns.zonefile.Reader._implicit_ttl with rfc2308_ttl=True."""
        if self.last_ttl_known and (not self.default_ttl_known or self.default_ttl_from_soa):
            return self.last_ttl
        if self.default_ttl_known:
            return self.default_ttl
        return None

    def _directive(self, tokens: list[str], filename: str) -> bool:
        """Apply a simple $TTL, $ORIGIN or $INCLUDE; False leaves the entry to dnspython."""
        word = tokens[0].upper()
        if word == "$UNICODE":
            raise _NeedsDnspython
        if word == "$TTL" and len(tokens) == 2:
            ttl = fastparse.parse_ttl(tokens[1])
            if ttl is not None:
                self.default_ttl = ttl
                self.default_ttl_known = True
                self.default_ttl_from_soa = False
                return True
        elif word == "$ORIGIN" and len(tokens) == 2:
            new_origin = fastparse.name_wire(tokens[1], self.origin)
            if new_origin is not None:
                self.origin = new_origin
                return True
        elif word == "$INCLUDE" and len(tokens) in (2, 3):
            target = tokens[1]
            origin: bytes | None = self.origin
            if len(tokens) == 3:
                origin = fastparse.name_wire(tokens[2], self.origin)
            if origin is not None and not isinstance(target, fastparse.Quoted):
                if not os.path.isabs(target):
                    target = os.path.join(os.path.dirname(filename), target)
                self._include(target, origin)
                return True
        return False

    def _include(self, filename: str, origin: bytes) -> None:
        """Read an included file; the includer's origin, owner and TTLs come back after."""
        saved = (
            self.origin,
            self.last_wire,
            self.last_ttl,
            self.last_ttl_known,
            self.default_ttl,
            self.default_ttl_known,
            self.default_ttl_from_soa,
        )
        self.origin = origin
        self.read_file(filename)
        (
            self.origin,
            self.last_wire,
            self.last_ttl,
            self.last_ttl_known,
            self.default_ttl,
            self.default_ttl_known,
            self.default_ttl_from_soa,
        ) = saved

    def _with_dnspython(self, lines: list[str], first: int, last: int, filename: str) -> None:
        """Read lines first..last with dnspython's Reader, in the state the fast path left."""
        self.handed_over += 1
        text = "\n".join(lines[first - 1 : last])
        if last < len(lines):
            text += "\n"
        tokenizer = _IncludeRelativeTokenizer(io.StringIO(text), filename)
        tokenizer.line_number = first
        reader = _new_reader(tokenizer, self.collector)
        reader.current_origin = dns.name.from_wire(self.origin, 0)[0]
        reader.last_name = dns.name.from_wire(self.last_wire, 0)[0]
        reader.last_ttl = self.last_ttl
        reader.last_ttl_known = self.last_ttl_known
        reader.default_ttl = self.default_ttl
        reader.default_ttl_known = self.default_ttl_known
        reader.default_ttl_from_soa = self.default_ttl_from_soa
        reader.read()
        assert reader.current_origin is not None and reader.last_name is not None
        self.origin = reader.current_origin.to_wire() or b"\x00"
        self.last_wire = reader.last_name.to_wire() or b"\x00"
        self.last_ttl = reader.last_ttl
        self.last_ttl_known = reader.last_ttl_known
        self.default_ttl = reader.default_ttl
        self.default_ttl_known = reader.default_ttl_known
        self.default_ttl_from_soa = reader.default_ttl_from_soa


def _located(message: str, owner: bytes, first_seen: dict[bytes, tuple[str, int]]) -> str:
    where = first_seen.get(owner)
    return message if where is None else f"{message} (line {where[1]} of {where[0]})"
