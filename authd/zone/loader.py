"""Master files (RFC 1035 section 5) to Snapshots.

dnspython's zonefile.Reader does the parsing ($ORIGIN, $TTL, $INCLUDE,
$GENERATE, every RR type). It is not given a dnspython Zone: a Zone silently
replaces a node's other data when a CNAME is added (dns/node.py), which would
hide exactly the error an operator must see. Instead the Reader feeds a small
collector that writes each record straight into a SnapshotBuilder, remembering
where each owner first appeared so that errors can name the file and line.
Structural rules are then checked on the built snapshot by zone/checks.py.
"""

from __future__ import annotations

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

from authd.zone import names
from authd.zone.checks import Severity, check_structure
from authd.zone.snapshot import Snapshot, SnapshotBuilder, ZoneError

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


def load_zone_file(path: Path, origin: str) -> Snapshot:
    """Read and check a master file; raises ZoneLoadError naming file and line or owner and rule."""
    origin_name = dns.name.from_text(origin)
    builder = SnapshotBuilder(names.key_from_name(origin_name))
    collector = _Collector(origin_name, builder)
    try:
        with open(path, encoding="utf-8") as stream:
            tokenizer = dns.tokenizer.Tokenizer(stream, str(path))
            reader = _Reader(
                tokenizer,
                dns.rdataclass.IN,
                cast(Any, collector),
                allow_include=True,
            )
            # Reader silently skips names outside zone_origin; with the root there,
            # every name reaches the collector, which reports out-of-zone data with
            # its file and line. Relative names still use the real origin
            # (current_origin), and nothing is relativized.
            reader.zone_origin = dns.name.root
            collector.reader = reader
            reader.read()
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


def _located(message: str, owner: bytes, first_seen: dict[bytes, tuple[str, int]]) -> str:
    where = first_seen.get(owner)
    return message if where is None else f"{message} (line {where[1]} of {where[0]})"
