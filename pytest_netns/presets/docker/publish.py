"""Published ports: the host address a port is bound to and the host port reserved, as docker-proxy holds it."""

from __future__ import annotations

import errno
import ipaddress
import socket

from ..._kernel.handle import handle_of
from ...namespace import Namespace

IPv4 = ipaddress.IPv4Address
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def host_address(host_ip: object, outside: IPv4) -> IPv4 | None:
    """``publish``'s ``host_ip``: None for every address, else the host's ``outside`` address or a loopback one."""
    if host_ip is None:
        return None
    try:
        address = ipaddress.IPv4Address(host_ip)
    except (ValueError, TypeError):
        raise ValueError(f"host_ip {host_ip!r} is not an IPv4 address") from None
    if address.is_unspecified:
        return None
    if address != outside and address not in LOOPBACK:
        raise ValueError(f"host_ip {host_ip!r} is not an address of the Docker host ({outside} or 127.0.0.1)")
    return address


def reserve(host: Namespace, port: int, proto: str, address: IPv4 | None) -> socket.socket:
    """Bind the host port in ``host`` (on ``address``, or all), as docker-proxy does; ValueError if a process has it."""
    with handle_of(host).entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        sock.bind(("0.0.0.0" if address is None else str(address), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(
                f"host port {port}/{proto} is already in use in the host namespace (a process there has bound it)"
            ) from None
        raise
    return sock
