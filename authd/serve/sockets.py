"""Listening sockets for the transports: one place that knows the socket options we rely on."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import sys

# Large receive buffers absorb bursts (dnsperf with ~100-250 queries outstanding overflows
# the default); the kernel caps the value at net.core.rmem_max, which is fine.
UDP_BUFFER_BYTES = 4 * 1024 * 1024
TCP_BACKLOG = 1024

# Linux values (ip(7), ipv6(7)); Python 3.11 exports only the IPv6 one. The kernel answers
# with IP_PKTINFO / IPV6_PKTINFO control messages, which sendmsg takes back as they are.
IP_PKTINFO = int(getattr(socket, "IP_PKTINFO", 8))
IPV6_RECVPKTINFO = int(getattr(socket, "IPV6_RECVPKTINFO", 49))


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _base_socket(host: str, kind: socket.SocketKind, reuse_port: bool) -> socket.socket:
    family = family_of(host)
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Every worker binds its own socket; the kernel spreads flows across them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # One socket per configured address: "::" must not swallow IPv4 too.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def is_wildcard(host: str) -> bool:
    """True for an unspecified address ("0.0.0.0", "::"): the kernel picks the local address."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_unspecified
    except ValueError:
        return False


def enable_pktinfo(sock: socket.socket) -> bool:
    """Ask the kernel for each datagram's destination address (IP_PKTINFO / IPV6_RECVPKTINFO)
    when sock is bound to a wildcard address; True when it is on.

    On a wildcard socket the kernel would pick a reply's source address by route, which on a
    multi-homed or anycast host is often not the address the query was sent to (and resolvers
    drop such answers). With the destination in hand the reply is sent from it, as NSD and Knot
    do. A socket bound to one address needs nothing: its replies always leave from it.
    """
    if not sys.platform.startswith("linux") or not is_wildcard(str(sock.getsockname()[0])):
        return False
    _request_pktinfo(sock)
    return True


def _request_pktinfo(sock: socket.socket) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket on host:port (with packet info on a wildcard address)."""
    sock = _base_socket(host, socket.SOCK_DGRAM, reuse_port)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # A smaller buffer still works: then the kernel default applies.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)
        if is_wildcard(host) and sys.platform.startswith("linux"):
            # Before bind, so no datagram is ever queued without its destination address.
            _request_pktinfo(sock)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound, listening, non-blocking TCP socket on host:port."""
    sock = _base_socket(host, socket.SOCK_STREAM, reuse_port)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(TCP_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_tcp_pair(
    host: str, port: int, reuse_port: bool = False, attempts: int = 8
) -> tuple[socket.socket, socket.socket]:
    """A bound UDP socket and a listening TCP socket on the same port of host.

    Port 0: the kernel picks a free UDP port; when TCP cannot have that port too, try again
    with another one (a few times) rather than fail on a coincidence.
    """
    for attempt in range(attempts):
        udp = udp_socket(host, port, reuse_port)
        try:
            return udp, tcp_socket(host, int(udp.getsockname()[1]), reuse_port)
        except OSError as exc:
            udp.close()
            if port != 0 or exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
        except BaseException:
            udp.close()
            raise
    raise AssertionError("unreachable")


def client_address(client: object) -> tuple[str, int]:
    """(host, port) of a client as a transport passed it: an address tuple or raw sockaddr.

    The batched UDP path hands over the raw `struct sockaddr_in/in6` bytes because decoding
    them for every datagram would cost ~10% of a cached answer; decode here when needed.
    """
    if isinstance(client, tuple):
        return str(client[0]), int(client[1])
    if isinstance(client, bytes | bytearray) and len(client) >= 8:
        family = int.from_bytes(client[0:2], sys.byteorder)
        port = int.from_bytes(client[2:4], "big")
        if family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, bytes(client[4:8])), port
        if family == socket.AF_INET6 and len(client) >= 24:
            return socket.inet_ntop(socket.AF_INET6, bytes(client[8:24])), port
    raise ValueError(f"not a client address: {client!r}")
