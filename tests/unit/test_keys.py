"""authd.keys: BIND-style TSIG key files, key generation, trust-anchor files."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import dns.dnssec
import dns.dnssectypes
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authd.keys import (
    TSIG_ALGORITHMS,
    KeyFileError,
    TrustAnchorError,
    generate_tsig_key,
    keyring,
    load_key_file,
    load_trust_anchors,
    parse_key_text,
    parse_trust_anchors,
)
from authd.zone.names import key_from_text
from tests.support.system import require_binary

SECRET = base64.b64encode(bytes(range(32))).decode()


def test_parses_keys_with_every_comment_style() -> None:
    text = f"""# hash comment
// slash comment
/* block
   comment */ key "Xfr-Key." {{
    algorithm HMAC-SHA256;   // trailing comment
    secret "{SECRET}";       # another
}};
key second.example {{ algorithm hmac-sha512; secret "{SECRET}"; }};
"""
    keys, warnings = parse_key_text(text, "k.key")
    assert warnings == []
    assert [(k.name, k.algorithm, k.secret) for k in keys] == [
        ("xfr-key.", "hmac-sha256", bytes(range(32))),
        ("second.example.", "hmac-sha512", bytes(range(32))),
    ]
    assert "secret=<hidden>" in repr(keys[0]) and SECRET not in repr(keys[0])


def test_md5_is_accepted_with_a_warning() -> None:
    keys, warnings = parse_key_text(f'key old {{ algorithm hmac-md5; secret "{SECRET}"; }};', "k")
    assert keys[0].algorithm == "hmac-md5"
    [warning] = warnings
    assert warning.startswith("k:1:") and "hmac-md5" in warning and "deprecated" in warning


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("key a { algorithm hmac-sha256; };", ':1: key "a." has no secret'),
        (f'key a {{ secret "{SECRET}"; }};', ':1: key "a." has no algorithm'),
        (
            f'key a {{\n algorithm rot13; secret "{SECRET}"; }};',
            ":2: unsupported algorithm 'rot13'",
        ),
        (
            f'key a {{ algorithm hmac-sha256-128; secret "{SECRET}"; }};',
            "unsupported algorithm 'hmac-sha256-128'",
        ),
        ('key a { algorithm hmac-sha1;\n\n secret "!!not base64"; };', ':3: secret of key "a."'),
        ('key a { algorithm hmac-sha1; secret ""; };', "is not valid base64"),
        (f'key a {{ algorithm hmac-sha1; secret "{SECRET}" }};', ":1: expected ';', found '}'"),
        (f'key a {{ algorithm hmac-sha1; secret "{SECRET}"; }}', "unexpected end of file"),
        ('options { directory "/x"; };', ":1: expected 'key', found 'options'"),
        ('key a { algorithm hmac-sha1; owner "me"; };', "unknown option 'owner'"),
        ("/* never closed\nkey a {};", ":1: comment '/*' is never closed"),
        ('key "a {};', ":1: string is never closed"),
        ('key "a..b" { };', "bad key name 'a..b'"),
        (
            f'key a {{ algorithm hmac-sha1; secret "{SECRET}"; }};\n'
            f'key A. {{ algorithm hmac-sha1; secret "{SECRET}"; }};',
            ':2: key "a." is defined twice (first on line 1)',
        ),
    ],
)
def test_key_file_errors_name_line_and_reason(text: str, reason: str) -> None:
    with pytest.raises(KeyFileError) as info:
        parse_key_text(text, "bad.key")
    assert str(info.value).startswith("bad.key:")
    assert reason in str(info.value)


def test_load_key_file_warns_when_others_can_read_it(tmp_path: Path) -> None:
    path = tmp_path / "xfr.key"
    path.write_text(generate_tsig_key("xfr"))
    path.chmod(0o600)
    assert load_key_file(path).warnings == ()
    path.chmod(0o640)
    [warning] = load_key_file(path).warnings
    assert str(path) in warning and "mode 0640" in warning and "chmod 600" in warning
    path.chmod(0o604)
    assert "readable by group or others" in load_key_file(path).warnings[0]


def test_load_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        load_key_file(tmp_path / "absent.key")
    (tmp_path / "binary.key").write_bytes(b"\xff\xfe")
    with pytest.raises(KeyFileError, match="cannot read key file"):
        load_key_file(tmp_path / "binary.key")


@pytest.mark.parametrize("algorithm", sorted(set(TSIG_ALGORITHMS) - {"hmac-md5"}))
def test_generated_keys_parse_back_with_a_full_length_random_secret(algorithm: str) -> None:
    first, _ = parse_key_text(generate_tsig_key("xfr.example", algorithm))
    second, _ = parse_key_text(generate_tsig_key("xfr.example", algorithm))
    assert first[0].name == "xfr.example." and first[0].algorithm == algorithm
    assert len(first[0].secret) == TSIG_ALGORITHMS[algorithm][1]
    assert first[0].secret != second[0].secret


def test_generate_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="unsupported algorithm"):
        generate_tsig_key("x", "hmac-md5")
    with pytest.raises(ValueError, match="unsupported algorithm"):
        generate_tsig_key("x", "sha256")
    with pytest.raises(ValueError, match="bad key name"):
        generate_tsig_key("a..b")
    for name in ('a"b', "bad key name!!", "a\\.b", "é"):
        with pytest.raises(ValueError, match=r"bad key name.*letters, digits"):
            generate_tsig_key(name)


def test_keyring_signs_and_verifies_with_dnspython() -> None:
    keys, _ = parse_key_text(generate_tsig_key("xfr-key", "hmac-sha384"))
    ring = keyring(keys)
    name = dns.name.from_text("xfr-key")
    assert ring[name].algorithm == dns.tsig.HMAC_SHA384
    query = dns.message.make_query("example.com", "SOA")
    query.use_tsig(ring, keyname=name)
    parsed = dns.message.from_wire(query.to_wire(), keyring=ring)
    assert parsed.had_tsig
    other, _ = parse_key_text(generate_tsig_key("xfr-key", "hmac-sha384"))
    with pytest.raises(dns.tsig.BadSignature):
        dns.message.from_wire(query.to_wire(), keyring=keyring(other))


def test_reads_what_tsig_keygen_writes() -> None:
    tsig_keygen = require_binary("tsig-keygen")
    for algorithm in ("hmac-sha256", "hmac-sha512", "hmac-sha1"):
        text = subprocess.run(
            [tsig_keygen, "-a", algorithm, "transfer.example"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        [key], warnings = parse_key_text(text, "tsig-keygen")
        assert warnings == []
        assert (key.name, key.algorithm) == ("transfer.example.", algorithm)
        assert base64.b64encode(key.secret).decode() in text


def test_bind_accepts_the_key_files_we_generate(tmp_path: Path) -> None:
    checkconf = require_binary("named-checkconf")
    path = tmp_path / "keys.conf"
    path.write_text(
        generate_tsig_key("a.example", "hmac-sha256") + generate_tsig_key("b", "hmac-sha1")
    )
    result = subprocess.run(
        [checkconf, str(path)], capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- trust anchors --------------------------------------------------------------------------------


def _dnskey_and_ds() -> tuple[dns.rdata.Rdata, dns.rdata.Rdata]:
    private = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(private.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256)
    ds = dns.dnssec.make_ds("example.com.", dnskey, "SHA256")
    return dnskey, ds


def test_trust_anchor_file_in_master_file_syntax() -> None:
    dnskey, ds = _dnskey_and_ds()
    key_text = dnskey.to_text()
    flags_proto_alg, _, key_b64 = key_text.partition(" 3 13 ")
    # Every optional field left out somewhere, a DNSKEY split over lines in parentheses.
    text = f"""; parent's DS, then the KSK itself
example.com. 3600 IN DS {ds.to_text()}
    IN DNSKEY {flags_proto_alg} 3 13 ( {key_b64[:20]}
              {key_b64[20:]} ) ; comment

DS {ds.to_text()}
@ 1h DS {ds.to_text()}
"""
    anchors = parse_trust_anchors(text, "ta", "example.com")
    apex = key_from_text("example.com")
    assert [(a.rdtype, a.owner) for a in anchors] == [
        (dns.rdatatype.DS, apex),
        (dns.rdatatype.DNSKEY, apex),
        (dns.rdatatype.DS, apex),
        (dns.rdatatype.DS, apex),
    ]
    assert anchors[0].rdata == ds.to_wire()
    assert anchors[1].rdata == dnskey.to_wire()
    # The DS really is the digest of the DNSKEY read back from the file.
    parsed_key = dns.rdata.from_wire(
        dns.rdataclass.IN, dns.rdatatype.DNSKEY, anchors[1].rdata, 0, len(anchors[1].rdata)
    )
    assert dns.dnssec.make_ds("example.com.", parsed_key, "SHA256").to_wire() == anchors[0].rdata


def test_trust_anchor_owner_comes_from_the_file() -> None:
    _, ds = _dnskey_and_ds()
    [anchor] = parse_trust_anchors(f"Sub.Example.COM. DS {ds.to_text()}\n", "ta", "example.com")
    assert anchor.owner == key_from_text("sub.example.com")
    [anchor] = parse_trust_anchors(f"sub DS {ds.to_text()}\n", "ta", "example.com")
    assert anchor.owner == key_from_text("sub.example.com")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("example.com. IN A 192.0.2.1", "ta:2: A record in a trust anchor file"),
        ("example.com. IN DS 1 13 2 ABCD", "ta:2: digest length inconsistent"),
        ("example.com. IN DS 1 13", "ta:2:"),
        ("example.com. IN BOGUS 1", "ta:2: unknown record type 'BOGUS'"),
        ("example.com. CH DS 1 13 2 AB", "ta:2: class CH is not IN"),
        ("example.com. 300 IN", "ta:2: record type missing"),
        ("; only a comment", "ta: no DS or DNSKEY record found"),
        ("example.com. IN DNSKEY 257 3 13 !!!", "ta:2:"),
    ],
)
def test_trust_anchor_errors(text: str, reason: str) -> None:
    with pytest.raises(TrustAnchorError) as info:
        parse_trust_anchors("; header\n" + text + "\n", "ta", "example.com")
    assert reason in str(info.value)


def test_trust_anchor_without_owner_and_without_zone() -> None:
    with pytest.raises(TrustAnchorError, match="ta:1: no owner name"):
        parse_trust_anchors("DS 1 13 2 " + "AB" * 32 + "\n", "ta")


def test_load_trust_anchors_reads_a_file(tmp_path: Path) -> None:
    _, ds = _dnskey_and_ds()
    path = tmp_path / "example.com.ds"
    path.write_text(f"example.com. DS {ds.to_text()}\n")
    [anchor] = load_trust_anchors(path)
    assert anchor.rdata == ds.to_wire()
    with pytest.raises(TrustAnchorError, match="cannot read trust anchor file"):
        load_trust_anchors(tmp_path / "absent.ds")
