"""Tests for pytest_netns._kernel.nft, its recipes (_net.rules) and pytest_netns._kernel.tc, with real traffic.

Self-contained: the namespaces, veth pairs and servers are built by the
helpers below (pyroute2 + ctypes), not by any pytest_netns fixture.  Run
the whole session inside a private network namespace::

    unshare --net -- python3 -m pytest tests/test_nft_tc.py

Statistical checks use binomial 6-sigma bounds, so they do not flake.
The rate tests take ~2.5 s each and are marked ``slow``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import math
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from pyroute2 import IPRoute

from pytest_netns._kernel import nft as _nft
from pytest_netns._kernel import tc as _tc
from pytest_netns._net import rules as _rules

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_IFA_F_NODAD = 0x02
_NUD_PERMANENT = 0x80
_SO_RCVBUFFORCE = 33  # not exported by Python's socket module


# --------------------------------------------------------------------------
# Namespace helpers (test-only)
# --------------------------------------------------------------------------


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Netns:
    """An anonymous network namespace held by an fd (freed on close)."""

    def __init__(self) -> None:
        box: dict[str, object] = {}

        def make() -> None:  # on a throwaway thread: ours never moves
            try:
                if _libc.unshare(_CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
                box["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            except BaseException as error:
                box["error"] = error

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        self.fd: int = box["fd"]  # type: ignore[assignment]

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Switch the calling thread into the namespace, and back."""
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(self.fd)
            yield
        finally:
            _setns(saved)
            os.close(saved)

    def call(self, func: Callable[..., T], *args: object, **kwargs: object) -> T:
        with self.entered():
            return func(*args, **kwargs)

    def sysctl(self, path: str, value: str) -> None:
        with self.entered(), open(f"/proc/sys/{path}", "w") as file:
            file.write(value)

    def ipr(self, func: Callable[[IPRoute], T]) -> T:
        """Run func(ipr) with an IPRoute made inside the namespace."""
        with self.entered(), IPRoute() as ipr:
            return func(ipr)

    def close(self) -> None:
        os.close(self.fd)


def _wait_up(ns: Netns, ifname: str) -> None:
    def wait(ipr: IPRoute) -> None:
        index = ipr.link_lookup(ifname=ifname)[0]
        deadline = time.monotonic() + 5
        while ipr.get_links(index)[0].get_attr("IFLA_OPERSTATE") != "UP":
            assert time.monotonic() < deadline, f"{ifname} never came up"
            time.sleep(0.001)

    ns.ipr(wait)


def _wait_solicited_nodes(ns: Netns, ifname: str, addrs: list[str]) -> None:
    """Wait until ifname has joined the solicited-node group of each IPv6
    address: until then a neighbour solicitation for it is lost and costs
    a 1 s retransmission (see DESIGN.md)."""
    wanted = set()
    for cidr in addrs:
        address = ipaddress.ip_address(cidr.split("/")[0])
        if address.version == 6:
            wanted.add("ff0200000000000000000001ff" + address.packed[-3:].hex())
    deadline = time.monotonic() + 5
    while wanted:
        with ns.entered(), open("/proc/thread-self/net/igmp6") as file:
            joined = {line.split()[2] for line in file if line.split()[1] == ifname}
        wanted -= joined
        assert time.monotonic() < deadline, f"{ifname} never joined {wanted}"
        time.sleep(0.001)


def _addresses(ns: Netns, ifname: str, addrs: list[str]) -> None:
    def configure(ipr: IPRoute) -> None:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=index, state="up")
        for cidr in addrs:
            address, prefix = cidr.split("/")
            ipr.addr(
                "add",
                index=index,
                address=address,
                prefixlen=int(prefix),
                flags=_IFA_F_NODAD,
            )

    ns.ipr(configure)


def veth(a: Netns, a_if: str, a_addrs: list[str], b: Netns, b_if: str, b_addrs: list[str]) -> None:
    """A veth pair born with one end in each namespace, addressed and UP.

    The a end gets a distinct ifindex so that carrier comes up in ~ms
    instead of ~1 s (see DESIGN.md).
    """

    def create(ipr: IPRoute) -> None:
        ipr.link(
            "add",
            ifname=a_if,
            kind="veth",
            index=10 + len(ipr.get_links()),
            peer={"ifname": b_if, "net_ns_fd": b.fd},
        )

    a.ipr(create)
    _addresses(a, a_if, a_addrs)
    _addresses(b, b_if, b_addrs)
    _wait_up(a, a_if)
    _wait_up(b, b_if)
    _wait_solicited_nodes(a, a_if, a_addrs)
    _wait_solicited_nodes(b, b_if, b_addrs)


def route(ns: Netns, dst: str, gateway: str) -> None:
    ns.ipr(lambda ipr: ipr.route("add", dst=dst, gateway=gateway))


def lladdr(ns: Netns, ifname: str) -> str:
    return ns.ipr(lambda ipr: ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS"))


def static_neighbour(ns: Netns, ifname: str, address: str, mac: str) -> None:
    """A permanent ARP entry: a lossy link must not lose the ARP exchange."""

    def add(ipr: IPRoute) -> None:
        ipr.neigh(
            "add",
            dst=address,
            lladdr=mac,
            state=_NUD_PERMANENT,
            ifindex=ipr.link_lookup(ifname=ifname)[0],
        )

    ns.ipr(add)


class TagServer:
    """TCP server in a namespace answering "<tag> <peer address>" and closing."""

    def __init__(self, ns: Netns, address: str, port: int, tag: str) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with ns.entered():  # the socket belongs to the namespace it was made in
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(128)
        self.tag = tag
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"{self.tag} {peer[0]}".encode())

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def ask(ns: Netns, address: str, port: int, timeout: float = 3.0) -> tuple[str, str]:
    """Connect from ns to address:port; return the server's (tag, peer)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with ns.entered():
        sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        data = b""
        while chunk := sock.recv(256):
            data += chunk
    tag, peer = data.decode().split()
    return tag, peer


def within_6_sigma(count: int, trials: int, p: float) -> bool:
    mean = trials * p
    return abs(count - mean) <= 6 * math.sqrt(trials * p * (1 - p))


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def namespaces() -> Iterator[Callable[[], Netns]]:
    """A factory of fresh namespaces, all closed at teardown."""
    made: list[Netns] = []

    def factory() -> Netns:
        made.append(Netns())
        return made[-1]

    yield factory
    for ns in made:
        ns.close()


@pytest.fixture
def routed(namespaces: Callable[[], Netns]) -> dict[str, Netns]:
    """client --- router --- server, IPv4 and IPv6.

    client 10.0.1.2 / fd01::2 (default routes via the router)
    router 10.0.1.1 / fd01::1 on "rc", 10.0.2.1 / fd02::1 on "rs"
    server 10.0.2.2-4 / fd02::2 on "s0", *no route back* to the client.
    """
    client, router, server = namespaces(), namespaces(), namespaces()
    for ns in (client, router, server):
        _addresses(ns, "lo", [])  # up: local connections go through lo
    veth(router, "rc", ["10.0.1.1/24", "fd01::1/64"], client, "c0", ["10.0.1.2/24", "fd01::2/64"])
    veth(
        router,
        "rs",
        ["10.0.2.1/24", "fd02::1/64"],
        server,
        "s0",
        ["10.0.2.2/24", "10.0.2.3/24", "10.0.2.4/24", "fd02::2/64"],
    )
    route(client, "default", "10.0.1.1")
    route(client, "::/0", "fd01::1")
    router.sysctl("net/ipv4/ip_forward", "1")
    router.sysctl("net/ipv6/conf/all/forwarding", "1")
    return {"client": client, "router": router, "server": server}


@pytest.fixture
def pair(namespaces: Callable[[], Netns]) -> tuple[Netns, Netns]:
    """a (10.0.0.1 on "va") --- b (10.0.0.2 on "vb")."""
    a, b = namespaces(), namespaces()
    veth(a, "va", ["10.0.0.1/24"], b, "vb", ["10.0.0.2/24"])
    return a, b


@pytest.fixture
def servers() -> Iterator[Callable[..., TagServer]]:
    made: list[TagServer] = []

    def factory(*args: object) -> TagServer:
        made.append(TagServer(*args))  # type: ignore[arg-type]
        return made[-1]

    yield factory
    for server in made:
        server.close()


# --------------------------------------------------------------------------
# _nft: validation (no kernel needed)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, bad",
    [
        (lambda: _rules.masquerade("an-interface-name-too-long"), "an-interface-name"),
        (lambda: _rules.masquerade(src="10.0.0.1/24"), "10.0.0.1/24"),
        (lambda: _rules.masquerade(not_oifname="a/b"), "a/b"),
        (lambda: _rules.dnat_service("web", "10.96.0.300", 80, []), "10.96.0.300"),
        (lambda: _rules.dnat_service("we b", "10.96.0.1", 80, []), "we b"),
        (lambda: _rules.dnat_service("web", "10.96.0.1", 0, []), "0"),
        (lambda: _rules.dnat_service("web", "10.96.0.1", 80, [("fd00::1", 80)]), "fd00::1"),
        (lambda: _rules.dnat_service("web", "10.96.0.1", 80, [("10.0.0.1", 70000)]), "70000"),
        (lambda: _rules.dnat_service("web", "10.96.0.1", 80, ["10.0.0.1"]), "10.0.0.1"),
        (lambda: _rules.dnat_service("web", "10.96.0.1", 80, [], proto="sctp"), "sctp"),
        (lambda: _rules.dnat_service("web", "10.96.0.1", 80, [], spread="hash"), "hash"),
        (lambda: _rules.port_forward(8080, "container"), "container"),
        (lambda: _rules.port_forward(8080, "10.0.0.2", host_addr="fd00::1"), "fd00::1"),
        (lambda: _rules.port_forward(True, "10.0.0.2"), "True"),
        (lambda: _rules.drop_ingress("lo", 1.5), "1.5"),
        (lambda: _rules.drop_ingress("lo", float("nan")), "nan"),
        (lambda: _nft.delete_table("arp6", "t"), "arp6"),
    ],
)
def test_nft_rejects_bad_values_naming_them(call: Callable[[], object], bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(bad)):
        call()


def test_nft_kernel_errors_name_the_request(namespaces: Callable[[], Netns]) -> None:
    ns = namespaces()
    with pytest.raises(_nft.NftError) as info:
        ns.call(_nft.delete_table, "inet", "missing", missing_ok=False)
    assert info.value.errno == 2
    assert "delete table inet missing" in str(info.value)
    ns.call(_nft.delete_table, "inet", "missing")  # missing_ok by default


# --------------------------------------------------------------------------
# _nft: masquerade
# --------------------------------------------------------------------------


def test_masquerade_ipv4_server_sees_router(routed: dict[str, Netns], servers) -> None:
    client, router, server = routed["client"], routed["router"], routed["server"]
    servers(server, "10.0.2.2", 8000, "s")
    # The server has no route back to 10.0.1.0/24: without NAT, no answer.
    with pytest.raises(OSError):
        ask(client, "10.0.2.2", 8000, timeout=0.3)

    table = router.call(_rules.masquerade, "rs", src="10.0.1.0/24")
    assert table == _nft.NftTable("inet", _rules.NAT_TABLE)
    assert ask(client, "10.0.2.2", 8000) == ("s", "10.0.2.1")

    router.call(table.remove)
    assert router.call(_nft.list_tables) == []


def test_masquerade_ipv6_and_every_family(routed: dict[str, Netns], servers) -> None:
    client, router, server = routed["client"], routed["router"], routed["server"]
    servers(server, "fd02::2", 8000, "s6")
    servers(server, "10.0.2.2", 8000, "s4")
    router.call(_rules.masquerade, "rs")  # no src: IPv4 and IPv6 alike
    router.call(_rules.masquerade, "rs")  # a second rule in the same chain
    assert ask(client, "fd02::2", 8000) == ("s6", "fd02::1")
    assert ask(client, "10.0.2.2", 8000) == ("s4", "10.0.2.1")


def test_masquerade_not_oifname_excludes(routed: dict[str, Netns], servers) -> None:
    client, router, server = routed["client"], routed["router"], routed["server"]
    servers(server, "10.0.2.2", 8000, "s")
    router.call(_rules.masquerade, src="10.0.1.0/24", not_oifname="rs")
    with pytest.raises(OSError):
        ask(client, "10.0.2.2", 8000, timeout=0.3)


# --------------------------------------------------------------------------
# _nft: DNAT services and published ports
# --------------------------------------------------------------------------

BACKENDS = [("10.0.2.2", 8001), ("10.0.2.3", 8002), ("10.0.2.4", 8003)]


@pytest.fixture
def service_net(routed: dict[str, Netns], servers) -> dict[str, Netns]:
    """routed + three tagged backends, a route back, a route to the VIPs."""
    server, router = routed["server"], routed["router"]
    for index, (address, port) in enumerate(BACKENDS, start=1):
        servers(server, address, port, f"b{index}")
    route(server, "10.0.1.0/24", "10.0.2.1")
    # Locally opened connections need *a* route to the VIP before the
    # output hook (kube-proxy relies on the default route for this).
    route(router, "10.96.0.0/16", "10.0.2.2")
    return routed


def test_dnat_service_round_robin_is_exact(service_net: dict[str, Netns]) -> None:
    client, router = service_net["client"], service_net["router"]
    router.call(_rules.dnat_service, "web", "10.96.0.10", 80, BACKENDS, spread="round_robin")
    tags = [ask(client, "10.96.0.10", 80)[0] for _ in range(60)]
    assert Counter(tags) == {"b1": 20, "b2": 20, "b3": 20}
    assert tags[:3] == ["b1", "b2", "b3"] and tags[3:6] == ["b1", "b2", "b3"]


def test_dnat_service_random_spreads_fairly(service_net: dict[str, Netns]) -> None:
    client, router = service_net["client"], service_net["router"]
    router.call(_rules.dnat_service, "web", "10.96.0.10", 80, BACKENDS)
    trials = 600
    counts = Counter(ask(client, "10.96.0.10", 80)[0] for _ in range(trials))
    assert set(counts) == {"b1", "b2", "b3"}
    for tag, count in counts.items():
        assert within_6_sigma(count, trials, 1 / 3), (tag, counts)
    # The client's own address reaches the backend: DNAT only, no SNAT.
    assert ask(client, "10.96.0.10", 80)[1] == "10.0.1.2"


def test_dnat_service_output_chain_and_replace(service_net: dict[str, Netns]) -> None:
    client, router = service_net["client"], service_net["router"]
    router.call(_rules.dnat_service, "web", "10.96.0.10", 80, BACKENDS, spread="round_robin")
    # Connections the router opens itself go through the output chain.
    assert {ask(router, "10.96.0.10", 80)[0] for _ in range(6)} == {"b1", "b2", "b3"}

    # Replace the backend set: only b2 and b3 are picked from now on.
    router.call(_rules.dnat_service, "web", "10.96.0.10", 80, BACKENDS[1:])
    seen = Counter(ask(client, "10.96.0.10", 80)[0] for _ in range(40))
    assert set(seen) == {"b2", "b3"}
    assert len([t for t in router.call(_nft.list_tables) if "svc_web" in t[1]]) == 1

    # No backends: refused at once (TCP reset), like kube-proxy.
    router.call(_rules.dnat_service, "web", "10.96.0.10", 80, [])
    with pytest.raises(ConnectionRefusedError):
        ask(client, "10.96.0.10", 80)

    router.call(_nft.NftTable("inet", "pytest_netns_svc_web").remove)
    assert router.call(_nft.list_tables) == []


def test_dnat_service_udp(service_net: dict[str, Netns]) -> None:
    client, router, server = (service_net[k] for k in ("client", "router", "server"))
    with server.entered():
        backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with backend:
        backend.bind(("10.0.2.3", 5353))
        router.call(_rules.dnat_service, "dns", "10.96.0.53", 53, [("10.0.2.3", 5353)], proto="udp")
        with client.entered():
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sender:
            sender.sendto(b"query", ("10.96.0.53", 53))
            backend.settimeout(3)
            data, peer = backend.recvfrom(64)
            assert (data, peer[0]) == (b"query", "10.0.1.2")
            backend.sendto(b"answer", peer)  # un-NATed back to the VIP
            sender.settimeout(3)
            answer, source = sender.recvfrom(64)
            assert (answer, source) == (b"answer", ("10.96.0.53", 53))

    # No backends: ICMP port unreachable, seen by a connected UDP socket.
    router.call(_rules.dnat_service, "dns", "10.96.0.53", 53, [], proto="udp")
    with client.entered():
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sender:
        sender.settimeout(3)
        sender.connect(("10.96.0.53", 53))
        sender.send(b"query")
        with pytest.raises(ConnectionRefusedError):
            sender.recv(64)


def test_dnat_service_ipv6(routed: dict[str, Netns], servers) -> None:
    client, router, server = routed["client"], routed["router"], routed["server"]
    servers(server, "fd02::2", 8001, "v1")
    servers(server, "fd02::2", 8002, "v2")
    route(server, "fd01::/64", "fd02::1")
    backends = [("fd02::2", 8001), ("fd02::2", 8002)]
    router.call(_rules.dnat_service, "web6", "fd96::10", 80, backends, spread="round_robin")
    answers = [ask(client, "fd96::10", 80) for _ in range(4)]
    assert answers == [("v1", "fd01::2"), ("v2", "fd01::2")] * 2


def test_port_forward_publishes_on_local_addresses(
    service_net: dict[str, Netns],
) -> None:
    client, router = service_net["client"], service_net["router"]
    table = router.call(_rules.port_forward, 8080, "10.0.2.2", 8001)
    assert table.name == "pytest_netns_fwd_tcp_8080"
    # From outside, to the router's address: prerouting.
    assert ask(client, "10.0.1.1", 8080) == ("b1", "10.0.1.2")
    # From the router itself, to one of its addresses: output.
    assert ask(router, "10.0.2.1", 8080)[0] == "b1"
    # Loopback is left alone (nothing listens on the router: refused).
    with pytest.raises(ConnectionRefusedError):
        ask(router, "127.0.0.1", 8080)
    # Traffic merely forwarded through the router is not published.
    with pytest.raises(ConnectionRefusedError):
        ask(client, "10.0.2.3", 8080)

    router.call(table.remove)
    with pytest.raises(ConnectionRefusedError):
        ask(client, "10.0.1.1", 8080)


def test_port_forward_host_addr(service_net: dict[str, Netns]) -> None:
    client, router = service_net["client"], service_net["router"]
    router.call(_rules.port_forward, 8080, "10.0.2.3", 8002, host_addr="10.0.1.1")
    assert ask(client, "10.0.1.1", 8080)[0] == "b2"
    with pytest.raises(ConnectionRefusedError):
        ask(router, "10.0.2.1", 8080)  # another local address: not published


# --------------------------------------------------------------------------
# _nft: probabilistic loss
# --------------------------------------------------------------------------


def _udp_delivery(a: Netns, b: Netns, count: int) -> int:
    """Send count datagrams a -> b:9000; return how many arrived."""
    with b.entered():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a.entered():
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        # Room for every datagram: socket overflow must not look like loss.
        receiver.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)
        receiver.bind(("10.0.0.2", 9000))
        for index in range(count):
            sender.sendto(index.to_bytes(4, "big"), ("10.0.0.2", 9000))
        received = 0
        receiver.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            while True:
                receiver.recv(16)
                received += 1
    return received


@pytest.fixture
def lossy_pair(pair: tuple[Netns, Netns]) -> tuple[Netns, Netns]:
    a, b = pair
    static_neighbour(a, "va", "10.0.0.2", lladdr(b, "vb"))
    return a, b


def test_drop_ingress_loses_p_and_removal_restores(
    lossy_pair: tuple[Netns, Netns],
) -> None:
    a, b = lossy_pair
    trials, p = 2000, 0.3
    table = b.call(_rules.drop_ingress, "vb", p)
    assert table == _nft.NftTable("netdev", "pytest_netns_loss_vb")
    lost = trials - _udp_delivery(a, b, trials)
    assert within_6_sigma(lost, trials, p), lost

    b.call(table.remove)
    assert _udp_delivery(a, b, trials) == trials
    b.call(table.remove)  # removing twice is fine


def test_drop_ingress_extremes_and_replace(lossy_pair: tuple[Netns, Netns]) -> None:
    a, b = lossy_pair
    b.call(_rules.drop_ingress, "vb", 1.0)
    assert _udp_delivery(a, b, 200) == 0
    b.call(_rules.drop_ingress, "vb", 0.0)  # replaces the table
    assert _udp_delivery(a, b, 200) == 200
    assert b.call(_nft.list_tables) == [("netdev", "pytest_netns_loss_vb")]


# --------------------------------------------------------------------------
# _tc: units
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, bits",
    [
        ("8mbit", 8_000_000),
        ("512kbit", 512_000),
        ("1gbit", 1_000_000_000),
        ("800kbit", 800_000),
        ("8MBIT", 8_000_000),
        ("2Kibit", 2048),
        ("1.5Mbit", 1_500_000),
        ("9600", 9600),
        (1_000_000, 1_000_000),
    ],
)
def test_parse_rate(text: str | int, bits: int) -> None:
    assert _tc.parse_rate(text) == bits


@pytest.mark.parametrize("bad", ["fast", "8 mbits", "-1mbit", "mbit", "", "1e3bit", "0bit", 3.5, None, True])
def test_parse_rate_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        _tc.parse_rate(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("40ms", 0.04),
        ("1s", 1.0),
        ("250us", 250e-6),
        ("1.5sec", 1.5),
        ("10usec", 10e-6),
        ("0ms", 0.0),
        (0.2, 0.2),
        (2, 2.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert _tc.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["40", "soon", "-1ms", "1h", "", float("inf"), -1, None])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        _tc.parse_duration(bad)  # type: ignore[arg-type]


def test_rate_limit_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="'fast'"):
        _tc.rate_limit("lo", "fast")
    with pytest.raises(ValueError, match="'40tbit'"):
        _tc.rate_limit("lo", "40tbit")
    with pytest.raises(ValueError, match="'soon'"):
        _tc.rate_limit("lo", "8mbit", latency="soon")
    with pytest.raises(ValueError, match="burst 10"):
        _tc.rate_limit("lo", "8mbit", burst=10)


# --------------------------------------------------------------------------
# _tc: netem (absent on this kernel; the options are checked offline)
# --------------------------------------------------------------------------


def test_netem_detection_reports_reason() -> None:
    reason = _tc.netem_unavailable_reason()
    assert _tc.netem_available() is (reason is None)
    if reason is not None:
        assert "netem" in reason
        if not os.path.exists("/proc/config.gz"):
            return
        import gzip

        with gzip.open("/proc/config.gz", "rt") as config:
            built = any(line.startswith("CONFIG_NET_SCH_NETEM=") for line in config)
        if not built:
            assert reason.startswith("the running kernel has no sch_netem")
            assert "ENOENT" in reason


#: iproute2's request for `tc qdisc replace dev <1> root netem delay 40ms 5ms
#: loss 25% rate 8mbit limit 500` after the netlink header (strace), with
#: psched's 15.625 ticks per microsecond.  pyroute2 rounds the loss down.
_TC_NETEM_BYTES = (
    "00000000 01000000 00000000 ffffffff"  # tcmsg: ifindex 1, root
    "00000000 0a000100 6e6574656d000000"  # TCA_KIND "netem"
    "30000200 68890900 f4010000 00000040"  # TCA_OPTIONS: latency, limit, loss
    "00000000 00000000 2d310100 14000600"  # gap, duplicate, jitter; TCA_NETEM_RATE
    "40420f00 00000000 00000000 00000000"  # rate 1,000,000 B/s
)


def test_netem_request_matches_iproute2() -> None:
    from pyroute2.netlink.rtnl.tcmsg import common

    if common.tick_in_usec != 15.625:
        pytest.skip("psched ticks differ from the recorded request")
    options = _tc._netem_options("40ms", "5ms", 0.25, "8mbit", 500)
    request = _tc._netem_request(1, options, "making netem the root qdisc of lo").body
    expected = bytearray.fromhex(_TC_NETEM_BYTES)
    expected[44:48] = (0x3FFFFFFF).to_bytes(4, "little")  # loss, rounded down
    assert request.hex() == expected.hex()


def test_netem_full_request_reaches_the_kernel(namespaces: Callable[[], Netns]) -> None:
    """Every option encodes; the kernel then either applies it or lacks netem."""
    from pytest_netns import KernelError

    ns = namespaces()
    try:
        ns.call(_tc.netem, "lo", delay="40ms", jitter="5ms", loss=0.25, rate="8mbit", limit=500)
    except KernelError as error:
        assert _tc.netem_unavailable_reason() is not None
        assert error.errno == 2, error
    else:
        assert _tc.netem_available()
        ns.call(_tc.clear_qdisc, "lo")


def test_netem_options_encode_with_pyroute2() -> None:
    from pyroute2.netlink.rtnl.tcmsg import sched_netem

    options = _tc._netem_options("40ms", "5ms", 0.25, "8mbit", 500)
    assert options == {"limit": 500, "delay": 40_000, "jitter": 5_000, "loss": 25.0, "rate": 1_000_000}
    encoded = sched_netem.get_parameters(options)
    assert encoded["loss"] == int((2**32 - 1) * 0.25)
    assert encoded["limit"] == 500
    assert encoded["delay"] > encoded["jitter"] > 0


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"delay": "40"}, "'40'"),
        ({"jitter": "5ms"}, "needs a delay"),
        ({"delay": "1ms", "jitter": "5ms"}, "larger than delay"),
        ({"loss": 30}, "30"),
        ({"limit": 0}, "limit 0"),
        ({"rate": "x"}, "'x'"),
        ({"delay": "1000s"}, "too long"),
    ],
)
def test_netem_rejects_bad_values(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        _tc.netem("lo", **kwargs)


def _udp_echo_rtts(a: Netns, b: Netns, count: int) -> list[float]:
    """``count`` UDP round trips a -> b (10.0.0.2:7, echoed by a thread), one at a time, in ms."""
    with b.entered():
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a.entered():
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("10.0.0.2", 7))

    def echo() -> None:
        with contextlib.suppress(OSError):
            while True:
                data, peer = server.recvfrom(64)
                if peer is None:  # shut down
                    return
                server.sendto(data, peer)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    rtts = []
    with client, server:
        client.settimeout(3)
        client.connect(("10.0.0.2", 7))
        for _ in range(count):
            start = time.perf_counter()
            client.send(b"x")
            assert client.recv(64) == b"x"
            rtts.append((time.perf_counter() - start) * 1000)
        with contextlib.suppress(OSError):  # ENOTCONN for UDP, but recvfrom() wakes up
            server.shutdown(socket.SHUT_RDWR)
    thread.join(5)
    return rtts


def test_netem_applies_when_available(pair: tuple[Netns, Netns]) -> None:
    """Delay and loss measured for real where the kernel has sch_netem (dev/test kernel runs it there)."""
    reason = _tc.netem_unavailable_reason()
    if reason is not None:
        assert "sch_netem" in reason, reason
        pytest.skip(reason)
    a, b = pair
    _udp_echo_rtts(a, b, 1)  # ARP resolved before the delay
    a.call(_tc.netem, "va", delay="50ms")  # a's egress only: once per round trip
    assert _root_qdisc(a, "va") == "netem"
    delayed = _udp_echo_rtts(a, b, 10)
    assert 50 <= min(delayed) <= 55, delayed  # within 10 %; the minimum, which load can only raise
    # Loss alone (no delay, so the queue never fills): 2,000 datagrams, binomial 6-sigma bound.
    a.call(_tc.netem, "va", loss=0.1)
    with b.entered():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a.entered():
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)
        receiver.bind(("10.0.0.2", 9000))
        trials = 2000
        for index in range(trials):
            sender.sendto(index.to_bytes(4, "big"), ("10.0.0.2", 9000))  # never fails: netem drops silently
        receiver.settimeout(0.5)
        received = 0
        with contextlib.suppress(TimeoutError):
            while True:
                receiver.recv(16)
                received += 1
    assert within_6_sigma(trials - received, trials, 0.1), received
    a.call(_tc.clear_qdisc, "va")
    assert _root_qdisc(a, "va") is None
    assert min(_udp_echo_rtts(a, b, 10)) < 10  # the delay is gone


# --------------------------------------------------------------------------
# _tc: tbf rate limiting, measured with TCP
# --------------------------------------------------------------------------


def _root_qdisc(ns: Netns, ifname: str) -> str | None:
    """Kind of the root qdisc; None for the default (noqueue on veth)."""

    def kind(ipr: IPRoute) -> str | None:
        index = ipr.link_lookup(ifname=ifname)[0]
        for qdisc in ipr.get_qdiscs(index=index):
            if qdisc["parent"] == 0xFFFFFFFF:
                found = qdisc.get_attr("TCA_KIND")
                return None if found == "noqueue" else found
        return None

    return ns.ipr(kind)


_TCP_INFO_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in struct tcp_info


def _data_segs_in(sock: socket.socket) -> int:
    """Data segments received so far, GRO-merged ones counted one by one."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[_TCP_INFO_DATA_SEGS_IN:][:4], "little")


def _tcp_rate(a: Netns, b: Netns, warmup: float, window: float, cc: str | None = None) -> tuple[float, float]:
    """Bulk TCP a -> b over the window after warmup, measured at b.

    Returns (payload bit/s, wire bit/s).  The wire rate counts the data
    segments that reached b as full frames (MTU 1500 + 14), which is what
    tbf shapes; the payload rate is what the application read, which
    loss recovery makes lumpy over short windows (out-of-order data is
    released in one go when a hole is filled).
    """
    with b.entered():
        listener = socket.create_server(("10.0.0.2", 0))
    with a.entered():
        sender = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if cc is not None:
        sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    stop = threading.Event()

    def pump() -> None:
        chunk = bytes(65536)
        sender.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                sender.send(chunk)

    with listener, sender:
        sender.connect(listener.getsockname())
        conn, _ = listener.accept()
        thread = threading.Thread(target=pump, daemon=True)
        with conn:
            conn.settimeout(0.02)
            thread.start()
            buffer = bytearray(1 << 20)
            start = time.monotonic()
            total, marks = 0, []
            for mark in (start + warmup, start + warmup + window):
                while (now := time.monotonic()) < mark:
                    with contextlib.suppress(TimeoutError):
                        total += conn.recv_into(buffer)
                marks.append((now, total, _data_segs_in(conn)))
            stop.set()
            thread.join(5)
    (t1, n1, s1), (t2, n2, s2) = marks
    return (n2 - n1) * 8 / (t2 - t1), (s2 - s1) * (1500 + 14) * 8 / (t2 - t1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "rate, burst",
    [("512kbit", None), ("8mbit", None), ("100mbit", None), ("8mbit", 200_000)],
)
def test_rate_limit_tcp_long_run_rate(pair: tuple[Netns, Netns], rate: str, burst: int | None) -> None:
    a, b = pair
    a.call(_tc.rate_limit, "va", rate, burst=burst)
    assert _root_qdisc(a, "va") == "tbf"
    payload, wire = _tcp_rate(a, b, warmup=1.0, window=1.5)
    wanted = _tc.parse_rate(rate)
    assert abs(wire - wanted) <= 0.10 * wanted, (rate, wire, payload)
    assert payload >= 0.5 * wanted, (rate, wire, payload)  # lumpy, but flowing

    a.call(_tc.clear_qdisc, "va")
    assert _root_qdisc(a, "va") is None
    a.call(_tc.clear_qdisc, "va")  # clearing the default is fine


def test_rate_limit_replace_and_clear(pair: tuple[Netns, Netns]) -> None:
    a, _ = pair
    a.call(_tc.rate_limit, "va", "1mbit")
    a.call(_tc.rate_limit, "va", "2mbit", burst=20000, latency="20ms")

    def tbf_rate(ipr: IPRoute) -> int:
        index = ipr.link_lookup(ifname="va")[0]
        [qdisc] = [q for q in ipr.get_qdiscs(index=index) if q["parent"] == 0xFFFFFFFF]
        return qdisc.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"]

    assert a.ipr(tbf_rate) == 2_000_000 // 8
    a.call(_tc.clear_qdisc, "va")
    assert _root_qdisc(a, "va") is None
