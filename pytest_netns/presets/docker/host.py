"""``DockerHost``: the Docker host, its networks, containers and published ports (see the package docstring)."""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ..._kernel import nft as _nft
from ..._kernel import rtnl as _rtnl
from ..._kernel import validate as _validate
from ..._kernel.handle import handle_of
from ..._net import resolver, sysctl
from ..._net import rules as _rules
from ..._net.bridge import Plug, plug, router_bridge
from ..._net.veth import veth
from ...errors import NetnsError, TeardownError
from ...namespace import Namespace, close_all
from . import networks as _networks
from . import publish as _publish
from .members import Container, _Addressed
from .networks import DEFAULT_NETWORK, RESERVED_NETWORKS, Network

IPv4 = ipaddress.IPv4Address

DOCKER_NETWORK = ipaddress.IPv4Network("172.17.0.0/16")
DOCKER_BRIDGE = "docker0"
OUTSIDE_NETWORK = ipaddress.IPv4Network("203.0.113.0/24")
#: The host's outside interface and the external host's interface.
UPLINK = "eth0"

MTU = 1500
#: Forwarding on, no reverse-path filter, and bridged frames kept away from netfilter where
#: br_netfilter is loaded (the files are skipped where not): the same behaviour with and without it.
HOST_SYSCTLS = sysctl.IPV4_FORWARDING + sysctl.NO_RP_FILTER + sysctl.BRIDGED_TRAFFIC_SKIPS_NETFILTER
#: The host's table masquerading DNAT-ed connections that go back onto the bridge they came from.
HAIRPIN_TABLE = f"{_nft.TABLE_PREFIX}_docker_hairpin"


@dataclass(eq=False)
class PublishedPort:
    """A host port published to a container port (made by ``DockerHost.publish``).

    ``address`` is ``(host_ip or host.ip, host_port)``: where clients connect;
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
    #: The host address it is bound to (``None``: all of the host's addresses).
    host_ip: str | None = None

    def remove(self) -> None:
        """Unpublish: new connections to the host port are no longer forwarded, and the port is free again."""
        self._docker._unpublish(self)


class DockerHost:
    """A Docker host with its default bridge network, an outside network and one external host.

    ``DockerHost(kill_grace=1.0)``; use it as a context manager or call
    ``close()``.  ``host`` and ``external`` exist from the start;
    ``network(name)`` adds user-defined networks, ``container(name)`` adds
    containers, ``connect`` joins them to more networks, ``publish`` publishes
    ports.  See the package docstring for the network it makes.
    """

    def __init__(
        self, *, kill_grace: float = 1.0, _namespace_created: Callable[[Namespace], None] | None = None
    ) -> None:
        self.kill_grace = _validate.duration(kill_grace, "kill_grace")
        self._namespace_created = _namespace_created
        self._owned: list[Namespace] = []
        self._containers: dict[str, Container] = {}
        self._networks: dict[str, Network] = {}
        self._published: dict[tuple[str, int], PublishedPort] = {}
        #: Host-side port names veth2, veth3, ... (dockerd names them veth<random>).
        self._port_numbers = itertools.count(2)
        self._isolated = False
        self._localnet_bridges: set[str] = set()
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
    def networks(self) -> Mapping[str, Network]:
        """Every network by name, the default ``bridge`` first."""
        return MappingProxyType(dict(self._networks))

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
        return (
            f"<DockerHost {len(self._networks)} networks, {len(self._containers)} containers, "
            f"{len(self._published)} published ports>"
        )

    # -- networks and containers -----------------------------------------------------------------

    def network(self, name: str, *, subnet: str | ipaddress.IPv4Network | None = None) -> Network:
        """``docker network create [--subnet S] name``: a user-defined bridge network with Docker's embedded DNS.

        The subnet is the first of Docker's default pools (172.18.0.0/16,
        172.19.0.0/16, ...) that no network uses, unless given; the gateway is
        its first address, on the bridge ``br-<id[:12]>`` of the host.
        """
        self._check_open()
        _networks.check_network_name(name, self._networks)
        used = {f"network {n.name!r}": n.subnet for n in self._networks.values()}
        used["the outside network"] = OUTSIDE_NETWORK
        chosen = _networks.choose_subnet(subnet, used)
        network_id = _networks.network_id(name)
        bridge = f"br-{network_id[:12]}"
        gateway = ipaddress.IPv4Interface((chosen[1], chosen.prefixlen))
        device = router_bridge(self.host, bridge, gateway, mtu=MTU, nf_call_iptables=False, reserved=(UPLINK,))
        network = Network(name, chosen, bridge, network_id, device)
        first = [] if self._isolated else [self._networks[DEFAULT_NETWORK]]
        _networks.install_bridge_rules(self.host, network, hairpin_table=HAIRPIN_TABLE, first_isolated=first)
        self._isolated = True
        self._networks[name] = network
        return network

    def container(
        self, name: str, *, network: Network | str = DEFAULT_NETWORK, aliases: Iterable[str] = ()
    ) -> Container:
        """``docker run --name name [--network N --network-alias A]``: a new container, ``eth0`` on ``network``.

        It gets the network's next address and a default route via its gateway.
        """
        self._check_open()
        _validate.check_name(name, what="container name", rule=_validate.NAMESPACE)
        if name in self._containers or name in ("host", "external"):
            raise ValueError(f"container name {name!r} is already used")
        joined = self._network(network)
        checked = self._aliases(aliases, joined)
        address = joined._allocate()
        ns = Container(name, ip=address, kill_grace=self.kill_grace)
        self._adopt(ns)
        self._attach(ns, joined, address, checked, default_route=True)
        self._containers[name] = ns
        resolver.register(handle_of(ns).inode, ns._in_process_lookup)
        return ns

    def connect(self, container: Container | str, network: Network | str, *, aliases: Iterable[str] = ()) -> IPv4:
        """``docker network connect [--alias A] network container``: a new interface (``eth1``, ...) on ``network``.

        Returns the container's address there.  Names on the network resolve
        from the container, and its name and aliases from the network's
        containers, in the next answer.
        """
        self._check_open()
        target = self._container(container)
        joined = self._network(network)
        if joined.name in target.networks:
            raise ValueError(f"container {target.name!r} is already connected to network {joined.name!r}")
        checked = self._aliases(aliases, joined)
        address = joined._allocate()
        self._attach(target, joined, address, checked, default_route=False)
        return address

    # -- published ports -------------------------------------------------------------------------

    def publish(
        self,
        container: Container | str,
        *,
        host_port: int,
        container_port: int,
        proto: Literal["tcp", "udp"] = "tcp",
        host_ip: str | IPv4 | None = None,
    ) -> PublishedPort:
        """``docker run -p [host_ip:]host_port:container_port/proto``: the container reachable at the host port.

        Without ``host_ip`` (or ``0.0.0.0``) on every address of the host,
        127.0.0.1 excepted; with ``host_ip=host.ip`` on that address only;
        with ``host_ip="127.0.0.1"`` (any 127.x address) only for the host's
        own processes, at that address.  A host port already published (same
        protocol) or in use by a process in ``host`` raises ``ValueError``
        naming it; nothing is changed then.
        """
        self._check_open()
        target = self._container(container)
        _validate.port(host_port, "host_port")
        _validate.port(container_port, "container_port")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto {proto!r} is not 'tcp' or 'udp'")
        bound = _publish.host_address(host_ip, OUTSIDE_NETWORK[1])
        taken = self._published.get((proto, host_port))
        if taken is not None:
            raise ValueError(
                f"host port {host_port}/{proto} is already allocated: published to container "
                f"{taken.container.name!r} port {taken.container_port}"
            )
        reservation = _publish.reserve(self.host, host_port, proto, bound)
        try:
            if bound is not None and bound in _publish.LOOPBACK:
                self._route_localnet(target)
            with handle_of(self.host).entered():
                table = _rules.port_forward(host_port, target.ip, container_port, proto=proto, host_addr=bound)
        except BaseException:
            reservation.close()
            raise
        address = (str(self.host.ip if bound is None else bound), host_port)
        published = PublishedPort(
            target,
            host_port,
            container_port,
            proto,
            address,
            self,
            table,
            reservation,
            None if bound is None else str(bound),
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
        for container in self._containers.values():
            resolver.unregister(handle_of(container).inode)
            container._stop_dns()
        try:
            close_all(self._owned)
        finally:
            for container in self._containers.values():
                container._close_files()

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

    def _network(self, network: object) -> Network:
        if isinstance(network, Network) and self._networks.get(network.name) is network:
            return network
        if isinstance(network, str) and network in self._networks:
            return self._networks[network]
        name = getattr(network, "name", network)
        if name in RESERVED_NETWORKS:
            raise ValueError(f"network {name!r} (Docker's {name} networking) is not modelled")
        raise ValueError(f"network {name!r} is not a network of this host (there are {', '.join(self._networks)})")

    @staticmethod
    def _aliases(aliases: Iterable[str], network: Network) -> tuple[str, ...]:
        if isinstance(aliases, (str, bytes)):
            raise ValueError(f"aliases {aliases!r} must be a sequence of names, not one string")
        checked = tuple(aliases)
        if checked and not network.user_defined:
            raise ValueError(
                f"aliases {list(checked)!r}: network-scoped aliases are supported only on user-defined networks"
            )
        for alias in checked:
            _validate.check_name(alias, what="alias", rule=_validate.HOST)
        return checked

    def _attach(
        self, ns: Container, network: Network, address: IPv4, aliases: tuple[str, ...], *, default_route: bool
    ) -> None:
        """Plug ``ns`` into ``network``'s bridge as its next ``eth<k>``, then publish its names there."""
        ifname = f"eth{len(ns.networks)}"
        interface = ipaddress.IPv4Interface((address, network.subnet.prefixlen))
        port = f"veth{next(self._port_numbers)}"
        plug(network._device, [Plug(ns, ifname, [interface], port=port)], mtu=MTU)
        if default_route:
            gateway = network.gateway
            doing = f"adding the default route via {gateway} in {ns.name!r}"
            handle_of(ns).execute([_rtnl.new_route(ipaddress.IPv4Network("0.0.0.0/0"), via=gateway, doing=doing)])
        ns._joined(network, address, aliases)
        network._join(ns.name, aliases, address)

    def _build_host(self) -> Namespace:
        host = _Addressed("host", ip=OUTSIDE_NETWORK[1], kill_grace=self.kill_grace)
        self._adopt(host)
        sysctl.settle(host, HOST_SYSCTLS)
        gateway = ipaddress.IPv4Interface((DOCKER_NETWORK[1], DOCKER_NETWORK.prefixlen))
        docker0 = router_bridge(host, DOCKER_BRIDGE, gateway, mtu=MTU, nf_call_iptables=False, reserved=(UPLINK,))
        network_id = _networks.network_id(DEFAULT_NETWORK)
        self._networks[DEFAULT_NETWORK] = Network(DEFAULT_NETWORK, DOCKER_NETWORK, DOCKER_BRIDGE, network_id, docker0)
        _networks.install_nat_tables(host, DOCKER_NETWORK, DOCKER_BRIDGE, hairpin_table=HAIRPIN_TABLE)
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

    def _route_localnet(self, target: Container) -> None:
        """What DNAT from 127.0.0.1 to ``target`` needs on its bridge: route_localnet and a masquerade."""
        bridge = self._networks[next(iter(target.networks))].bridge  # target.ip is on its first network
        if bridge in self._localnet_bridges:
            return
        sysctl.settle(self.host, [(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet", "1")])
        _networks.install_loopback_masquerade(self.host, bridge)
        self._localnet_bridges.add(bridge)

    def _unpublish(self, published: PublishedPort) -> None:
        self._check_open()
        if self._published.get((published.proto, published.host_port)) is not published:
            return
        with handle_of(self.host).entered():
            published._table.remove()
        published._reservation.close()
        del self._published[(published.proto, published.host_port)]
