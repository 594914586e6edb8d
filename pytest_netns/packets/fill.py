"""Filling what scapy would look up in its own tables (made in another namespace) from the namespace's kernel.

Every empty field scapy computes from ``conf.route``/``conf.ifaces`` or its ARP cache (source addresses, source and
destination MACs) is filled from the namespace's routes, links and neighbour table; a field that cannot be filled
is a ``ValueError`` asking for it.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import TYPE_CHECKING, Any

from ..errors import KernelError
from . import lookup

if TYPE_CHECKING:
    from scapy.packet import Packet

    from .handle import NamespaceHandle as Namespace  # not ..namespace: packets sits below it

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def fill(ns: Namespace, pkt: Packet, link: lookup.Interface | None) -> None:
    """Fill, in place, every empty field scapy would compute from its global tables.

    ``link`` is the interface a frame goes out of (``sendp``); for L3
    packets it is found per destination from the namespace's routes.
    """
    from scapy.fields import SourceIP6Field, SourceIPField
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, DestMACField, SourceMACField
    from scapy.packet import NoPayload

    looked_up = (SourceMACField, SourceIPField, SourceIP6Field, DestMACField)
    enclosing_l3: Any = None
    layer: Any = pkt
    while not isinstance(layer, NoPayload):
        if isinstance(layer, (IP, IPv6)) and enclosing_l3 is None:
            enclosing_l3 = layer
        for desc in layer.fields_desc:
            field = _concrete_field(desc, layer)
            if not isinstance(field, looked_up) or layer.getfieldval(field.name) is not None:
                continue
            where = f"{layer.name}.{field.name}"
            if isinstance(field, DestMACField):
                value: Any = _destination_mac(ns, layer, link, where)
            elif isinstance(field, SourceMACField):
                value = _source_mac(ns, layer, enclosing_l3, link, where)
            elif isinstance(layer, IP) and field.name == "src":
                value = _source_address(ns, layer.dst, link, where)
            elif isinstance(layer, IPv6) and field.name == "src":
                value = _source_address(ns, layer.dst, link, where)
            elif isinstance(layer, ARP) and field.name == "psrc":
                value = _source_address(ns, layer.pdst, link, where)
            else:
                raise ValueError(
                    f"{where} is empty, and scapy would fill it from its own tables (made in another "
                    f"namespace): set it explicitly"
                )
            layer.setfieldval(field.name, value)
        layer = layer.payload


def _concrete_field(desc: Any, layer: Any) -> Any:
    """The field actually used for ``desc`` in ``layer`` (through Emph, conditions, multiple types)."""
    from scapy.fields import ConditionalField, MultipleTypeField, _FieldContainer

    field = desc
    while True:
        if isinstance(field, MultipleTypeField):
            field = field._find_fld_pkt_val(layer, layer.getfieldval(field.name))[0]
        elif isinstance(field, ConditionalField):
            if not field._evalcond(layer):
                return None
            field = field.fld
        elif isinstance(field, _FieldContainer):
            field = field.fld
        else:
            return field


def scope_index(ns: Namespace, dst: Any, link: lookup.Interface | None) -> int | None:
    """The interface index a scoped address (``fe80::1%eth0``) names, else ``link``'s."""
    scope = getattr(dst, "scope", None)
    if scope is None or scope == "":
        return link.index if link is not None else None
    if isinstance(scope, int):
        return scope
    return lookup.interface(ns, name=str(scope)).index


def plain(address: Any) -> str:
    """An address as text, without scapy's ``%scope`` decoration."""
    if isinstance(address, (list, tuple)) or hasattr(address, "choice"):
        raise ValueError(f"{address!r} is not a single address")
    return str(address).split("%")[0]


def _source_address(ns: Namespace, dst: Any, link: lookup.Interface | None, where: str) -> str:
    target = plain(dst)
    try:
        route = lookup.route(ns, target, scope_index(ns, dst, link))
    except KernelError as exc:
        raise KernelError(exc.errno or errno.EHOSTUNREACH, f"filling {where}: {exc.doing}") from None
    if route.src is None:
        raise ValueError(
            f"{where} is empty and namespace {ns.name!r} has no source address to reach {target}: set it explicitly"
        )
    return route.src


def _source_mac(ns: Namespace, layer: Any, l3: Any, link: lookup.Interface | None, where: str) -> str:
    if link is None:
        if l3 is None:
            raise ValueError(f"{where} is empty: set it explicitly")
        route = lookup.route(ns, plain(l3.dst), scope_index(ns, l3.dst, None))
        if route.oif is None:
            raise ValueError(f"{where} is empty and no route to {plain(l3.dst)} names an interface: set it explicitly")
        link = lookup.interface(ns, index=route.oif)
    if link.mac is None:
        raise ValueError(f"{where} is empty and {ns.name}:{link.name} has no MAC address: set it explicitly")
    return link.mac


def _destination_mac(ns: Namespace, layer: Any, link: lookup.Interface | None, where: str) -> str:
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP

    payload = layer.payload
    if isinstance(payload, ARP):
        if payload.op == 1:
            return BROADCAST_MAC
        raise ValueError(f"{where} is empty: an ARP reply needs an explicit destination MAC")
    if isinstance(payload, (IP, IPv6)) and link is not None:
        target = ipaddress.ip_address(plain(payload.dst))
        if target.is_multicast:
            if target.version == 4:
                low = target.packed[1:]
                return "01:00:5e:" + ":".join(f"{b:02x}" for b in (low[0] & 0x7F, low[1], low[2]))
            return "33:33:" + ":".join(f"{b:02x}" for b in target.packed[-4:])
        if target == ipaddress.IPv4Address("255.255.255.255"):
            return BROADCAST_MAC
        route = lookup.route(ns, str(target), link.index)
        if route.kind == lookup.RTN_BROADCAST:
            return BROADCAST_MAC
        hop = route.gateway or str(target)
        mac = lookup.neighbour(ns, hop, link.index)
        if mac is None:
            raise ValueError(
                f"{where} is empty and namespace {ns.name!r} has no neighbour entry for {hop} on "
                f"{link.name}: set Ether(dst=...) or let the kernel resolve it first (e.g. ns.ping)"
            )
        return mac
    raise ValueError(f"{where} is empty: set the destination MAC explicitly")
