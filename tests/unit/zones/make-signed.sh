#!/bin/sh
# Regenerates the pre-signed test zones from answer.zone with ldns-signzone.
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
ldns-signzone -i $inc -e $exp -n -t 0 -p -f answer.nsec3-optout.zone answer.zone "$tmp/$key"
