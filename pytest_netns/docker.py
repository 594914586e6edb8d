"""Docker's default bridge network in namespaces: ``DockerHost``.

What ``dockerd`` builds for containers on the default ``bridge`` network,
made with netlink only (no Docker daemon, no binaries).  It works without
pytest; ``netns_docker`` is the function-scoped fixture::

    with DockerHost() as docker:
        web = docker.container("web")
        web.popen(["python3", "-m", "http.server", "80"])
        docker.publish(web, host_port=8080, container_port=80)
        with docker.external:
            urllib.request.urlopen(f"http://{docker.host.ip}:8080/")

The network:

* ``host``: the Docker host.  ``docker0`` is a bridge with 172.17.0.1/16;
  ``eth0`` is its outside interface, ``host.ip`` = 203.0.113.1/24.
  Forwarding is on.
* ``external``: a machine on the outside network (``eth0`` 203.0.113.2/24,
  ``external.ip``), with no route to 172.17.0.0/16: it reaches containers
  only through published ports.
* ``container(name)``: ``eth0`` is one end of a veth whose other end is a
  port of ``docker0``; addresses 172.17.0.2, .3, ... in creation order,
  default route via 172.17.0.1.
* Outbound NAT: ``ip saddr 172.17.0.0/16 oifname != "docker0" masquerade``
  on the host (Docker's POSTROUTING rule): what containers send out leaves
  with ``host.ip``.
* ``publish(container, host_port=, container_port=, proto=)``: new
  connections to any of the host's own addresses at ``host_port`` (from
  outside, from containers, or from the host itself; not to 127.0.0.1) are
  DNAT-ed to the container's ``container_port`` (Docker's
  ``-m addrtype --dst-type LOCAL`` DNAT rule).  From outside and from the
  host the source address is kept: the container sees the external host's
  address.  A container reaching a published port (its own or another's)
  through the host's address is seen coming from the gateway 172.17.0.1, as
  with Docker's default userland proxy: the host masquerades a DNAT-ed
  connection that goes back onto ``docker0``, so that the reply returns
  through the host and is translated back.  Like docker-proxy, the host
  port is also bound in the host namespace, so the port is really taken
  there: a second ``publish`` of the same port and protocol, or one of a
  port a process in ``host`` already uses, raises ``ValueError`` naming the
  port (Docker's "port is already allocated"), and a later process in
  ``host`` cannot bind it either.

Kernel settings set explicitly on the host namespace (never on the machine):
``ip_forward=1``; ``rp_filter=0``; bridged frames do not pass netfilter
(``net.bridge.bridge-nf-call-iptables=0`` and ``docker0``'s own option off),
so the model works the same whether the kernel has ``br_netfilter`` loaded
or not: container egress and published ports are routed, and containers
reach each other by IP over a plain bridge.  Keeping the source address of
a container reaching another container's published port (dockerd
``--userland-proxy=false``) would need ``br_netfilter``: the DNAT-ed
connection's reply is bridged straight between the two containers, and only
bridged frames passing the IP hooks get translated back.  No link has an
IPv6 address (Docker's default network is IPv4).  Not modelled:
user-defined networks and their DNS, the userland proxy for 127.0.0.1,
IPv6, ``--icc=false``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from . import _nft, _rtnl, _validate
from ._links import veth
from .cluster import (
    _FORWARDING,
    _NO_RP_FILTER,
    FABRIC_SYSCTLS,
    _bridge,
    _check_port,
    _plug,
    _settle_sysctls,
)
from .errors import NetnsError, TeardownError
from .namespace import Namespace, close_all

__all__ = ["DOCKER_NETWORK", "OUTSIDE_NETWORK", "Container", "DockerHost", "PublishedPort"]

IPv4 = ipaddress.IPv4Address

DOCKER_NETWORK = ipaddress.IPv4Network("172.17.0.0/16")
DOCKER_BRIDGE = "docker0"
OUTSIDE_NETWORK = ipaddress.IPv4Network("203.0.113.0/24")
#: The host's outside interface and the external host's interface.
UPLINK = "eth0"
CONTAINER_IFNAME = "eth0"
#: Forwarding on, no reverse-path filter, and bridged frames kept away from
#: netfilter where br_netfilter is loaded (the files are skipped where not):
#: the same behaviour with and without br_netfilter.
HOST_SYSCTLS = _FORWARDING + _NO_RP_FILTER + FABRIC_SYSCTLS
#: The host's table masquerading DNAT-ed connections that go back onto docker0.
HAIRPIN_TABLE = f"{_nft.TABLE_PREFIX}_docker_hairpin"
#: ``ct status dnat``: NFT_CT_STATUS and IPS_DST_NAT.
_CT_STATUS = 2
_IPS_DST_NAT = 1 << 5


class _Addressed(Namespace):
    """A namespace whose ``ip`` is the address the model gave it, not the first one the kernel lists."""

    _ip: IPv4

    @property
    def ip(self) -> IPv4:  # type: ignore[override]
        """Its address in the model (the host: its outside address)."""
        return self._ip


class Container(_Addressed):
    """A container (a ``Namespace``) on ``docker0``: ``ip`` is its 172.17.0.x address."""

    def __repr__(self) -> str:
        return f"<Container {self.name!r} {self.ip}>" if not self.closed else super().__repr__()


@dataclass(eq=False)
class PublishedPort:
    """A host port published to a container port (made by ``DockerHost.publish``).

    ``address`` is ``(host.ip, host_port)`` as seen from outside;
    ``remove()`` unpublishes it (established connections keep working).
    """

    container: Container
    host_port: int
    container_port: int
    proto: Literal["tcp", "udp"]
    address: tuple[str, int]
    _docker: DockerHost = field(repr=False)
    _table: _nft.NftTable = field(repr=False)
    _reservation: socket.socket = field(repr=False)

    def remove(self) -> None:
        """Unpublish: new connections to the host port are no longer forwarded, and the port is free again."""
        self._docker._unpublish(self)


class DockerHost:
    """A Docker host with its default bridge network, an outside network and one external host.

    ``DockerHost(kill_grace=1.0)``; use it as a context manager or call
    ``close()``.  ``host`` and ``external`` exist from the start;
    ``container(name)`` adds containers, ``publish`` publishes ports.
    See the module docstring for the network it makes.
    """

    def __init__(
        self, *, kill_grace: float = 1.0, _namespace_created: Callable[[Namespace], None] | None = None
    ) -> None:
        self.kill_grace = _validate.duration(kill_grace, "kill_grace")
        self._namespace_created = _namespace_created
        self._owned: list[Namespace] = []
        self._containers: dict[str, Container] = {}
        self._published: dict[tuple[str, int], PublishedPort] = {}
        self._closed = False
        try:
            self.host: Namespace = self._build_host()
            self.external: Namespace = self._build_external()
        except BaseException:
            try:
                self.close()
            except TeardownError:
                pass
            raise

    @property
    def containers(self) -> list[Container]:
        return list(self._containers.values())

    @property
    def published(self) -> list[PublishedPort]:
        return list(self._published.values())

    @property
    def namespaces(self) -> list[Namespace]:
        """``host``, ``external`` and every container, in creation order."""
        return list(self._owned)

    @property
    def closed(self) -> bool:
        return self._closed

    def __getitem__(self, name: str) -> Container:
        try:
            return self._containers[name]
        except KeyError:
            raise KeyError(f"no container {name!r} (there are {', '.join(self._containers) or 'none'})") from None

    def __repr__(self) -> str:
        if self._closed:
            return "<DockerHost closed>"
        return f"<DockerHost {len(self._containers)} containers, {len(self._published)} published ports>"

    def container(self, name: str) -> Container:
        """A new container: ``eth0`` on ``docker0`` with the next 172.17.0.x, default route via 172.17.0.1."""
        self._check_open()
        if not isinstance(name, str) or not name or len(name) > 64 or "/" in name:
            raise ValueError(f"container name {name!r} must be 1-64 characters without '/'")
        if name in self._containers or name in ("host", "external"):
            raise ValueError(f"container name {name!r} is already used")
        number = len(self._containers) + 2
        if number >= DOCKER_NETWORK.num_addresses - 1:
            raise ValueError(f"no free address left in {DOCKER_NETWORK}")
        ns = Container(name, kill_grace=self.kill_grace, _defer_setup=True)
        self._adopt(ns)
        ns._ip = DOCKER_NETWORK[number]
        port = f"veth{number}"  # dockerd names them veth<random>
        _plug(
            self.host,
            self._bridge_index,
            port,
            ns,
            CONTAINER_IFNAME,
            ipaddress.IPv4Interface(f"{ns.ip}/{DOCKER_NETWORK.prefixlen}"),
            1500,
        )
        gateway = DOCKER_NETWORK[1]
        ns.execute(
            [
                _rtnl.new_route(
                    ipaddress.IPv4Network("0.0.0.0/0"),
                    via=gateway,
                    doing=f"adding the default route via {gateway} in {name!r}",
                )
            ]
        )
        self._containers[name] = ns
        return ns

    def publish(
        self,
        container: Container | str,
        *,
        host_port: int,
        container_port: int,
        proto: Literal["tcp", "udp"] = "tcp",
    ) -> PublishedPort:
        """``docker run -p host_port:container_port/proto``: the container is reachable at ``host.ip:host_port``.

        A host port already published (same protocol) or in use by a
        process in ``host`` raises ``ValueError`` naming it; nothing is changed then.
        """
        self._check_open()
        target = self._container(container)
        _check_port(host_port, "host_port")
        _check_port(container_port, "container_port")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto {proto!r} is not 'tcp' or 'udp'")
        taken = self._published.get((proto, host_port))
        if taken is not None:
            raise ValueError(
                f"host port {host_port}/{proto} is already allocated: published to container "
                f"{taken.container.name!r} port {taken.container_port}"
            )
        reservation = self._reserve(host_port, proto)
        try:
            with self.host:
                table = _nft.port_forward(host_port, target.ip, container_port, proto=proto)
        except BaseException:
            reservation.close()
            raise
        published = PublishedPort(
            target, host_port, container_port, proto, (str(self.host.ip), host_port), self, table, reservation
        )
        self._published[(proto, host_port)] = published
        return published

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Tear everything down: processes stopped, every namespace released (containers first).

        Raises ``TeardownError`` listing every step that failed.  Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        for published in self._published.values():
            published._reservation.close()
        self._published.clear()
        close_all(self._owned)

    def __enter__(self) -> DockerHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise NetnsError("this Docker host is already torn down")

    def _adopt(self, ns: Namespace) -> None:
        self._owned.append(ns)
        if self._namespace_created is not None:
            self._namespace_created(ns)

    def _container(self, container: object) -> Container:
        if isinstance(container, Container) and self._containers.get(container.name) is container:
            return container
        if isinstance(container, str) and container in self._containers:
            return self._containers[container]
        raise ValueError(
            f"container {getattr(container, 'name', container)!r} is not a container of this host "
            f"(there are {', '.join(self._containers) or 'none'})"
        )

    def _build_host(self) -> Namespace:
        host = _Addressed("host", kill_grace=self.kill_grace, _defer_setup=True)
        self._adopt(host)
        host._ip = OUTSIDE_NETWORK[1]
        _settle_sysctls(host, HOST_SYSCTLS)
        self._bridge_index = host.allocate_index()
        gateway = ipaddress.IPv4Interface(f"{DOCKER_NETWORK[1]}/{DOCKER_NETWORK.prefixlen}")
        host.execute(
            [
                _bridge(DOCKER_BRIDGE, self._bridge_index, 1500, nf_call_iptables=False),
                _rtnl.no_ipv6_link_local(self._bridge_index, f"switching IPv6 off on {DOCKER_BRIDGE}"),
                _rtnl.set_link(self._bridge_index, up=True, doing=f"bringing {DOCKER_BRIDGE} up"),
                _rtnl.new_address(self._bridge_index, gateway, f"adding {gateway} to {DOCKER_BRIDGE}"),
            ]
        )
        with host:
            _nft.masquerade(src=DOCKER_NETWORK, not_oifname=DOCKER_BRIDGE)
            _hairpin_masquerade()
        return host

    def _build_external(self) -> Namespace:
        external = _Addressed("external", kill_grace=self.kill_grace, _defer_setup=True)
        self._adopt(external)
        external._ip = OUTSIDE_NETWORK[2]
        prefix = OUTSIDE_NETWORK.prefixlen
        veth(
            self.host,
            external,
            name_a=UPLINK,
            name_b=UPLINK,
            ipv6=False,
            addresses_a=[ipaddress.IPv4Interface(f"{self.host.ip}/{prefix}")],
            addresses_b=[ipaddress.IPv4Interface(f"{external.ip}/{prefix}")],
        )
        return external

    def _reserve(self, port: int, proto: str) -> socket.socket:
        """Bind the host port in the host namespace, as docker-proxy does; ValueError if a process has it."""
        with self.host:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(
                    f"host port {port}/{proto} is already in use in the host namespace (a process there has bound it)"
                ) from None
            raise
        return sock

    def _unpublish(self, published: PublishedPort) -> None:
        self._check_open()
        if self._published.get((published.proto, published.host_port)) is not published:
            return
        with self.host:
            published._table.remove()
        published._reservation.close()
        del self._published[(published.proto, published.host_port)]


def _hairpin_masquerade() -> None:
    """``ip saddr 172.17.0.0/16 oifname "docker0" ct status dnat masquerade`` (calling thread in the host).

    A container's connection to a published port, DNAT-ed to a container on
    the same bridge, would be answered straight over the bridge, which only
    ``br_netfilter`` translates back; seen from the gateway's address, the
    reply comes back through the host's own conntrack.  Frames bridged
    between containers never reach this chain (they skip netfilter here).
    """
    rule = (
        _nft._nfproto(4)
        + _nft._addr_match(DOCKER_NETWORK, "saddr")
        + [_nft._meta(_nft._META_OIFNAME), _nft._cmp(_nft._CMP_EQ, _nft._ifname_bytes(DOCKER_BRIDGE))]
        + [
            _nft._expr("ct", "CT", dreg=_nft._REG_1, key=_CT_STATUS),
            _nft._bitwise_and(struct.pack("=I", _IPS_DST_NAT)),
            _nft._cmp(_nft._CMP_NEQ, bytes(4)),
        ]
        + [_nft._expr("masq", "MASQ")]
    )
    batch = _nft._Batch()
    with _nft._netlink_socket() as sock:
        batch.add_table("inet", HAIRPIN_TABLE)
        batch.add_chain(
            "inet", HAIRPIN_TABLE, "postrouting", hook=_nft._HOOK_POSTROUTING, priority=_nft._PRIO_SRCNAT, kind="nat"
        )
        batch.add_rule("inet", HAIRPIN_TABLE, "postrouting", rule)
        batch.commit(sock)
