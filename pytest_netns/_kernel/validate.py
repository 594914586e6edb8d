"""Input validation: every public entry point checks its arguments here first.

Each function returns the normalised value or raises ``ValueError`` naming
the bad value, before anything touches the kernel.
"""

from __future__ import annotations

import functools
import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MTU_MIN, MTU_MAX = 68, 65535
IPV6_MIN_MTU = 1280
IFNAMSIZ = 16  # including the terminating NUL: names have at most 15 characters
_SYSCTL_KEY = re.compile(r"^net[./][A-Za-z0-9_./:@-]+$")


def mtu(value: object, what: str = "MTU") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer between {MTU_MIN} and {MTU_MAX}, got {value!r}")
    if not MTU_MIN <= value <= MTU_MAX:
        raise ValueError(f"{what} {value!r} is outside {MTU_MIN}..{MTU_MAX}")
    return value


def ifname(value: object) -> str:
    """An interface name the kernel accepts: 1-15 characters, no '/', ':' or whitespace."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"interface name must be a non-empty string, got {value!r}")
    if len(value) >= IFNAMSIZ:
        raise ValueError(
            f"interface name {value!r} is {len(value)} characters long; the kernel allows at most {IFNAMSIZ - 1}"
        )
    if value in (".", "..") or any(c in value for c in "/: \t\n\0"):
        raise ValueError(f"interface name {value!r} contains a character the kernel refuses ('/', ':', whitespace)")
    return value


def address(value: object) -> IPAddress:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value.ip
    try:
        return ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{value!r} is not a valid IPv4 or IPv6 address") from None


def interface(value: object) -> IPInterface:
    """An address with a prefix length, like '10.0.0.1/24' (a bare address gets /32 or /128)."""
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value
    try:
        return ipaddress.ip_interface(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ValueError(f"{value!r} is not a valid address with prefix, like '10.0.0.1/24' or 'fd00::1/64'") from None


def network(value: object, what: str = "subnet") -> IPNetwork:
    """A network like '10.0.0.0/24'; host bits must be zero."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{what} {value!r} is not a network like '10.0.0.0/24'")
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} is malformed: {exc}") from None


def route_destination(value: object) -> IPNetwork:
    if value == "default":
        raise ValueError("'default' is ambiguous between IPv4 and IPv6 here; this should not be reached")
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_network(value)
    return network(value, "route destination")


def hosts(net: IPNetwork, count: int, what: str = "subnet") -> list[IPInterface]:
    """The first ``count`` host addresses of ``net`` with its prefix, or ValueError if it is too small."""
    return list(_hosts(net, count, what))


@functools.lru_cache(maxsize=512)
def _hosts(net: IPNetwork, count: int, what: str) -> tuple[IPInterface, ...]:
    usable = net.num_addresses - (2 if net.version == 4 and net.prefixlen < 31 else 0)
    if net.version == 6 and net.prefixlen < 127:
        usable = net.num_addresses - 1  # the subnet-router anycast address
    if usable < count:
        raise ValueError(f"{what} {net} has room for {max(usable, 0)} host addresses, {count} needed")
    result = []
    for host in net.hosts():
        result.append(ipaddress.ip_interface(f"{host}/{net.prefixlen}"))
        if len(result) == count:
            break
    return tuple(result)


def sysctl_key(value: object) -> str:
    """A sysctl key under net. ('net.ipv4.ip_forward' or 'net/ipv4/ip_forward'), as a /proc path."""
    if not isinstance(value, str) or not _SYSCTL_KEY.match(value) or ".." in value.split("/"):
        raise ValueError(
            f"sysctl key {value!r} is not a key under 'net.' (only network sysctls are per namespace; "
            "anything else would change the host)"
        )
    path = value if "/" in value else value.replace(".", "/")
    return "/proc/sys/" + path


def duration(value: object, what: str = "timeout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ValueError(f"{what} must be a non-negative number of seconds, got {value!r}")
    return float(value)
