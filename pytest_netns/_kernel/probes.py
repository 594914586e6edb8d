"""What this machine can do: the probes behind ``pytest-netns doctor`` and the report header.

The report header runs at every pytest start, most of them runs that use
no fixture: it only reads files (capabilities, ``/proc/self/ns/net``, the
namespace sysctls) and never creates a namespace.  Whether a namespace can
really be made is found by the first fixture; whether a kernel feature
exists, when a test first asks for it (``impair(delay=...)`` looks for
netem, ``filter=`` for libpcap, a cluster node for br_netfilter), once per
process.  A missing one raises ``FeatureUnavailable`` with its ``feature``
name: a skip, or a failure when ``--netns-require-features`` names it.

``doctor`` probes everything for real, the kernel features inside a
throwaway network namespace that a helper thread creates and that dies with
it: nothing the caller (or the host) owns is touched.  Feature probes ask
the kernel for the object with no options where that tells presence apart:
a queue discipline whose kind is unknown (and whose module cannot be
loaded) is ENOENT, a known one without its options EINVAL.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import KernelError
from . import netlink as _netlink
from . import netns as _netns
from . import nft
from . import rtnl as _rtnl


@dataclass(frozen=True)
class Probe:
    """One line of ``doctor``: a feature, whether it works, and what its absence disables."""

    name: str
    ok: bool | None  # None: could not be probed (something it depends on is missing)
    detail: str
    disables: str
    #: Its stable name for --netns-require-features ("" for what is not a feature a test asks for).
    feature: str = ""

    @property
    def status(self) -> str:
        return {True: "ok", False: "MISSING", None: "unknown"}[self.ok]


# -- privileges --------------------------------------------------------------------------------


def privileges() -> Probe:
    from .netns import Capabilities

    caps = Capabilities.current()
    missing = caps.missing()
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    held = [name for name in ("CAP_NET_ADMIN", "CAP_SYS_ADMIN") if name not in missing]
    detail = f"{who}, " + ("+".join(held) if held else "neither CAP_NET_ADMIN nor CAP_SYS_ADMIN")
    if missing:
        detail += f" (missing {', '.join(missing)})"
    return Probe(
        "privileges",
        not missing,
        detail,
        "every fixture (tests are skipped, or fail with --netns-require); run as root, in a privileged "
        "container, or with --netns-rootless where user namespaces are allowed",
    )


def network_namespaces() -> Probe:
    from .netns import unavailable_reason

    reason = unavailable_reason()
    return Probe("network namespaces", reason is None, reason or "unshare(CLONE_NEWNET) works", "every fixture")


def kernel() -> Probe:
    release = platform.release()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.getsockopt(socket.SOL_SOCKET, _netns.SO_NETNS_COOKIE, 8)  # Linux 5.14
    except OSError as exc:
        return Probe(
            "kernel",
            False,
            f"Linux {release}: no SO_NETNS_COOKIE ({exc.strerror})",
            "Namespace (needs Linux 5.14 or newer)",
        )
    return Probe("kernel", True, f"Linux {release}", "Namespace (needs Linux 5.14 or newer)")


# -- kernel features, probed in a throwaway namespace --------------------------------------------

_FEATURES: dict[str, tuple[str, str]] = {
    # doctor's name: (feature name, what it disables when missing)
    "veth": ("veth", "netns_pair and every link between namespaces"),
    "bridge": ("bridge", "netns_bridge and topologies with shared segments"),
    "macvlan": ("macvlan", "netns_cluster (its node network)"),
    "tbf (rate limits)": ("tbf", "impair(rate=...)"),
    "netem (delay, jitter)": ("netem", "impair(delay=..., jitter=..., corrupt=..., reorder=...)"),
    "nftables NAT (masquerade)": ("nft-nat", "netns_nat, Topology.nat and masquerading routers"),
    "nftables netdev ingress": ("nft-ingress", "impair(loss=...)"),
    "nftables reject (partitions)": ("nft-filter", "partition(), block() and the models' partition()"),
    "nftables dup": ("nft-dup", "impair(duplicate=...)"),
    "br_netfilter": (
        "br_netfilter",
        "netns_cluster (a reply bridged between two pods of one node needs it); the plugin never loads modules",
    ),
}
BRIDGE_NF_CALL_IPTABLES = "/proc/sys/net/bridge/bridge-nf-call-iptables"

#: Every name --netns-require-features takes, in doctor's order; each is a Probe.feature.
FEATURES: tuple[str, ...] = (*(feature for feature, _ in _FEATURES.values()), "mountns", "libpcap")


@functools.lru_cache(maxsize=1)
def kernel_features() -> tuple[Probe, ...]:
    """veth, bridge, macvlan, tbf, netem and nftables, each tried in one throwaway namespace (cached)."""
    from .netns import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        return tuple(
            Probe(name, None, "not probed: no network namespaces", what, feature)
            for name, (feature, what) in _FEATURES.items()
        )
    results: dict[str, tuple[bool, str]] = {}
    error: list[BaseException] = []

    def inside() -> None:
        # This thread moves into a new namespace and ends there: the namespace
        # (and everything probed in it) dies with the thread.
        try:
            _netns.unshare(_netns.CLONE_NEWNET)
        except OSError as exc:
            error.append(exc)
            return
        try:
            _probe_features(results)
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=inside, name="netns-capability-probe")
    thread.start()
    thread.join()
    if error:
        return tuple(
            Probe(name, None, f"probe failed: {error[0]}", what, feature) for name, (feature, what) in _FEATURES.items()
        )
    return tuple(Probe(name, *results[name], what, feature) for name, (feature, what) in _FEATURES.items())


def _probe_features(results: dict[str, tuple[bool, str]]) -> None:
    """Run on a thread inside a fresh namespace; fills ``results`` name -> (ok, detail)."""
    rtnl = _rtnl.RtnlSocket()
    try:
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            veth = _rtnl.new_veth("probe0", "probe1", here, index=100, peer_index=101, mtu=1500, up=False)
            results["veth"] = _try(rtnl, veth)
            if results["veth"][0]:  # a macvlan needs a lower device: probe0
                macvlan = _rtnl.new_macvlan("probemv", lower=100, netns_fd=here, index=103, mtu=1500)
                results["macvlan"] = _try(rtnl, macvlan)
            else:
                results["macvlan"] = (False, f"no veth to put it on ({results['veth'][1]})")
        finally:
            os.close(here)
        results["bridge"] = _try(rtnl, _rtnl.new_bridge("probebr", index=102, up=False))
        results["tbf (rate limits)"] = _qdisc_kind(rtnl, "tbf")
        results["netem (delay, jitter)"] = _qdisc_kind(rtnl, "netem")
    finally:
        rtnl.close()
    results["nftables NAT (masquerade)"] = _nft_transaction(_nat_table())
    results["nftables netdev ingress"] = _nft_transaction(_ingress_table("lo"))
    results["nftables reject (partitions)"] = _nft_transaction(_partition_table())
    results["nftables dup"] = _nft_transaction(_dup_table())
    results["br_netfilter"] = _br_netfilter()


def _br_netfilter() -> tuple[bool, str]:
    """Whether bridged IPv4 can pass netfilter: /proc/sys/net/bridge exists (in this thread's namespace)."""
    try:
        with open(BRIDGE_NF_CALL_IPTABLES) as handle:
            value = handle.read().strip()
    except FileNotFoundError:
        return False, "not loaded: no /proc/sys/net/bridge (modprobe br_netfilter, as Docker does)"
    return True, f"present; bridge-nf-call-iptables is {value} in a new namespace"


def _try(rtnl: _rtnl.RtnlSocket, request: _rtnl.Request) -> tuple[bool, str]:
    try:
        rtnl.execute([request])
    except OSError as exc:
        return False, f"{request.doing}: {errno.errorcode.get(exc.errno or 0, exc.errno)} {exc.strerror}"
    return True, "created in a throwaway namespace"


RTM_NEWQDISC = 36
TCA_KIND = 1
TC_H_ROOT = 0xFFFFFFFF


def _qdisc_kind(rtnl: _rtnl.RtnlSocket, kind: str) -> tuple[bool, str]:
    """Whether the kernel knows a queue discipline (ENOENT: unknown kind; EINVAL: known, options missing)."""
    body = struct.pack("=BxxxiIII", socket.AF_UNSPEC, 1, 0, TC_H_ROOT, 0) + _netlink.attr_str(TCA_KIND, kind)
    request = _netlink.Request(
        RTM_NEWQDISC, _netlink.NLM_F_CREATE | _netlink.NLM_F_EXCL, body, f"adding a {kind} qdisc"
    )
    try:
        rtnl.execute([request])
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return True, f"sch_{kind} present"
        if exc.errno == errno.ENOENT:
            return False, f"the running kernel has no sch_{kind} (qdisc kind unknown, no module to load)"
        return False, f"{request.doing}: {errno.errorcode.get(exc.errno or 0, exc.errno)} {exc.strerror}"
    return True, f"sch_{kind} present"


def _nat_table() -> nft.Table:
    """inet table, nat chain on postrouting, one masquerade rule: what Topology.nat needs."""
    post = nft.Chain("post", [[nft.expr.Masq()]], hook=nft.HOOK_POSTROUTING, priority=nft.PRIO_SRCNAT, type="nat")
    return nft.Table("inet", "probe", [post])


def _ingress_table(device: str) -> nft.Table:
    """netdev table, ingress chain on ``device``, a random-number rule: what impair(loss=) needs."""
    ingress = nft.Chain("in", [[nft.expr.Numgen(100)]], hook=nft.HOOK_INGRESS, device=device)
    return nft.Table("netdev", "probe", [ingress])


def _partition_table() -> nft.Table:
    """inet table, filter chain on prerouting, the refusing rules: what partition(), block() need."""
    pre = nft.Chain("pre", nft.statements.reject_refused(), hook=nft.HOOK_PREROUTING, priority=nft.PRIO_RAW)
    return nft.Table("inet", "probe", [pre])


def _dup_table() -> nft.Table:
    """ip table, filter chain on postrouting, a copy to the next hop: what impair(duplicate=) needs."""
    post = nft.Chain("post", [nft.statements.dup_to_nexthop(4)], hook=nft.HOOK_POSTROUTING)
    return nft.Table("ip", "probe", [post])


def _nft_transaction(table: nft.Table) -> tuple[bool, str]:
    """Create ``table`` in one transaction in the calling thread's namespace; (ok, detail)."""
    try:
        sock = nft.NftSocket()
    except KernelError as exc:
        return False, f"no nfnetlink socket: {exc.strerror}"
    with sock:
        batch = nft.Batch()
        batch.add_table(table.family, table.name)
        batch.add_contents(table)
        try:
            batch.commit(sock)
        except nft.NftError as exc:
            code = exc.errno or errno.EIO
            if code == errno.ETIMEDOUT:
                return False, f"no answer from nf_tables: {exc}"
            # "batch": the transaction itself was refused (EPERM without CAP_NET_ADMIN).
            what = "starting the transaction" if exc.request == "batch" else exc.request
            return False, f"{what}: {errno.errorcode.get(code, code)} {os.strerror(code)}"
    return True, "table, chain and rule created in a throwaway namespace"


# -- what doctor adds ----------------------------------------------------------------------------


def user_namespaces() -> Probe:
    from .session import userns_unavailable_reason

    reason = userns_unavailable_reason()
    return Probe(
        "user namespaces",
        reason is None,
        reason or "an unprivileged user may create them",
        "--netns-rootless (running the tests without root)",
    )


MS_REC, MS_SLAVE = 0x4000, 1 << 19


def private_mounts() -> Probe:
    """A thread's own mount namespace with mounts that stay inside: what a topology's /etc/hosts needs."""
    failure: list[str] = []

    def inside() -> None:
        # The thread unshares its mount namespace for itself; it (and the namespace) ends right after.
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_netns.CLONE_NEWNS) != 0:
            failure.append(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
        elif libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None) != 0:
            failure.append(f"mount --make-rslave /: {os.strerror(ctypes.get_errno())}")

    thread = threading.Thread(target=inside, name="netns-mount-probe")
    thread.start()
    thread.join()
    return Probe(
        "private mount namespaces",
        not failure,
        failure[0] if failure else "a thread may unshare its mounts",
        "the names of a topology in /etc/hosts of processes started inside (run, popen)",
        "mountns",
    )


def libpcap() -> Probe:
    import ctypes.util

    name = ctypes.util.find_library("pcap")
    if name is None:
        return Probe(
            "libpcap",
            False,
            "not found (apt install libpcap0.8)",
            "BPF filter= strings in sniff/capture (lfilter= works without it)",
            "libpcap",
        )
    return Probe("libpcap", True, name, "BPF filter= strings in sniff/capture", "libpcap")


def scapy() -> Probe:
    try:
        from importlib.metadata import version

        found = version("scapy")
    except Exception as exc:
        return Probe("scapy", False, f"not installed ({exc})", "send, sr1, sniff, capture")
    return Probe("scapy", True, f"scapy {found}", "send, sr1, sniff, capture")


def keep_on_failure() -> Probe:
    from .netns import Capabilities

    if not Capabilities.current().has(Capabilities.CAP_SYS_ADMIN):
        return Probe("kept namespaces (/run/netns)", False, "bind mounts need CAP_SYS_ADMIN", "--netns-keep-on-failure")
    if not os.access("/run", os.W_OK):
        return Probe("kept namespaces (/run/netns)", False, "/run is not writable", "--netns-keep-on-failure")
    return Probe("kept namespaces (/run/netns)", True, "/run writable, CAP_SYS_ADMIN held", "--netns-keep-on-failure")


def doctor_probes() -> list[Probe]:
    """Every probe, in the order ``doctor`` prints them."""
    steps: list[Callable[[], Probe | tuple[Probe, ...]]] = [
        privileges,
        network_namespaces,
        kernel,
        user_namespaces,
        kernel_features,
        private_mounts,
        libpcap,
        scapy,
        keep_on_failure,
    ]
    probes: list[Probe] = []
    for step in steps:
        try:
            result = step()
        except Exception as exc:  # a probe must never take doctor down
            result = Probe(step.__name__.replace("_", " "), None, f"probe failed: {type(exc).__name__}: {exc}", "?")
        probes.extend(result if isinstance(result, tuple) else [result])
    return probes


# -- the report header ---------------------------------------------------------------------------


def _sysctl(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def user_namespace_sysctls() -> str | None:
    """Which sysctl refuses unprivileged user namespaces (what --netns-rootless needs), or None."""
    for path, refused in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),  # Debian before 11
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),  # Ubuntu 23.10+
    ):
        if _sysctl(path) == refused:
            return f"{path} is {refused}"
    return None


def namespaces_unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, judged without making one (files only), or None.

    The first fixture makes one for real (``_kernel.unavailable_reason``);
    what files cannot show (a seccomp filter, a full namespace quota) is
    found there.
    """
    from .netns import Capabilities

    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces (no /proc/self/ns/net: built without CONFIG_NET_NS)"
    if _sysctl("/proc/sys/user/max_net_namespaces") == "0":
        return "/proc/sys/user/max_net_namespaces is 0"
    missing = Capabilities.current().missing()
    if not missing:
        return None
    refused = user_namespace_sysctls()
    rootless = f"--netns-rootless is refused too ({refused})" if refused else "or pass --netns-rootless"
    return (
        f"network namespaces need {' and '.join(missing)} (running as uid {os.getuid()}); "
        f"run as root or in a privileged container, {rootless}"
    )


def header_line(required: Sequence[str] = ()) -> str:
    """One line: privileges, whether namespaces can be made, the kernel, the features required.

    Reads a few files and creates nothing: it runs at every pytest start.
    Kernel features are probed when a test first needs one;
    ``python -m pytest_netns doctor`` probes and explains them all.
    """
    priv = privileges()
    reason = namespaces_unavailable_reason()
    if reason is not None:
        return f"netns: {priv.detail}; namespaces: UNAVAILABLE ({reason}); see python -m pytest_netns doctor"
    line = f"netns: {priv.detail}; namespaces: available; kernel {platform.release()}"
    if required:
        line += f"; required features: {', '.join(required)}"
    return line + "; features are probed when a test needs one (python -m pytest_netns doctor)"
