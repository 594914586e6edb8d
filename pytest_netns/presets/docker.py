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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .._kernel import nft as _nft
from .._kernel import rtnl as _rtnl
from .._kernel import validate as _validate
from .._kernel.handle import handle_of
from .._net import rules as _rules
from .._net import sysctl
from .._net.bridge import Plug, plug, router_bridge
from .._net.veth import veth
from ..errors import NetnsError, TeardownError
from ..namespace import Namespace, close_all

__all__ = ["DOCKER_NETWORK", "OUTSIDE_NETWORK", "Container", "DockerHost", "PublishedPort"]

IPv4 = ipaddress.IPv4Address

DOCKER_NETWORK = ipaddress.IPv4Network("172.17.0.0/16")
DOCKER_BRIDGE = "docker0"
OUTSIDE_NETWORK = ipaddress.IPv4Network("203.0.113.0/24")
#: The host's outside interface and the external host's interface.
UPLINK = "eth0"
CONTAINER_IFNAME = "eth0"


MTU = 1500
#: Forwarding on, no reverse-path filter, and bridged frames kept away from netfilter where
#: br_netfilter is loaded (the files are skipped where not): the same behaviour with and without it.
HOST_SYSCTLS = sysctl.IPV4_FORWARDING + sysctl.NO_RP_FILTER + sysctl.BRIDGED_TRAFFIC_SKIPS_NETFILTER
#: The host's table masquerading DNAT-ed connections that go back onto docker0.
HAIRPIN_TABLE = f"{_nft.TABLE_PREFIX}_docker_hairpin"


class _Addressed(Namespace):
    """A namespace whose ``ip`` is the address the model gave it, not the first one the kernel lists."""

    def __init__(self, name: str, *, ip: IPv4, kill_grace: float) -> None:
        super().__init__(name, kill_grace=kill_grace, _defer_setup=True)
        self._ip = ip

    @property
    def ip(self) -> IPv4:
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
        _validate.check_name(name, what="container name", rule=_validate.NAMESPACE)
        if name in self._containers or name in ("host", "external"):
            raise ValueError(f"container name {name!r} is already used")
        number = len(self._containers) + 2
        if number >= DOCKER_NETWORK.num_addresses - 1:
            raise ValueError(f"no free address left in {DOCKER_NETWORK}")
        ns = Container(name, ip=DOCKER_NETWORK[number], kill_grace=self.kill_grace)
        self._adopt(ns)
        address = ipaddress.IPv4Interface((ns.ip, DOCKER_NETWORK.prefixlen))
        # dockerd names them veth<random>
        plug(self._docker0, [Plug(ns, CONTAINER_IFNAME, [address], port=f"veth{number}")], mtu=MTU)
        gateway = DOCKER_NETWORK[1]
        handle_of(ns).execute(
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
        _validate.port(host_port, "host_port")
        _validate.port(container_port, "container_port")
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
            with handle_of(self.host).entered():
                table = _rules.port_forward(host_port, target.ip, container_port, proto=proto)
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
        host = _Addressed("host", ip=OUTSIDE_NETWORK[1], kill_grace=self.kill_grace)
        self._adopt(host)
        sysctl.settle(host, HOST_SYSCTLS)
        gateway = ipaddress.IPv4Interface((DOCKER_NETWORK[1], DOCKER_NETWORK.prefixlen))
        self._docker0 = router_bridge(host, DOCKER_BRIDGE, gateway, mtu=MTU, nf_call_iptables=False, reserved=(UPLINK,))
        with handle_of(host).entered():
            _rules.masquerade(src=DOCKER_NETWORK, not_oifname=DOCKER_BRIDGE)
            _rules.hairpin_masquerade(DOCKER_NETWORK, DOCKER_BRIDGE, table=HAIRPIN_TABLE)
        return host

    def _build_external(self) -> Namespace:
        external = _Addressed("external", ip=OUTSIDE_NETWORK[2], kill_grace=self.kill_grace)
        self._adopt(external)
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
        with handle_of(self.host).entered():
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
        with handle_of(self.host).entered():
            published._table.remove()
        published._reservation.close()
        del self._published[(published.proto, published.host_port)]
