"""TSIG key files (BIND syntax) and DNSSEC trust anchors (DS/DNSKEY lines).

A key file is what `tsig-keygen` writes, several keys per file allowed:

    key "xfr-key" {
        algorithm hmac-sha256;
        secret "base64...";
    };

with `#`, `//` and `/* */` comments. Problems that do not stop a key from working (hmac-md5, a
file other users can read) come back as warning strings, for the caller to log.

A trust-anchor file holds DS and/or DNSKEY records in master-file syntax; owner, TTL and class
are optional as in a zone file (a line starting with blank space reuses the previous owner, and
the first owner defaults to the zone's name).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.tsig
import dns.ttl

from authd.zone.names import key_from_name

# Algorithm name as written in key files -> dnspython's algorithm name, and the HMAC output
# size in bytes, which is also the secret length we generate (RFC 8945 6: no shorter).
TSIG_ALGORITHMS: dict[str, tuple[dns.name.Name, int]] = {
    "hmac-md5": (dns.tsig.HMAC_MD5, 16),
    "hmac-sha1": (dns.tsig.HMAC_SHA1, 20),
    "hmac-sha224": (dns.tsig.HMAC_SHA224, 28),
    "hmac-sha256": (dns.tsig.HMAC_SHA256, 32),
    "hmac-sha384": (dns.tsig.HMAC_SHA384, 48),
    "hmac-sha512": (dns.tsig.HMAC_SHA512, 64),
}
DEPRECATED_ALGORITHMS = frozenset({"hmac-md5"})
DEFAULT_ALGORITHM = "hmac-sha256"


@dataclass(frozen=True, slots=True)
class TsigKey:
    """One shared secret. `name` is the key's DNS name in lowercase text form, with the dot."""

    name: str
    algorithm: str
    secret: bytes

    @property
    def dns_name(self) -> dns.name.Name:
        return dns.name.from_text(self.name)

    def to_dnspython(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.dns_name, self.secret, TSIG_ALGORITHMS[self.algorithm][0])

    def __repr__(self) -> str:  # never print the secret by accident
        return f"TsigKey(name={self.name!r}, algorithm={self.algorithm!r}, secret=<hidden>)"


class KeyFileError(Exception):
    """A key file that cannot be used: the message names the file, the line and the reason."""


@dataclass(frozen=True, slots=True)
class KeyFile:
    path: Path
    keys: tuple[TsigKey, ...]
    warnings: tuple[str, ...]


def keyring(keys: Iterable[TsigKey]) -> dict[dns.name.Name, dns.tsig.Key]:
    """The keyring dnspython's query, xfr and message functions take."""
    return {key.dns_name: key.to_dnspython() for key in keys}


def normalize_key_name(text: str) -> str:
    """Key names compare as DNS names: case-insensitive, trailing dot optional."""
    return dns.name.from_text(text).to_text().lower()


# --- key file syntax ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>[ \t\r\f\v]+)
    | (?P<newline>\n)
    | (?P<comment>(?:\#|//)[^\n]*)
    | (?P<block>/\*.*?\*/)
    | (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<punct>[{};])
    | (?P<word>[^\s{};"#/]+(?:/(?![/*])[^\s{};"#/]*)*)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "string", "word", "punct"
    text: str
    line: int


def _tokenize(text: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    line = 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            snippet = text[pos : pos + 20].split("\n")[0]
            if text.startswith("/*", pos):
                raise KeyFileError(f"{source}:{line}: comment '/*' is never closed")
            if text.startswith('"', pos):
                raise KeyFileError(f"{source}:{line}: string is never closed: {snippet}")
            raise KeyFileError(f"{source}:{line}: unexpected text: {snippet!r}")
        kind = match.lastgroup or ""
        value = match.group()
        if kind == "string":
            tokens.append(_Token("string", value[1:-1].replace('\\"', '"'), line))
        elif kind in ("word", "punct"):
            tokens.append(_Token(kind, value, line))
        line += value.count("\n")
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token], source: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.source = source

    def error(self, line: int, reason: str) -> KeyFileError:
        return KeyFileError(f"{self.source}:{line}: {reason}")

    def last_line(self) -> int:
        return self.tokens[-1].line if self.tokens else 1

    def next(self, what: str) -> _Token:
        if self.pos >= len(self.tokens):
            raise self.error(self.last_line(), f"unexpected end of file, expected {what}")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, punct: str) -> None:
        token = self.next(f"'{punct}'")
        if token.kind != "punct" or token.text != punct:
            raise self.error(token.line, f"expected '{punct}', found '{token.text}'")

    def value(self, what: str) -> _Token:
        token = self.next(what)
        if token.kind == "punct":
            raise self.error(token.line, f"expected {what}, found '{token.text}'")
        return token

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)


def parse_key_text(text: str, source: str = "<string>") -> tuple[list[TsigKey], list[str]]:
    """Parse key statements; returns (keys, warnings) or raises KeyFileError."""
    parser = _Parser(_tokenize(text, source), source)
    keys: list[TsigKey] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    while not parser.at_end():
        start = parser.next("'key'")
        if start.kind != "word" or start.text.lower() != "key":
            raise parser.error(start.line, f"expected 'key', found '{start.text}'")
        key, warning = _parse_key_statement(parser, start.line)
        if key.name in seen:
            raise parser.error(
                start.line, f'key "{key.name}" is defined twice (first on line {seen[key.name]})'
            )
        seen[key.name] = start.line
        keys.append(key)
        if warning:
            warnings.append(warning)
    return keys, warnings


def _parse_key_statement(parser: _Parser, line: int) -> tuple[TsigKey, str | None]:
    name_token = parser.value("a key name")
    try:
        name = normalize_key_name(name_token.text)
    except dns.exception.DNSException as exc:
        raise parser.error(name_token.line, f"bad key name '{name_token.text}': {exc}") from None
    parser.expect("{")
    algorithm: str | None = None
    secret: bytes | None = None
    while True:
        token = parser.next("'algorithm', 'secret' or '}'")
        if token.kind == "punct" and token.text == "}":
            break
        option = token.text.lower()
        if token.kind != "word" or option not in ("algorithm", "secret"):
            raise parser.error(
                token.line,
                f"unknown option '{token.text}' in key \"{name}\" (expected "
                "'algorithm' or 'secret')",
            )
        value = parser.value(f"a value for '{option}'")
        parser.expect(";")
        if option == "algorithm":
            algorithm = value.text.lower().rstrip(".")
            if algorithm not in TSIG_ALGORITHMS:
                supported = ", ".join(sorted(TSIG_ALGORITHMS))
                raise parser.error(
                    value.line, f"unsupported algorithm '{value.text}' (supported: {supported})"
                )
        else:
            secret = _decode_secret(value.text)
            if secret is None:
                raise parser.error(value.line, f'secret of key "{name}" is not valid base64')
    parser.expect(";")
    if algorithm is None:
        raise parser.error(line, f'key "{name}" has no algorithm')
    if secret is None:
        raise parser.error(line, f'key "{name}" has no secret')
    warning = None
    if algorithm in DEPRECATED_ALGORITHMS:
        warning = (
            f'{parser.source}:{line}: key "{name}" uses {algorithm}, which is deprecated '
            "(RFC 8945 6); move to hmac-sha256"
        )
    return TsigKey(name, algorithm, secret), warning


def _decode_secret(text: str) -> bytes | None:
    compact = "".join(text.split())
    try:
        secret = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return secret or None


def load_key_file(path: Path) -> KeyFile:
    """Read and parse one key file; warns when group or others may read it."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc}") from None
    keys, warnings = parse_key_text(text, str(path))
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.insert(
            0,
            f"{path}: key file is readable by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}",
        )
    return KeyFile(path, tuple(keys), tuple(warnings))


# A key name every peer reads the same way: host-name labels (RFC 952/1123: letters, digits,
# hyphen) plus underscore, as BIND's check-names accepts for owner names. Spaces, quotes and
# punctuation are valid in a DNS name only escaped, and BIND, Knot and NSD configs then
# disagree on the spelling, so a shared key would never match.
_KEY_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def checked_key_name(name: str) -> dns.name.Name:
    """The key name as a DNS name, or ValueError with a one-line reason."""
    text = name[:-1] if name.endswith(".") and name != "." else name
    if not text or text == ".":
        raise ValueError(f"bad key name '{name}': it must not be empty or the root")
    for label in text.split("."):
        if not _KEY_LABEL.fullmatch(label):
            raise ValueError(
                f"bad key name '{name}': label '{label}' must be 1-63 letters, digits, '-' or '_' "
                "(not starting or ending with '-'), e.g. xfr-key or xfr.example.com"
            )
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise ValueError(f"bad key name '{name}': {exc}") from None


def generate_tsig_key(name: str, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """A new key file in BIND syntax with a random secret as long as the HMAC output."""
    algorithm = algorithm.lower()
    if algorithm not in TSIG_ALGORITHMS or algorithm in DEPRECATED_ALGORITHMS:
        allowed = ", ".join(sorted(set(TSIG_ALGORITHMS) - DEPRECATED_ALGORITHMS))
        raise ValueError(f"unsupported algorithm '{algorithm}' (use one of: {allowed})")
    dns_name = checked_key_name(name)
    secret = base64.b64encode(secrets.token_bytes(TSIG_ALGORITHMS[algorithm][1])).decode()
    text_name = dns_name.to_text(omit_final_dot=True) or "."
    return f'key "{text_name}" {{\n\talgorithm {algorithm};\n\tsecret "{secret}";\n}};\n'


# --- trust anchors --------------------------------------------------------------------------------


class TrustAnchor(NamedTuple):
    rdtype: int  # dns.rdatatype.DS or dns.rdatatype.DNSKEY
    rdata: bytes  # uncompressed wire form
    owner: bytes  # name key (authd.zone.names)


class TrustAnchorError(Exception):
    """A trust-anchor file that cannot be used: the message names file, line and reason."""


_ANCHOR_TYPES = (dns.rdatatype.DS, dns.rdatatype.DNSKEY)


def parse_trust_anchors(
    text: str, source: str = "<string>", default_owner: str | None = None
) -> list[TrustAnchor]:
    """DS/DNSKEY records in master-file syntax -> trust anchors; raises TrustAnchorError."""
    origin = dns.name.from_text(default_owner) if default_owner else dns.name.root
    tok = dns.tokenizer.Tokenizer(text, source)
    anchors: list[TrustAnchor] = []
    owner: dns.name.Name | None = dns.name.from_text(default_owner) if default_owner else None
    line = 1  # where the record being read starts: errors point there, not past its end
    try:
        while True:
            token = tok.get(want_leading=True)
            if token.is_eof():
                break
            if token.is_eol():
                continue
            line = tok.line_number
            if token.is_whitespace():
                token = tok.get()
                if token.is_eol_or_eof():
                    continue
            elif not _starts_rdata(token.value):
                owner = origin if token.value == "@" else dns.name.from_text(token.value, origin)
                token = tok.get()
            if owner is None:
                raise TrustAnchorError(
                    f"{source}:{line}: no owner name on the first record and no zone to default to"
                )
            rdtype = _read_ttl_class_type(tok, token, source, line)
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, tok, origin, False)
            anchors.append(TrustAnchor(rdtype, rdata.to_digestable(), key_from_name(owner)))
    except dns.exception.DNSException as exc:
        raise TrustAnchorError(f"{source}:{line}: {exc}") from None
    if not anchors:
        raise TrustAnchorError(f"{source}: no DS or DNSKEY record found")
    return anchors


def _starts_rdata(word: str) -> bool:
    """True if a line's first word is a TTL, class or type, i.e. the owner was left out."""
    return _is_ttl(word) or word.upper() in ("IN", "DS", "DNSKEY")


def _is_ttl(word: str) -> bool:
    try:
        dns.ttl.from_text(word)
    except dns.exception.DNSException:
        return False
    return True


def _read_ttl_class_type(
    tok: dns.tokenizer.Tokenizer, token: dns.tokenizer.Token, source: str, line: int
) -> dns.rdatatype.RdataType:
    seen_ttl = seen_class = False
    while True:
        if token.is_eol_or_eof():
            raise TrustAnchorError(f"{source}:{line}: record type missing")
        word = token.value.upper()
        if not seen_ttl and _is_ttl(word):
            seen_ttl = True
        elif word in ("IN", "CH", "HS") and not seen_class:
            if word != "IN":
                raise TrustAnchorError(f"{source}:{line}: class {word} is not IN")
            seen_class = True
        else:
            break
        token = tok.get()
    try:
        rdtype = dns.rdatatype.from_text(token.value)
    except dns.exception.DNSException:
        raise TrustAnchorError(f"{source}:{line}: unknown record type '{token.value}'") from None
    if rdtype not in _ANCHOR_TYPES:
        raise TrustAnchorError(
            f"{source}:{line}: {dns.rdatatype.to_text(rdtype)} record in a trust anchor file "
            "(only DS and DNSKEY are allowed)"
        )
    return rdtype


def load_trust_anchors(path: Path, default_owner: str | None = None) -> list[TrustAnchor]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustAnchorError(f"{path}: cannot read trust anchor file: {exc}") from None
    return parse_trust_anchors(text, str(path), default_owner)
