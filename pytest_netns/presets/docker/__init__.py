"""Docker networking in namespaces: ``DockerHost``.

What ``dockerd`` builds for containers on the default ``bridge`` network and
on user-defined bridge networks, made with netlink only (no Docker daemon, no
binaries).  It works without pytest; ``netns_docker`` is the function-scoped
fixture::

    with DockerHost() as docker:
        app = docker.network("app")
        db = docker.container("db", network=app, aliases=["postgres"])
        web = docker.container("web", network=app)
        web.popen(["python3", "-m", "http.server", "80"])   # it finds "postgres" by name
        docker.publish(web, host_port=8080, container_port=80)
        with docker.external:
            urllib.request.urlopen(f"http://{docker.host.ip}:8080/")

The network:

* ``host``: the Docker host.  ``docker0`` is a bridge with 172.17.0.1/16;
  ``eth0`` is its outside interface, ``host.ip`` = 203.0.113.1/24.
  Forwarding is on.
* ``external``: a machine on the outside network (``eth0`` 203.0.113.2/24,
  ``external.ip``), with no route to the containers' networks: it reaches
  containers only through published ports.
* ``container(name)``: ``eth0`` is one end of a veth whose other end is a
  port of ``docker0`` (``veth2``, ``veth3``, ...); addresses 172.17.0.2, .3,
  ... in creation order, default route via 172.17.0.1.
* ``network(name, subnet=None)``: a user-defined network, its own bridge
  ``br-<id[:12]>`` on the host with the gateway (the subnet's first address).
  Subnets come from Docker's default pools in order: 172.18.0.0/16,
  172.19.0.0/16, ... 172.31.0.0/16, then 192.168.0.0/20, 192.168.16.0/20, ...,
  skipping any a network already has.  Names follow Docker's rule
  ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``; ``bridge``, ``host`` and ``none`` are
  Docker's own.  ``container(name, network=, aliases=)`` creates a container
  on it, ``connect(container, network, aliases=)`` adds an interface
  (``eth1``, ``eth2``, ...) with the network's next address.
* Embedded DNS: a container on a user-defined network has ``nameserver
  127.0.0.11`` and ``options ndots:0`` in the resolv.conf its processes see,
  and a DNS server on 127.0.0.11:53 (UDP and TCP) inside it that answers the
  names and aliases of the containers sharing a network with it
  (case-insensitive, also as ``<name>.<network>``) with their address on the
  shared network, PTR for those addresses, NODATA for ``AAAA``, and NXDOMAIN
  at once for anything else (there is no upstream).  ``container.resolve`` and
  in-process code inside the container (``with container:``, ``call``) use
  it too.  The default bridge resolves no container names.
* Isolation: nothing is routed from one bridge to another (Docker's
  ``DOCKER-ISOLATION`` chains): containers on different networks reach each
  other only through a network they share.
* Outbound NAT: ``ip saddr <subnet> oifname != <bridge> masquerade`` on the
  host for each network (Docker's POSTROUTING rule): what containers send out
  leaves with ``host.ip``.
* ``publish(container, host_port=, container_port=, proto=, host_ip=)``:
  new connections to any of the host's own addresses at ``host_port`` (from
  outside, from containers, or from the host itself; not to 127.0.0.1) are
  DNAT-ed to the container's ``container_port`` at its ``ip`` (Docker's
  ``-m addrtype --dst-type LOCAL`` DNAT rule).  From outside and from the
  host the source address is kept: the container sees the external host's
  address.  A container reaching a published port through the host's address
  from the same network is seen coming from the gateway, as with Docker's
  default userland proxy: the host masquerades a DNAT-ed connection that goes
  back onto the bridge, so that the reply returns through the host and is
  translated back.  A container on another network is dropped by the
  isolation rules.  Like docker-proxy, the host port is also bound in the host
  namespace, so the port is really taken there: a second ``publish`` of the
  same port and protocol, or one of a port a process in ``host`` already
  uses, raises ``ValueError`` naming the port (Docker's "port is already
  allocated"), and a later process in ``host`` cannot bind it either.
  ``host_ip="127.0.0.1"`` (``-p 127.0.0.1:8080:80``) publishes to the host's
  own processes at 127.0.0.1 only: an output-hook DNAT, with
  ``route_localnet`` on the container's bridge and a masquerade of
  127.0.0.0/8 onto it (as dockerd does without the userland proxy); the
  container sees the gateway.  ``host_ip=host.ip`` binds that address only.

Kernel settings set explicitly on the host namespace (never on the machine):
``ip_forward=1``; ``rp_filter=0``; bridged frames do not pass netfilter
(``net.bridge.bridge-nf-call-iptables=0`` and each bridge's own option off),
so the model works the same whether the kernel has ``br_netfilter`` loaded
or not: container egress, published ports and isolation are routed, and
containers reach each other by IP over a plain bridge.  Keeping the source
address of a container reaching another container's published port (dockerd
``--userland-proxy=false``) would need ``br_netfilter``: the DNAT-ed
connection's reply is bridged straight between the two containers, and only
bridged frames passing the IP hooks get translated back.  No link has an
IPv6 address.  Not modelled: IPv6 and ``AAAA`` records, the ``host``,
``none``, macvlan and overlay drivers, ``docker network disconnect`` and
removing networks or containers, upstream DNS servers (the embedded DNS
forwards nothing), container IDs and hostnames as DNS names, ``--link``,
``--internal`` networks, ``--icc=false``, the userland proxy process itself.
"""

from __future__ import annotations

from .host import DOCKER_NETWORK, OUTSIDE_NETWORK, DockerHost, PublishedPort
from .host import HAIRPIN_TABLE as HAIRPIN_TABLE
from .members import Container
from .networks import Network

__all__ = ["DOCKER_NETWORK", "OUTSIDE_NETWORK", "Container", "DockerHost", "Network", "PublishedPort"]
