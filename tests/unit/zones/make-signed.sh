#!/bin/sh
# Regenerates the pre-signed test zones from answer.zone: NSEC and NSEC3 with
# ldns-signzone; NSEC3 opt-out with BIND's dnssec-signzone, which (unlike
# ldns-signzone -p) leaves insecure delegations without NSEC3 records, so the
# closest-provable-encloser proofs get exercised.
# Run once when answer.zone changes; the outputs are committed so the unit tests
# need no signer. Signatures are valid until 2040 so the tests do not rot.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
key=$(cd "$tmp" && ldns-keygen -a ECDSAP256SHA256 -k example.)
inc=20260101000000
exp=20400101000000
ldns-signzone -i $inc -e $exp -f answer.nsec.zone answer.zone "$tmp/$key"
ldns-signzone -i $inc -e $exp -n -t 5 -s cafe01 -f answer.nsec3.zone answer.zone "$tmp/$key"
(cd "$tmp" && dnssec-keygen -q -a ECDSAP256SHA256 -f KSK example. >/dev/null)
dnssec-signzone -q -z -S -K "$tmp" -3 - -A -H 0 -s $inc -e $exp -o example. \
    -d "$tmp" -f answer.nsec3-optout.zone answer.zone
