"""Docker's default bridge network (pytest_netns.presets.docker), shown with real traffic.

Servers are threads of the test process listening inside the namespaces
(``Responder``, tests/_servers.py): each TCP connection (or UDP datagram)
is answered with "<label> <peer address>", so a test sees who served it
and whom the server saw.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import warnings

import pytest
from _servers import Responder, ask

from pytest_netns import Namespace, NetnsError
from pytest_netns._kernel import nft as _nft
from pytest_netns._kernel import rtnl as _rtnl
from pytest_netns._kernel.handle import handle_of
from pytest_netns.presets.docker import HAIRPIN_TABLE, Container, DockerHost

#: Present where br_netfilter is loaded (built in on some kernels, a module on Debian's and Ubuntu's).
BRIDGE_NF_CALL_IPTABLES = "/proc/sys/net/bridge/bridge-nf-call-iptables"


def default_route(ns: Namespace) -> str | None:
    body = _rtnl.RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
    for msg in handle_of(ns).rtnl.dump(_rtnl.RTM_GETROUTE, body, "listing routes"):
        if msg["dst_len"] == 0 and msg.get_attr("RTA_TABLE") == _rtnl.RT_TABLE_MAIN:
            return msg.get_attr("RTA_GATEWAY")  # type: ignore[no-any-return]
    return None


def bridge_netfilter(docker: DockerHost) -> tuple[str | None, int]:
    """(bridge-nf-call-iptables in the host, or None where br_netfilter is absent; docker0's own nf_call_iptables)."""
    sysctl = None
    if os.path.exists(BRIDGE_NF_CALL_IPTABLES):
        sysctl = docker.host.sysctl("net.bridge.bridge-nf-call-iptables")
    [link] = json.loads(docker.host.run(["ip", "-d", "-j", "link", "show", "docker0"]).stdout)
    return sysctl, link["linkinfo"]["info_data"]["nf_call_iptables"]


def set_bridge_netfilter(docker: DockerHost, on: bool) -> None:
    """Bridged IPv4 frames pass netfilter (on) or not: the namespace's sysctl and docker0's own switch."""
    docker.host.sysctl("net.bridge.bridge-nf-call-iptables", int(on))
    docker.host.run(["ip", "link", "set", "docker0", "type", "bridge", "nf_call_iptables", str(int(on))])


def test_layout_host_docker0_outside_network_and_containers(netns_docker: DockerHost) -> None:
    docker = netns_docker
    web, db = docker.container("web"), docker.container("db")
    assert isinstance(web, Container) and isinstance(web, Namespace)
    assert docker.host.addresses("docker0") == [ipaddress.ip_interface("172.17.0.1/16")]
    assert docker.host.addresses("eth0") == [ipaddress.ip_interface(f"{docker.host.ip}/24")]
    assert str(docker.host.ip) == "203.0.113.1" and str(docker.external.ip) == "203.0.113.2"
    assert docker.external.addresses("eth0") == [ipaddress.ip_interface("203.0.113.2/24")]
    assert (str(web.ip), str(db.ip)) == ("172.17.0.2", "172.17.0.3")
    for container in (web, db):
        assert container.interfaces() == ["lo", "eth0"]
        assert container.addresses("eth0") == [ipaddress.ip_interface(f"{container.ip}/16")]
        assert default_route(container) == "172.17.0.1"
    assert docker.host.sysctl("net.ipv4.ip_forward") == "1"
    # Bridged frames skip netfilter, as on a kernel without br_netfilter: the same model on every kernel.
    sysctl, own_switch = bridge_netfilter(docker)
    assert sysctl in (None, "0") and own_switch == 0
    assert docker["web"] is web and docker.containers == [web, db]
    # docker0's ports are the containers' veth peers.
    assert {"veth2", "veth3"} <= set(docker.host.interfaces())


def test_containers_go_out_masqueraded_and_talk_to_each_other_directly(netns_docker: DockerHost, servers) -> None:
    docker = netns_docker
    web, db = docker.container("web"), docker.container("db")
    servers += [Responder(docker.external, 443), Responder(db, 5432)]
    assert ask(web, (str(docker.external.ip), 443)) == ("external", str(docker.host.ip))
    assert ask(web, (str(db.ip), 5432)) == ("db", str(web.ip))  # same bridge: no NAT
    with docker.external:  # the outside has no route to the containers
        sock = socket.socket()
    with sock, pytest.raises(OSError) as info:
        sock.settimeout(1)
        sock.connect((str(db.ip), 5432))
    assert info.value.errno == errno.ENETUNREACH


def test_published_port_reaches_the_container_from_outside_the_host_and_other_containers(
        netns_docker: DockerHost, servers) -> None:
    docker = netns_docker
    web, other = docker.container("web"), docker.container("other")
    servers.append(Responder(web, 80))
    published = docker.publish(web, host_port=8080, container_port=80)
    assert published.address == (str(docker.host.ip), 8080)
    assert docker.published == [published]
    # From outside: the container sees the external host's own address (DNAT only).
    assert ask(docker.external, published.address) == ("web", str(docker.external.ip))
    # From the host itself.
    assert ask(docker.host, published.address) == ("web", str(docker.host.ip))
    # From containers through the host's addresses, the container's own included: as with
    # Docker's default userland proxy, the container sees the gateway.
    for client in (other, web):
        assert ask(client, published.address) == ("web", "172.17.0.1")
        assert ask(client, ("172.17.0.1", 8080)) == ("web", "172.17.0.1")


def test_every_path_works_where_bridged_frames_skip_netfilter(netns_docker: DockerHost, servers) -> None:
    """A kernel without br_netfilter (Debian's own, with nothing that loaded it) never passes bridged frames
    to netfilter: egress, published ports and container-to-container traffic must not need it."""
    docker = netns_docker
    web, other = docker.container("web"), docker.container("other")
    if os.path.exists(BRIDGE_NF_CALL_IPTABLES):  # where it is absent there is nothing to switch off
        set_bridge_netfilter(docker, False)
    servers += [Responder(web, 80), Responder(docker.external, 443), Responder(web, 53, proto="udp")]
    published = docker.publish(web, host_port=8080, container_port=80)
    dns = docker.publish(web, host_port=53, container_port=53, proto="udp")
    assert ask(other, (str(docker.external.ip), 443)) == ("external", str(docker.host.ip))  # egress, masqueraded
    assert ask(docker.external, published.address) == ("web", str(docker.external.ip))
    assert ask(docker.external, dns.address, proto="udp") == ("web", str(docker.external.ip))
    assert ask(other, (str(web.ip), 80)) == ("web", str(other.ip))  # plainly bridged
    assert ask(other, published.address, timeout=2) == ("web", "172.17.0.1")
    assert ask(other, dns.address, proto="udp", timeout=2) == ("web", "172.17.0.1")
    assert ask(web, published.address, timeout=2) == ("web", "172.17.0.1")


def test_keeping_the_source_of_a_container_reaching_a_published_port_needs_br_netfilter(
        netns_docker: DockerHost, servers) -> None:
    """What the host's hairpin masquerade is for (dockerd --userland-proxy=false keeps the source instead)."""
    docker = netns_docker
    web, other = docker.container("web"), docker.container("other")
    servers.append(Responder(web, 80))
    published = docker.publish(web, host_port=8080, container_port=80)
    with handle_of(docker.host).entered():
        _nft.NftTable("inet", HAIRPIN_TABLE).remove()
    # The DNAT-ed request is routed by the host, but the reply is bridged straight from web to
    # other, never translated back: other drops (or resets) a reply from web's own address.
    with pytest.raises((TimeoutError, ConnectionRefusedError, ConnectionResetError)):
        ask(other, published.address, timeout=1.0)
    assert ask(docker.external, published.address)[0] == "web"  # routed: never needed it
    if not os.path.exists(BRIDGE_NF_CALL_IPTABLES):
        pytest.skip(f"br_netfilter is not loaded ({BRIDGE_NF_CALL_IPTABLES} is missing): "
                    "the half showing that it translates the bridged reply back cannot run")
    set_bridge_netfilter(docker, True)
    assert ask(other, published.address) == ("web", str(other.ip))


def test_publishing_a_taken_host_port_is_refused_naming_the_port(netns_docker: DockerHost, servers) -> None:
    docker = netns_docker
    web, api = docker.container("web"), docker.container("api")
    servers += [Responder(web, 80), Responder(api, 8000), Responder(api, 5353, proto="udp")]
    first = docker.publish(web, host_port=8080, container_port=80)
    with pytest.raises(ValueError, match=r"host port 8080/tcp is already allocated.*'web'"):
        docker.publish(api, host_port=8080, container_port=8000)
    assert ask(docker.external, first.address)[0] == "web"  # the refused publish changed nothing
    # The same number in the other protocol is another port.
    dns = docker.publish(api, host_port=8080, container_port=5353, proto="udp")
    assert ask(docker.external, dns.address, proto="udp") == ("api", str(docker.external.ip))
    # Like docker-proxy, a published port is bound on the host: a process there cannot take it...
    with docker.host:
        squatter = socket.socket()
    with squatter, pytest.raises(OSError) as info:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("0.0.0.0", 8080))
    assert info.value.errno == errno.EADDRINUSE
    # ...and a port a host process already uses cannot be published.
    with docker.host:
        busy = socket.create_server(("0.0.0.0", 9090))
    with busy, pytest.raises(ValueError, match="host port 9090/tcp is already in use"):
        docker.publish(api, host_port=9090, container_port=8000)
    # Unpublishing frees the port for another container.
    first.remove()
    with pytest.raises(ConnectionRefusedError):
        ask(docker.external, first.address)
    second = docker.publish(api, host_port=8080, container_port=8000)
    assert ask(docker.external, second.address)[0] == "api"


def test_bad_input_is_refused(netns_docker: DockerHost) -> None:
    docker = netns_docker
    web = docker.container("web")
    for kwargs in ({"host_port": 0, "container_port": 80}, {"host_port": 80, "container_port": 65536},
                   {"host_port": 80, "container_port": 80, "proto": "sctp"}, {"host_port": True, "container_port": 80}):
        with pytest.raises(ValueError):
            docker.publish(web, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'nope' is not a container"):
        docker.publish("nope", host_port=80, container_port=80)
    for bad in ("", "a/b", "web", "host"):
        with pytest.raises(ValueError, match="container name"):
            docker.container(bad)
    assert docker.published == [] and len(docker.namespaces) == 3


def test_docker_host_works_without_pytest_and_tears_everything_down() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reservation socket left open would be a leak warning
        with DockerHost() as docker:
            web = docker.container("web")
            docker.publish(web, host_port=8080, container_port=80)
            proc = web.popen(["sleep", "60"])
            namespaces = docker.namespaces
    assert docker.closed and all(ns.closed for ns in namespaces)
    assert proc.poll() is not None
    with pytest.raises(NetnsError, match="torn down"):
        docker.container("again")


def test_building_and_publishing_enter_no_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's own kernel calls (bridge, NAT, publishing) use its fd: nothing is registered with the watchdog.

    A registered namespace costs a scan of /proc for its processes at teardown.
    """
    from pytest_netns._kernel.watchdog import client

    registered: list[int] = []
    monkeypatch.setattr(client, "register", registered.append)
    with DockerHost() as docker:
        web = docker.container("web")
        docker.container("db")
        docker.publish(web, host_port=8080, container_port=80).remove()
        docker.publish(web, host_port=8080, container_port=80)
        assert registered == []
        web.run(["true"])  # code that runs inside does register: the probe sees it
        assert registered == [web.inode]
