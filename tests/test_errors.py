"""Runtime failures are ``NetnsError`` subclasses that say what was being done (issue 11, item 5).

``ValueError`` is for bad input only, raised before the kernel is touched.  A
well-formed interface name that does not exist is a runtime fact:
``KernelError(ENODEV)`` naming the interface and the namespace, everywhere.

Failures are provoked for real wherever the kernel can be made to refuse: an
nftables table owned by another socket (the kernel answers EPERM to anyone
else), a link deleted under the code that uses it, a thread whose effective
capabilities lack CAP_NET_ADMIN (the kernel refuses every change it asks
for).  A wrapped socket stands in only for what the kernel does not do on
request: not answering, or losing answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import inspect
import pickle
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkDecodeError, NetlinkError

from pytest_netns import KernelError, Namespace, NetnsError
from pytest_netns._kernel import nft as _nft
from pytest_netns._kernel import rtnl as _rtnl
from pytest_netns._kernel import tc as _tc
from pytest_netns._kernel.handle import handle_of
from pytest_netns._kernel.nft import batch as _nft_batch
from pytest_netns._net import rules as _rules
from pytest_netns.presets.cluster import Cluster
from pytest_netns.presets.docker import DockerHost
from pytest_netns.presets.docker.networks import network_id
from pytest_netns.topology import Link, Segment, Topology

CAP_NET_ADMIN = 12
MISSING = "nosuch0"


def fails_with(call: Callable[[], object], *words: str) -> NetnsError:
    """Run ``call``; it must raise a NetnsError whose message contains every word (nothing else escapes)."""
    try:
        call()
    except NetnsError as exc:
        for word in words:
            assert word in str(exc), f"{str(exc)!r} does not name {word!r}"
        return exc
    except BaseException as exc:
        raise AssertionError(f"{type(exc).__module__}.{type(exc).__qualname__} escaped: {exc}") from exc
    raise AssertionError("nothing was raised")


# -- the hierarchy ---------------------------------------------------------------------------------


def test_nft_error_is_a_kernel_error_that_keeps_errno_request_and_operation() -> None:
    error = _nft.NftError(errno.EEXIST, "add table inet t", "the kernel's text", "installing service 'web'")
    assert isinstance(error, KernelError) and isinstance(error, NetnsError) and isinstance(error, OSError)
    assert error.errno == errno.EEXIST
    assert (error.request, error.detail, error.operation) == (
        "add table inet t",
        "the kernel's text",
        "installing service 'web'",
    )
    assert str(error) == (
        "installing service 'web' (nftables: add table inet t): [Errno 17] File exists (the kernel's text)"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is _nft.NftError and str(copy) == str(error)


def test_kernel_error_keeps_its_detail_through_pickle() -> None:
    error = KernelError(errno.ENOENT, "making netem the root qdisc of 'lo'", "Specified qdisc kind is unknown")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.errno, copy.doing, copy.detail, str(copy)) == (error.errno, error.doing, error.detail, str(error))


# -- nftables: the kernel refuses (a table owned by another socket) ------------------------------------


@contextlib.contextmanager
def table_owned_elsewhere(ns: Namespace, name: str, family: str = "inet") -> Iterator[None]:
    """Table ``name`` exists in ``ns`` and belongs to another netlink socket (NFT_TABLE_F_OWNER).

    The kernel refuses every change to it from any other socket with EPERM;
    it deletes the table when the owner's socket closes (at the end of the block).
    """
    with ns:
        owner = _nft.NftSocket()
    with owner:
        batch = _nft.Batch()
        batch.add_table(family, name, flags=_nft.NFT_TABLE_F_OWNER)
        batch.commit(owner)
        yield
    assert (family, name) not in ns.call(_nft.list_tables)


def test_nat_on_a_router_whose_nat_table_is_taken(netns_topology: Topology) -> None:
    a, router, b = netns_topology.add("a"), netns_topology.add("r", router=True), netns_topology.add("b")
    netns_topology.link(a, router)
    outside = netns_topology.link(router, b)
    with table_owned_elsewhere(router, _rules.NAT_TABLE):
        error = fails_with(
            lambda: netns_topology.nat(router, outside=outside),
            f"masquerading traffic leaving through {outside.interface(router)!r}",
            _rules.NAT_TABLE,
            "Operation not permitted",
        )
        assert isinstance(error, KernelError) and error.errno == errno.EPERM
    netns_topology.nat(router, outside=outside)  # the refusal left nothing in the way


def test_nat_into_a_table_whose_postrouting_chain_is_not_a_nat_chain(netns_topology: Topology) -> None:
    """The table and chain exist already, as a filter chain: the kernel refuses a masquerade rule there."""
    a, router = netns_topology.add("a"), netns_topology.add("r", router=True)
    outside = netns_topology.link(a, router)

    def filter_chain() -> None:
        batch = _nft.Batch()
        batch.add_table("inet", _rules.NAT_TABLE)
        batch.add_chain("inet", _rules.NAT_TABLE, "postrouting", hook=_nft.HOOK_POSTROUTING, kind="filter")
        batch.commit()

    router.call(filter_chain)
    error = fails_with(
        lambda: netns_topology.nat(router, outside=outside),
        "masquerading traffic leaving through",
        f"add rule inet {_rules.NAT_TABLE} postrouting",
    )
    assert isinstance(error, _nft.NftError) and error.errno == errno.EOPNOTSUPP


def test_publish_on_a_host_whose_forward_table_is_taken(netns_docker: DockerHost) -> None:
    netns_docker.container("web")
    table = f"{_nft.TABLE_PREFIX}_fwd_tcp_8080"
    with table_owned_elsewhere(netns_docker.host, table):
        error = fails_with(
            lambda: netns_docker.publish("web", host_port=8080, container_port=80),
            "forwarding tcp port 8080 to 172.17.0.2:80",
            table,
        )
        assert isinstance(error, KernelError) and error.errno == errno.EPERM
        assert netns_docker.published == []
    # Nothing was left reserved: the same port publishes once the table is free.
    assert netns_docker.publish("web", host_port=8080, container_port=80).host_port == 8080


def test_service_on_a_cluster_whose_service_table_is_taken(netns_cluster: Cluster) -> None:
    node = netns_cluster.node("n1")
    netns_cluster.pod("p1", node=node)
    table = f"{_nft.TABLE_PREFIX}_kube_proxy"  # kube-proxy's table, taken over after the node was made
    node.call(_nft.NftTable("ip", table).remove)
    with table_owned_elsewhere(node, table, family="ip"):
        error = fails_with(
            lambda: netns_cluster.service("web", port=80, pods=["p1"]), "installing service 'web'", table
        )
        assert isinstance(error, KernelError) and error.errno == errno.EPERM
        assert netns_cluster.services == []
    assert netns_cluster.service("web", port=80, pods=["p1"]).name == "web"


def test_drop_ingress_on_a_missing_interface_is_enodev(netns_factory: Callable[..., Namespace]) -> None:
    ns = netns_factory("x")
    error = fails_with(lambda: ns.call(_rules.drop_ingress, MISSING, 0.1), repr(MISSING), "No such device")
    assert isinstance(error, KernelError) and error.errno == errno.ENODEV


# -- nftables: no answer, lost answers (wrapped socket) -------------------------------------------------


class Falters:
    """A real socket that fails after ``answers`` replies: recv times out or raises ``error``."""

    def __init__(self, sock: socket.socket, answers: int, error: OSError | None = None) -> None:
        self.sock, self.answers, self.error = sock, answers, error

    def recv(self, size: int) -> bytes:
        if self.answers <= 0:
            raise self.error or TimeoutError("timed out")
        self.answers -= 1
        return self.sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    def __enter__(self) -> Falters:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()


def faltering(answers: int, error: OSError | None = None) -> Callable[[], _nft.NftSocket]:
    """Makes nf_tables sockets whose real socket falters (see Falters)."""
    real = _nft.NftSocket

    def make() -> _nft.NftSocket:
        sock = real()
        sock.sock = Falters(sock.sock, answers, error)  # type: ignore[assignment]
        return sock

    return make


NFT_SILENCE: list[tuple[str, Callable[[], object], int, str, str]] = [
    # (id, call, answers before silence, request waited for, what the operation was)
    ("masquerade", lambda: _rules.masquerade("eth0"), 0, "get inet pytest_netns_nat postrouting", "masquerading"),
    ("masquerade commit", lambda: _rules.masquerade("eth0"), 1, "add table inet pytest_netns_nat", "masquerading"),
    (
        "dnat_service",
        lambda: _rules.dnat_service("web", "10.96.0.1", 80, [("10.0.0.2", 80)]),
        1,
        "add table inet pytest_netns_svc_web",
        "installing service 'web'",
    ),
    (
        "port_forward",
        lambda: _rules.port_forward(8080, "10.0.0.2", 80),
        1,
        "add table inet pytest_netns_fwd_tcp_8080",
        "forwarding tcp port 8080 to 10.0.0.2:80",
    ),
    (
        "drop_ingress",
        lambda: _rules.drop_ingress("lo", 0.5),
        1,
        "add table netdev pytest_netns_loss_lo",
        "making 'lo' drop arriving packets",
    ),
    (
        "delete_table",
        lambda: _nft.delete_table("inet", "t", missing_ok=False),
        0,
        "delete table inet t",
        "deleting nftables table inet t",
    ),
    ("list_tables", _nft.list_tables, 0, "list tables", "listing nftables tables"),
]


@pytest.mark.parametrize(
    ("call", "answers", "request_", "operation"), [c[1:] for c in NFT_SILENCE], ids=[c[0] for c in NFT_SILENCE]
)
def test_nftables_that_does_not_answer_is_etimedout_naming_the_request(
    netns_factory: Callable[..., Namespace],
    monkeypatch: pytest.MonkeyPatch,
    call: Callable[[], object],
    answers: int,
    request_: str,
    operation: str,
) -> None:
    ns = netns_factory("x")
    monkeypatch.setattr(_nft_batch, "NftSocket", faltering(answers))
    error = fails_with(lambda: ns.call(call), operation, f"nftables: {request_}", "no answer within")
    assert isinstance(error, _nft.NftError) and error.errno == errno.ETIMEDOUT


def test_nftables_answers_lost_is_a_kernel_error(
    netns_factory: Callable[..., Namespace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOBUFS: the socket's queue overflowed and answers were dropped (what the kernel reports then)."""
    ns = netns_factory("x")
    lost = OSError(errno.ENOBUFS, "No buffer space available")
    monkeypatch.setattr(_nft_batch, "NftSocket", faltering(0, lost))
    error = fails_with(lambda: ns.call(_nft.list_tables), "listing nftables tables", "list tables")
    assert isinstance(error, KernelError) and error.errno == errno.ENOBUFS


# -- rtnetlink: lost answers (wrapped socket) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "answers", "doing"),
    [
        (lambda a: a.set_mtu("eth0", 1400), 1, "setting MTU 1400 on eth0 in 'a'"),  # execute: acks (after a query)
        (lambda a: a.interfaces(), 0, "listing interfaces in 'a'"),  # dump
        (lambda a: a.mtu("eth0"), 0, "looking up interface 'eth0'"),  # query
    ],
    ids=["execute", "dump", "query"],
)
def test_rtnetlink_answers_lost_is_a_kernel_error_naming_the_request(
    netns_pair: tuple[Namespace, Namespace], call: Callable[[Namespace], object], answers: int, doing: str
) -> None:
    a, _ = netns_pair
    real = handle_of(a).rtnl.sock
    handle_of(a).rtnl.sock = Falters(real, answers, OSError(errno.ENOBUFS, "No buffer space available"))  # type: ignore[assignment]
    try:
        error = fails_with(lambda: call(a), doing, "No buffer space available")
    finally:
        handle_of(a).rtnl.sock = real
    assert isinstance(error, KernelError) and error.errno == errno.ENOBUFS
    assert a.mtu("eth0") in (1400, 1500)  # the socket still works (a late answer is skipped by its sequence number)


# -- tc ----------------------------------------------------------------------------------------------------------

TC_CALLS: list[tuple[str, Callable[[str], object], str]] = [
    ("rate_limit", lambda ifname: _tc.rate_limit(ifname, "1mbit"), "limiting '{}' to 1000000 bit/s (tbf)"),
    ("clear_qdisc", _tc.clear_qdisc, "removing the root qdisc of '{}'"),
    ("netem", lambda ifname: _tc.netem(ifname, delay="10ms"), "making netem (delay='10ms') the root qdisc of '{}'"),
]


@pytest.mark.parametrize(("call", "doing"), [c[1:] for c in TC_CALLS], ids=[c[0] for c in TC_CALLS])
def test_tc_on_a_missing_interface_is_enodev(
    netns_factory: Callable[..., Namespace], call: Callable[[str], object], doing: str
) -> None:
    ns = netns_factory("x")
    error = fails_with(lambda: ns.call(call, MISSING), doing.format(MISSING), "No such device")
    assert isinstance(error, KernelError) and error.errno == errno.ENODEV


@pytest.mark.parametrize(("call", "doing"), [c[1:] for c in TC_CALLS], ids=[c[0] for c in TC_CALLS])
def test_tc_on_an_interface_deleted_after_its_lookup(
    netns_pair: tuple[Namespace, Namespace],
    monkeypatch: pytest.MonkeyPatch,
    call: Callable[[str], object],
    doing: str,
) -> None:
    """The kernel answers ENODEV (through pyroute2's IPRoute for tbf, a raw socket for netem)."""
    a, _ = netns_pair
    gone = a._index("eth0")
    handle_of(a).execute([_rtnl.del_link(gone)])
    monkeypatch.setattr(_tc, "_ifindex", lambda ifname, doing: gone)
    error = fails_with(lambda: a.call(call, "eth0"), doing.format("eth0"))
    assert isinstance(error, KernelError) and error.errno == errno.ENODEV


class FailingIPRoute:
    """pyroute2's IPRoute as seen when its request fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __enter__(self) -> FailingIPRoute:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def get_links(self, *args: object, **kwargs: object) -> list[Any]:
        raise self.error

    tc = get_links


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NetlinkError(errno.EBUSY), errno.EBUSY),
        (NetlinkDecodeError(ValueError("truncated attribute")), errno.EPROTO),
        (TimeoutError("timed out"), errno.ETIMEDOUT),
        (OSError(errno.ENOBUFS, "No buffer space available"), errno.ENOBUFS),
    ],
    ids=["NetlinkError", "NetlinkDecodeError", "TimeoutError", "OSError"],
)
@pytest.mark.parametrize(("call", "doing"), [c[1:] for c in TC_CALLS[:2]], ids=[c[0] for c in TC_CALLS[:2]])
def test_what_pyroute2_raises_becomes_a_kernel_error(
    netns_factory: Callable[..., Namespace],
    monkeypatch: pytest.MonkeyPatch,
    call: Callable[[str], object],
    doing: str,
    error: BaseException,
    code: int,
) -> None:
    ns = netns_factory("x")
    monkeypatch.setattr(_tc, "_ipr", lambda: FailingIPRoute(error))
    raised = fails_with(lambda: ns.call(call, "lo"), doing.format("lo"))
    assert isinstance(raised, KernelError) and raised.errno == code


def test_netem_that_gets_no_answer_is_etimedout(
    netns_factory: Callable[..., Namespace], monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = netns_factory("x")
    real = _tc._route_socket

    def silent() -> _rtnl.RtnlSocket:
        sock = real()
        sock.sock = Falters(sock.sock, 0)  # type: ignore[assignment]
        return sock

    monkeypatch.setattr(_tc, "_route_socket", silent)
    error = fails_with(
        lambda: ns.call(_tc.netem, "lo", delay="10ms"),
        "making netem (delay='10ms') the root qdisc of 'lo'",
        "no answer from the kernel",
    )
    assert isinstance(error, KernelError) and error.errno == errno.ETIMEDOUT


# -- impair() on a link or segment deleted under it ------------------------------------------------------


@pytest.mark.parametrize("values", [{"rate": "1mbit"}, {"loss": 0.1}, {"delay": "10ms"}], ids=str)
def test_impair_on_a_link_deleted_under_it(netns_topology: Topology, values: dict[str, object]) -> None:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    link = netns_topology.link(a, b)
    if "delay" in values and _tc.netem_unavailable_reason() is not None:
        pytest.skip(f"netem: {_tc.netem_unavailable_reason()}")
    handle_of(a).execute([_rtnl.del_link(a._index("eth0"))])  # both ends go
    error = fails_with(lambda: link.impair(**values), "impair(", "no interface 'eth0' in namespace 'a'")
    assert isinstance(error, KernelError) and error.errno == errno.ENODEV


def test_revert_on_a_link_deleted_under_it(netns_topology: Topology) -> None:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    impairment = netns_topology.link(a, b).impair(rate="1mbit")
    handle_of(a).execute([_rtnl.del_link(a._index("eth0"))])
    fails_with(impairment.revert, "clearing the impairment of a:eth0", "no interface 'eth0' in namespace 'a'")


def test_impair_on_a_segment_whose_port_was_deleted(netns_topology: Topology) -> None:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    segment = netns_topology.segment([a, b])
    port = segment.port(b)
    bridge = segment.namespace
    handle_of(bridge).execute([_rtnl.del_link(bridge._index(port))])
    error = fails_with(lambda: segment.impair(rate="1mbit"), f"no interface {port!r} in namespace {bridge.name!r}")
    assert isinstance(error, KernelError) and error.errno == errno.ENODEV


# -- a missing interface, at every public method that takes one ------------------------------------------------


def _ether() -> object:
    from scapy.layers.l2 import Ether

    return Ether(dst="ff:ff:ff:ff:ff:ff")


def _capture(ns: Namespace, iface: str) -> None:
    with ns.capture(iface):
        pass


#: Every public Namespace method with an interface parameter, called with ``iface`` there.
BY_INTERFACE: dict[str, Callable[[Namespace, str], object]] = {
    "add_address": lambda ns, iface: ns.add_address(iface, "10.9.0.1/24"),
    "add_route": lambda ns, iface: ns.add_route("10.9.0.0/24", dev=iface),
    "addresses": lambda ns, iface: ns.addresses(iface),
    "capture": _capture,
    "down": lambda ns, iface: ns.down(iface),
    "mac": lambda ns, iface: ns.mac(iface),
    "mtu": lambda ns, iface: ns.mtu(iface),
    "sendp": lambda ns, iface: ns.sendp(_ether(), iface),
    "set_mtu": lambda ns, iface: ns.set_mtu(iface, 1400),
    "sniff": lambda ns, iface: ns.sniff(iface, timeout=0.1),
    "up": lambda ns, iface: ns.up(iface),
}
INTERFACE_PARAMETERS = {"iface", "dev", "ifname"}
#: Deprecated aliases of methods listed here (tests/test_deprecated.py checks they delegate and warn).
DEPRECATED_ALIASES = {"link_down", "link_up"}


def test_every_method_taking_an_interface_is_listed() -> None:
    taking = {
        name
        for name, fn in inspect.getmembers(Namespace, inspect.isfunction)
        if not name.startswith("_") and INTERFACE_PARAMETERS & set(inspect.signature(fn).parameters)
    }
    assert taking - DEPRECATED_ALIASES == set(BY_INTERFACE), "add the new method to BY_INTERFACE"


@pytest.mark.parametrize("method", sorted(BY_INTERFACE))
def test_a_missing_interface_is_enodev_naming_it_and_the_namespace(
    netns_pair: tuple[Namespace, Namespace], method: str
) -> None:
    a, _ = netns_pair
    error = fails_with(
        lambda: BY_INTERFACE[method](a, MISSING), f"no interface {MISSING!r} in namespace 'a' (it has lo, eth0)"
    )
    assert isinstance(error, KernelError) and error.errno == errno.ENODEV


@pytest.mark.parametrize("method", sorted(BY_INTERFACE))
def test_a_malformed_interface_name_is_a_value_error(netns_pair: tuple[Namespace, Namespace], method: str) -> None:
    a, _ = netns_pair
    with pytest.raises(ValueError, match="'bad/if'"):
        BY_INTERFACE[method](a, "bad/if")


# -- the sweep: the kernel refuses every change; every public method says so with a NetnsError ------------


def _drop_effective(effective_without: int | None = None) -> None:
    """Drop one capability from the calling thread's effective set (capabilities are per thread)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    assert libc.capget(ctypes.byref(header), data) == 0, ctypes.get_errno()
    if effective_without is not None:
        data[effective_without // 32].effective &= ~(1 << effective_without % 32)
        assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()


def without_net_admin(calls: dict[str, Callable[[], object]]) -> dict[str, BaseException | None]:
    """Run each call on a thread without CAP_NET_ADMIN (and threads it starts); what each raised."""
    outcome: dict[str, BaseException | None] = {}

    def body() -> None:
        _drop_effective(effective_without=CAP_NET_ADMIN)
        for name, call in calls.items():
            try:
                call()
            except BaseException as exc:
                outcome[name] = exc
            else:
                outcome[name] = None

    thread = threading.Thread(target=body, name="without-net-admin")
    thread.start()
    thread.join()
    return outcome


def _unswept(*classes: type) -> set[str]:
    """Public methods of ``classes`` that neither the sweep nor NOT_SWEPT lists."""
    public = {
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, _ in inspect.getmembers(cls, callable)
        if not name.startswith("_") and not isinstance(inspect.getattr_static(cls, name), type)
    }
    return public - set(NOT_SWEPT)


#: Public methods the sweep does not call, and why.
NOT_SWEPT = {
    "Namespace.close": "teardown (TeardownError) is pinned by the namespace and fault tests",
    "Topology.close": "teardown",
    "DockerHost.close": "teardown",
    "Cluster.close": "teardown",
    "Namespace.link_down": "deprecated alias of Namespace.down (tests/test_deprecated.py)",
    "Namespace.link_up": "deprecated alias of Namespace.up (tests/test_deprecated.py)",
    "Topology.bridge": "deprecated alias of Topology.segment (tests/test_deprecated.py)",
}


def test_sweep_the_kernel_refuses_every_change(netns_topology: Topology) -> None:
    """Every public method of Namespace, Topology, Link and Segment, run where the kernel says EPERM."""
    t = netns_topology
    a, b, router = t.add("a"), t.add("b"), t.add("r", router=True)
    link = t.link(a, router)
    segment = t.segment([router, b])
    impairment = link.impair(rate="1mbit")
    # name: (call, what the error must name; None: the call needs no change, so it succeeds)
    sweep: dict[str, tuple[Callable[[], object], str | None]] = {
        "Namespace.add_address": (lambda: a.add_address("eth0", "10.9.0.1/24"), "adding 10.9.0.1/24 to eth0 in 'a'"),
        "Namespace.add_route": (lambda: a.add_route("10.9.0.0/24", dev="eth0"), "adding route to 10.9.0.0/24"),
        "Namespace.addresses": (lambda: a.addresses("eth0"), None),
        "Namespace.call": (lambda: a.call(lambda: None), None),
        "Namespace.capture": (lambda: _capture(a, "eth0"), None),
        "Namespace.down": (lambda: a.down("eth0"), "taking eth0 down in 'a'"),
        "Namespace.interfaces": (a.interfaces, None),
        "Namespace.mac": (lambda: a.mac("eth0"), None),
        "Namespace.mtu": (lambda: a.mtu("eth0"), None),
        "Namespace.ping": (lambda: a.ping("10.0.0.2", timeout=0.1), None),
        "Namespace.popen": (lambda: a.popen(["true"]).wait(), None),
        "Namespace.run": (lambda: a.run(["true"]), None),
        "Namespace.send": (lambda: a.send(_ip()), None),
        "Namespace.sendp": (lambda: a.sendp(_ether(), "eth0"), None),
        "Namespace.set_mtu": (lambda: a.set_mtu("eth0", 1400), "setting MTU 1400 on eth0 in 'a'"),
        "Namespace.sniff": (lambda: a.sniff("eth0", timeout=0.05), None),
        "Namespace.sr1": (lambda: a.sr1(_ip(), timeout=0.05), None),
        "Namespace.sysctl": (lambda: a.sysctl("net.ipv4.ip_forward", 1), "writing sysctl net.ipv4.ip_forward in 'a'"),
        "Namespace.up": (lambda: a.up("eth0"), "bringing eth0 up in 'a'"),
        "Namespace.wait_for_port": (lambda: a.wait_for_port("10.0.0.1", 8080), None),
        "Topology.add": (lambda: t.add("c"), "'c'"),
        "Topology.autoroute": (t.autoroute, "adding route to"),
        "Topology.describe": (t.describe, None),
        "Topology.hosts": (t.hosts, None),
        "Topology.link": (lambda: t.link(a, b), "creating veth a:"),
        "Topology.nat": (lambda: t.nat(router, outside=segment), "masquerading traffic leaving through"),
        "Topology.partition": (lambda: t.partition("a", "b"), "cutting 'a' off from 'b'"),
        "Topology.segment": (lambda: t.segment([a, b]), "bridge"),
        "Link.down": (link.down, "a:eth0"),
        "Link.impair": (lambda: link.impair(loss=0.5), "impair(loss=0.5) on a:eth0"),
        "Link.interface": (lambda: link.interface(a), None),
        "Link.set_mtu": (lambda: link.set_mtu(1400), "a:eth0"),
        "Link.up": (link.up, "a:eth0"),
        "Segment.capture": (lambda: segment.capture().__enter__().__exit__(None, None, None), None),
        "Segment.down": (lambda: segment.down(b), "segment"),
        "Segment.impair": (lambda: segment.impair(rate="2mbit"), "impair(rate='2mbit') on"),
        "Segment.interface": (lambda: segment.interface(b), None),
        "Segment.port": (lambda: segment.port(b), None),
        "Segment.set_mtu": (lambda: segment.set_mtu(1400), "segment"),
        "Segment.sniff": (lambda: segment.sniff(timeout=0.05), None),
        "Segment.up": (lambda: segment.up(b), "segment"),
        "Impairment.revert": (impairment.revert, "clearing the impairment of a:eth0"),
    }
    classes = (Namespace, Topology, Link, Segment, type(impairment))
    assert _unswept(*classes) == set(sweep), "add the method to the sweep"
    with a:
        listener = socket.create_server(("10.0.0.1", 8080))
    with listener:
        outcome = without_net_admin({name: call for name, (call, _) in sweep.items()})
    _check_sweep(outcome, {name: words for name, (_, words) in sweep.items()})


def _ip() -> object:
    from scapy.layers.inet import IP, UDP

    return IP(dst="10.0.0.2") / UDP(dport=9)


def _check_sweep(outcome: dict[str, BaseException | None], expected: dict[str, str | None]) -> None:
    problems = []
    for name, words in expected.items():
        exc = outcome[name]
        if words is None:
            if exc is not None:
                problems.append(f"{name} needs no change but raised {type(exc).__name__}: {exc}")
        elif not isinstance(exc, NetnsError):
            problems.append(f"{name} raised {type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        elif words not in str(exc) or "Operation not permitted" not in str(exc):
            problems.append(f"{name}: {str(exc)!r} does not name {words!r} and the refusal")
    assert not problems, "\n".join(problems)


def test_sweep_docker_host(netns_docker: DockerHost) -> None:
    web = netns_docker.container("web")
    published = netns_docker.publish(web, host_port=8081, container_port=81)
    app = netns_docker.network("app")
    sweep: dict[str, tuple[Callable[[], object], str | None]] = {
        "DockerHost.connect": (lambda: netns_docker.connect(web, app), "web:eth1"),
        "DockerHost.container": (lambda: netns_docker.container("db"), "db"),
        "DockerHost.network": (lambda: netns_docker.network("back"), f"br-{network_id('back')[:12]}"),
        "DockerHost.publish": (
            lambda: netns_docker.publish(web, host_port=8080, container_port=80),
            "forwarding tcp port 8080",
        ),
        "PublishedPort.remove": (published.remove, "pytest_netns_fwd_tcp_8081"),
    }
    classes = (DockerHost, type(published))
    assert _unswept(*classes) == set(sweep), "add the method to the sweep"
    outcome = without_net_admin({name: call for name, (call, _) in sweep.items()})
    _check_sweep(outcome, {name: words for name, (_, words) in sweep.items()})


def test_sweep_cluster(netns_cluster: Cluster) -> None:
    node = netns_cluster.node("n1")
    netns_cluster.pod("p1", node=node)
    p2 = netns_cluster.pod("p2", node=node)
    netns_cluster.pod("gone", node=node)  # in no service: deleting it only releases its namespace
    other = netns_cluster.pod("other", node=node, namespace="batch")  # in no service, selected by no policy
    service = netns_cluster.service("web", port=80, pods=["p1"])
    netns_cluster.external("e0")
    # Isolates pods app=db of "default" against namespaces team=a: relabelling p2 or "default" changes n1's rules.
    peers = [{"from": [{"namespace_selector": {"match_labels": {"team": "a"}}}]}]
    policy = netns_cluster.network_policy("db", pod_selector={"app": "db"}, ingress=peers)
    netns_cluster.pod("db-0", node=node, labels={"app": "db"})
    spec = {"selector": {"app": "api"}, "ports": [{"port": 82}]}
    manifest = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"}, "spec": spec}
    enforcing = "enforcing NetworkPolicies on node 'n1'"
    sweep: dict[str, tuple[Callable[[], object], str | None]] = {
        "Cluster.delete_pod": (lambda: netns_cluster.delete_pod("gone"), None),
        "Cluster.describe": (netns_cluster.describe, None),
        "Cluster.external": (lambda: netns_cluster.external("ext"), "ext"),
        "Cluster.hosts": (netns_cluster.hosts, None),
        "Cluster.node": (lambda: netns_cluster.node("n2"), "n2"),
        "Cluster.partition": (lambda: netns_cluster.partition("n1", "e0"), "cutting 'n1' off from 'e0'"),
        "Cluster.pod": (lambda: netns_cluster.pod("p3", node=node), "p3"),
        "Cluster.resolve": (lambda: netns_cluster.resolve("p1"), None),
        "Cluster.service": (lambda: netns_cluster.service("db", port=81, pods=["p1"]), "installing service 'db'"),
        "Cluster.set_mtu": (lambda: netns_cluster.set_mtu(1400), "1400"),
        "Cluster.apply": (lambda: netns_cluster.apply(manifest), "installing service 'api'"),
        "Cluster.network_policy": (lambda: netns_cluster.network_policy("all", pod_selector={}), enforcing),
        "Cluster.set_namespace_labels": (
            lambda: netns_cluster.set_namespace_labels("default", {"team": "a"}),
            enforcing,
        ),
        "Service.add": (lambda: service.add(netns_cluster.pods[1]), "installing service 'web'"),
        "Service.remove": (lambda: service.remove(netns_cluster.pods[0]), "installing service 'web'"),
        "Pod.delete": (other.delete, None),
        "Pod.resolve": (lambda: p2.resolve("web"), None),
        "Pod.set_labels": (lambda: p2.set_labels({"app": "db"}), enforcing),
        "NetworkPolicy.delete": (policy.delete, enforcing),
        "NetworkPolicy.selects": (lambda: policy.selects(p2), None),
    }
    classes = (Cluster, type(service), type(policy))
    sweep_pod = {name for name in sweep if name.startswith("Pod.")}
    pod_own = {f"Pod.{name}" for name, _ in inspect.getmembers(type(p2), callable) if not hasattr(Namespace, name)}
    assert {name for name in pod_own if not name.startswith("Pod._")} == sweep_pod, "add the pod's method to the sweep"
    assert _unswept(*classes) == set(sweep) - sweep_pod, "add the method to the sweep"
    outcome = without_net_admin({name: call for name, (call, _) in sweep.items()})
    _check_sweep(outcome, {name: words for name, (_, words) in sweep.items()})
    # Nothing a refused call tried to change was kept.
    assert p2.labels == {} and netns_cluster.k8s_namespaces["default"] == {"kubernetes.io/metadata.name": "default"}
    assert netns_cluster.network_policies == [policy] and not policy.deleted
    assert [svc.name for svc in netns_cluster.services if svc.name == "api"] == []


def test_probes_report_a_refusal_instead_of_raising() -> None:
    """doctor's kernel probes and the netem probe, where the kernel refuses: results, not exceptions."""
    from pytest_netns._kernel import probes as _capabilities

    probe = getattr(_capabilities.kernel_features, "__wrapped__", _capabilities.kernel_features)
    outcome: dict[str, Any] = {}
    failures = without_net_admin(
        {
            "kernel_features": lambda: outcome.__setitem__("features", probe()),
            "netem_unavailable_reason": lambda: outcome.__setitem__("netem", _tc.netem_unavailable_reason()),
        }
    )
    assert failures == {"kernel_features": None, "netem_unavailable_reason": None}
    # A probe the kernel fails with privileges too (br_netfilter not loaded) is missing, not refused.
    available = {p.name for p in probe() if p.ok}
    refused = [p for p in outcome["features"] if not p.ok and p.name in available]
    assert refused and all("not permitted" in p.detail.lower() or "EPERM" in p.detail for p in refused), refused
    assert outcome["netem"] is not None and "EPERM" in outcome["netem"]
