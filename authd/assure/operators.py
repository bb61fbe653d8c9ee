"""Who runs each NS name: grouped by registered domain, by address prefix, and by the labels
of `[[operator]]` in the config. Pure.

The registered domain comes from the Public Suffix List (the `publicsuffixlist` package ships
it, no network): ns1.provider.co.uk -> provider.co.uk. A name the list cannot place (a name
that is itself a public suffix) is its own group. Addresses group by /24 (IPv4) and /48 (IPv6),
the prefixes a single operator usually announces.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from authd.config import Operator

IPV4_PREFIX = 24
IPV6_PREFIX = 48


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # reads the list shipped with the package, once


def registered_domain(name: str) -> str:
    """`ns1.provider.example` -> `provider.example`; a public suffix stays itself."""
    name = name.rstrip(".").lower()
    return _psl().privatesuffix(name) or name


def prefix_of(address: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) holding an address, as text."""
    ip = ipaddress.ip_address(address.split("%")[0])
    bits = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def under(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def label_of(name: str, addresses: Iterable[str], operators: Sequence[Operator]) -> str | None:
    """The first configured operator whose ns names hold `name` or whose prefixes hold one of
    its addresses."""
    ips = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
    for operator in operators:
        if any(under(name, domain) for domain in operator.ns):
            return operator.name
        if any(ip in net for ip in ips for net in operator.prefixes if ip.version == net.version):
            return operator.name
    return None


@dataclass(frozen=True, slots=True)
class NsServer:
    name: str  # lowercase, no trailing dot
    addresses: tuple[str, ...]  # known addresses; () when none could be found
    own: bool  # one of authd's own NS names
    domain: str  # registered domain
    prefixes: tuple[str, ...]
    label: str | None  # from [[operator]]

    @property
    def operator(self) -> str:
        """The group this server is counted in: its label, else its registered domain."""
        return self.label or self.domain


def classify(
    ns_names: Iterable[str],
    addresses: Mapping[str, Sequence[str]],
    own: Iterable[str],
    operators: Sequence[Operator] = (),
) -> list[NsServer]:
    mine = set(own)
    servers = []
    for name in sorted(set(ns_names)):
        known = tuple(sorted(set(addresses.get(name, ()))))
        servers.append(
            NsServer(
                name=name,
                addresses=known,
                own=name in mine,
                domain=registered_domain(name),
                prefixes=tuple(sorted({prefix_of(a) for a in known})),
                label=label_of(name, known, operators),
            )
        )
    return servers


def by_operator(servers: Iterable[NsServer]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for server in servers:
        groups.setdefault(server.operator, []).append(server.name)
    return groups


def by_prefix(servers: Iterable[NsServer]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for server in servers:
        for prefix in server.prefixes:
            groups.setdefault(prefix, []).append(server.name)
    return groups


@dataclass(frozen=True, slots=True)
class Provider:
    """What counts as "the provider": the operators and prefixes of the NS names that are
    not authd's own."""

    operators: frozenset[str]
    prefixes: frozenset[str]

    @classmethod
    def of(cls, servers: Iterable[NsServer]) -> Provider:
        theirs = [s for s in servers if not s.own]
        return cls(
            frozenset(s.operator for s in theirs),
            frozenset(p for s in theirs for p in s.prefixes),
        )

    def holds(self, server: NsServer) -> bool:
        """The provider runs this server: same operator, or an address in its prefixes."""
        return server.operator in self.operators or any(p in self.prefixes for p in server.prefixes)
