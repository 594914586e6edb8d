"""Input validation: every public entry point checks its arguments here first.

Each function returns the normalised value or raises ``ValueError`` naming
the bad value, before anything touches the kernel.

Names are checked by one function, ``check_name(value, what=..., rule=...)``,
against one of the rules below (``NAMESPACE``, ``HOST``, ``IFNAME``,
``NFT``, ``DNS1123_LABEL``, ``DNS1123_SUBDOMAIN``, ``DNS1035_LABEL``); its
error names the value and the rule.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MTU_MIN, MTU_MAX = 68, 65535
IPV6_MIN_MTU = 1280
IFNAMSIZ = 16  # including the terminating NUL: names have at most 15 bytes
_SYSCTL_KEY = re.compile(r"^net[./][A-Za-z0-9_./:@-]+$")


def mtu(value: object, what: str = "MTU") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer between {MTU_MIN} and {MTU_MAX}, got {value!r}")
    if not MTU_MIN <= value <= MTU_MAX:
        raise ValueError(f"{what} {value!r} is outside {MTU_MIN}..{MTU_MAX}")
    return value


@dataclass(frozen=True)
class NameRule:
    """A rule for a kind of name: ``title`` and ``text`` go into the error message."""

    title: str
    text: str
    pattern: re.Pattern[str]
    #: A limit in UTF-8 bytes, for names the kernel stores in fixed-size buffers.
    max_bytes: int | None = None

    def accepts(self, value: str) -> bool:
        if self.pattern.fullmatch(value) is None:
            return False
        try:
            size = len(value.encode())
        except UnicodeEncodeError:  # a lone surrogate: no kernel or file takes it
            return False
        return self.max_bytes is None or size <= self.max_bytes

    def __str__(self) -> str:
        return f"{self.title} ({self.text})"


#: A ``Namespace`` label: the namespace itself is anonymous, so almost anything goes.
NAMESPACE = NameRule("a namespace label", "1-64 characters, no '/'", re.compile(r"[^/]{1,64}"))
#: A name that goes into a hosts file (topology namespaces); ``hosts_file=True`` also applies.
HOST = NameRule(
    "a host name",
    "1-63 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}"),
)
#: An interface name as the kernel's dev_valid_name() takes it.
IFNAME = NameRule(
    "a valid interface name",
    f"1-{IFNAMSIZ - 1} bytes, no '/', ':', whitespace or NUL, not '.' or '..'",
    re.compile(r"(?!\.\.?\Z)[^/:\s\0]+"),
    max_bytes=IFNAMSIZ - 1,
)
#: An nftables table, chain, set or object name made by this package (the kernel allows longer ones).
NFT = NameRule(
    "an nftables name",
    "1-64 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"),
)
#: Kubernetes' IsDNS1123Label (namespace names, ...).
DNS1123_LABEL = NameRule(
    "a DNS-1123 label",
    "1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
    re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"),
)
#: Kubernetes' IsDNS1123Subdomain (pod and node names): DNS-1123 labels joined by '.'.
DNS1123_SUBDOMAIN = NameRule(
    "a DNS-1123 subdomain",
    "at most 253 lowercase letters, digits, '-' or '.', each '.'-separated part starting and ending with a "
    "letter or digit",
    re.compile(r"(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"),
)
#: Kubernetes' IsDNS1035Label (service names).
DNS1035_LABEL = NameRule(
    "a DNS-1035 label",
    "1-63 lowercase letters, digits or '-', starting with a letter, ending with a letter or digit",
    re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?"),
)


def check_name(value: object, *, what: str, rule: NameRule, hosts_file: bool = False) -> str:
    """``value`` if it is a string that ``rule`` accepts, else ``ValueError`` naming both.

    ``what`` says what the name is for ("namespace name", "service name").
    ``hosts_file=True``: the name goes into a hosts file, so one a resolver
    reads as an IPv4 address ('123', '10.1', '0x1') is refused as well.
    """
    if not isinstance(value, str) or not rule.accepts(value):
        raise ValueError(f"{what} {value!r} is not {rule}")
    if hosts_file and _ipv4_like(value):
        raise ValueError(
            f"{what} {value!r} reads as an IPv4 address to a resolver (inet_aton); names go into a hosts file"
        )
    return value


def _ipv4_like(value: str) -> bool:
    if re.fullmatch(r"[0-9.]+", value):
        return True
    try:
        socket.inet_aton(value)  # also takes '0x1' and '10.1' as addresses
    except OSError:
        return False
    return True


def ifname(value: object, what: str = "interface name") -> str:
    """An interface name the kernel accepts (``IFNAME``)."""
    return check_name(value, what=what, rule=IFNAME)


def address(value: object) -> IPAddress:
    """An address, from a string or an ``ipaddress`` object; an interface (``10.0.0.2/24``) gives its address."""
    # First: an IPv4Interface is also an IPv4Address, whose str() keeps the prefix ("10.0.0.2/24").
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value.ip
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
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


def port(value: object, what: str = "port") -> int:
    """A TCP/UDP port number: an integer 1-65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{what} {value!r} is not a port number (1-65535)")
    return value


def duration(value: object, what: str = "timeout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ValueError(f"{what} must be a non-negative number of seconds, got {value!r}")
    return float(value)


#: A Kubernetes label name (the part of a key after any prefix) or a non-empty label value.
LABEL_NAME = NameRule(
    "a Kubernetes label name",
    "1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    re.compile(r"(?=.{1,63}\Z)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"),
)
#: A port name: an IANA service name (RFC 6335), as Kubernetes validates ``ports[].name``.
IANA_SVC_NAME = NameRule(
    "an IANA service name",
    "1-15 lowercase letters, digits or '-', at least one letter, no leading, trailing or double '-'",
    re.compile(r"(?=.{1,15}\Z)(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]*[a-z0-9])?"),
)


def label_key(key: object) -> str:
    """A Kubernetes label key: ``[prefix/]name``, the prefix a DNS-1123 subdomain of at most 253 characters."""
    if not isinstance(key, str):
        raise ValueError(f"label key {key!r} must be a string")
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.pattern.fullmatch(prefix)):
        raise ValueError(
            f"label key {key!r}: its prefix {prefix!r} is not a DNS-1123 subdomain of at most 253 characters"
        )
    check_name(name, what=f"label key {key!r}: name", rule=LABEL_NAME)
    return key


def label_value(key: str, value: object) -> str:
    """A Kubernetes label value: a string, empty or ``LABEL_NAME``."""
    if not isinstance(value, str):
        raise ValueError(f"label {key!r}: value {value!r} must be a string")
    if value:
        check_name(value, what=f"label {key!r}: value", rule=LABEL_NAME)
    return value


def labels(value: object, what: str = "labels") -> dict[str, str]:
    """A mapping of Kubernetes labels (``None``: none), checked key by key."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping of strings to strings, got {value!r}")
    return {label_key(key): label_value(key, item) for key, item in value.items()}
