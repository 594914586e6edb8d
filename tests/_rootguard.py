"""Root-namespace guard: the network namespace a run starts in must end exactly as it began.

A pytest plugin (loaded by ``tests/conftest.py``, so it is always on, CI
included).  At session start it snapshots the network namespace pytest's
main thread is in, and at session end (after every fixture is torn down;
on the xdist controller only, once all workers are done) it snapshots it
again and fails the run, with a diff, if anything differs:

- links (name, kind, MTU, up, MAC address, master, queue discipline),
  addresses, routes of both families in every table, policy routing rules,
  queue disciplines;
- netfilter: nftables tables, chains, rules and sets (a netlink dump with
  pyroute2; set elements are not compared), and the legacy iptables tables
  that exist (their rules, counters left out);
- every network sysctl under ``/proc/sys/net`` that existed at the start
  (keys a kernel module adds when it loads on first use are not a change);
- ``/run/netns`` and every network namespace bind mount in the mount table;
- the namespace of pytest's main thread itself (a ``with ns:`` never left).

The project's tests run inside ``unshare --net`` (``dev/test``), so "root"
here is the private namespace the run started in, not the machine's initial
namespace: that is what the guard compares.  The mount table and
``/run/netns`` are the machine's own (``unshare --net`` keeps the mount
namespace), so a container or ``ip netns add`` started elsewhere during the
run shows up too; the diff says what it was.  Counters and timers are not
compared; the kernel frees dying namespaces asynchronously, so a difference
must persist for a few seconds before it counts.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable

import pytest

Snapshot = dict[str, dict[str, str]]
SNAPSHOT = pytest.StashKey["RootGuard"]()
#: How long a difference may take to go away (namespaces die asynchronously).
SETTLE = 3.0
#: Writable sysctls whose value the kernel makes up on first use.
VOLATILE_SYSCTLS = frozenset({
    "/proc/sys/net/ipv4/tcp_fastopen_key",  # generated when the namespace first uses TCP Fast Open
})
#: Attributes that count or identify rather than configure.
VOLATILE_ATTRS = frozenset({
    "NFTA_TABLE_HANDLE", "NFTA_TABLE_USE", "NFTA_CHAIN_HANDLE", "NFTA_CHAIN_USE", "NFTA_RULE_HANDLE",
    "NFTA_SET_HANDLE", "NFTA_COUNTER_BYTES", "NFTA_COUNTER_PACKETS", "NFTA_CHAIN_COUNTERS",
    "NFTA_RULE_POSITION", "NFTA_TABLE_OWNER", "NFTA_SET_USERDATA", "UNKNOWN",
})
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


# -- taking a snapshot ------------------------------------------------------------------------


def snapshot(netns_fd: int) -> Snapshot:
    """Everything the guard compares, read by a thread inside the namespace behind ``netns_fd``."""
    outcome: list[Snapshot | BaseException] = []

    def inside() -> None:
        try:
            if _libc.setns(netns_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the run's namespace")
            # This thread never leaves the namespace and ends right after.
            outcome.append(_read_all())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=inside, name="netns-rootguard")
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _read_all() -> Snapshot:
    result: Snapshot = {}
    sections: list[tuple[str, Callable[[], dict[str, str]]]] = [
        *_rtnl_sections(),
        ("nftables", _nftables),
        ("iptables (legacy)", _legacy_iptables),
        ("sysctls", _sysctls),
        ("named namespaces", _named_namespaces),
    ]
    for name, read in sections:
        try:
            result[name] = read()
        except Exception as exc:  # reported as a value, so before/after still compare
            result[name] = {"(unreadable)": f"{type(exc).__name__}: {exc}"}
    return result


def _rtnl_sections() -> list[tuple[str, Callable[[], dict[str, str]]]]:
    cache: dict[str, dict[str, dict[str, str]]] = {}

    def read(section: str) -> dict[str, str]:
        if not cache:
            cache["all"] = _rtnl()
        return cache["all"][section]

    return [(s, (lambda s=s: read(s))) for s in ("links", "addresses", "routes", "rules", "qdiscs")]


def _rtnl() -> dict[str, dict[str, str]]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = list(ipr.get_links())
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
        out: dict[str, dict[str, str]] = {"links": {}, "addresses": {}, "routes": {}, "rules": {}, "qdiscs": {}}
        for link in links:
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            master = link.get_attr("IFLA_MASTER")
            out["links"][names[link["index"]]] = (
                f"kind={kind or '-'} mtu={link.get_attr('IFLA_MTU')} up={bool(link['flags'] & 1)} "
                f"address={link.get_attr('IFLA_ADDRESS')} master={names.get(master, master)} "
                f"qdisc={link.get_attr('IFLA_QDISC')}"
            )
        for addr in ipr.get_addr():
            local = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
            out["addresses"][f"{names.get(addr['index'])} {local}/{addr['prefixlen']}"] = f"scope {addr['scope']}"
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.get_routes(family=family):
                out["routes"][_route_key(route, names)] = ""
            for rule in ipr.get_rules(family=family):
                attrs = " ".join(f"{a[0]}={a[1]}" for a in sorted(rule["attrs"], key=lambda a: a[0])
                                 if a[0] != "UNKNOWN")
                out["rules"][f"{family} action={rule['action']} {attrs}"] = ""
        for qdisc in ipr.get_qdiscs():
            key = f"{names.get(qdisc['index'])} parent={qdisc['parent']:#x} handle={qdisc['handle']:#x}"
            out["qdiscs"][key] = str(qdisc.get_attr("TCA_KIND"))
    return out


def _route_key(route, names: dict[int, str]) -> str:  # type: ignore[no-untyped-def]
    def attr(name: str) -> object:
        return route.get_attr(name)

    oif = attr("RTA_OIF")
    multipath = attr("RTA_MULTIPATH")
    hops = ",".join(f"{h.get_attr('RTA_GATEWAY')}@{names.get(h['oif'], h['oif'])}" for h in multipath or [])
    return (
        f"table={attr('RTA_TABLE') or route['table']} {attr('RTA_DST') or 'default'}/{route['dst_len']} "
        f"src={attr('RTA_SRC')}/{route['src_len']} prefsrc={attr('RTA_PREFSRC')} via={attr('RTA_GATEWAY')} "
        f"dev={names.get(oif, oif)} type={route['type']} proto={route['proto']} scope={route['scope']} "
        f"metric={attr('RTA_PRIORITY')} tos={route['tos']}" + (f" nexthops={hops}" if hops else "")
    )


def _plain(value: object) -> object:
    """A pyroute2 message or attribute as nested tuples, without counters and handles."""
    if hasattr(value, "get") and "attrs" in value:  # type: ignore[operator]
        return tuple((k, _plain(v)) for k, v in value["attrs"] if k not in VOLATILE_ATTRS)  # type: ignore[index]
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(value))
    return value


def _nftables() -> dict[str, str]:
    from pyroute2.nftables.main import NFTables

    out: dict[str, str] = {}
    nft = NFTables(nfgen_family=0)
    try:
        for table in nft.get_tables():
            out[f"table {table['nfgen_family']} {table.get_attr('NFTA_TABLE_NAME')}"] = repr(_plain(table))
        for chain in nft.get_chains():
            table, name = chain.get_attr("NFTA_CHAIN_TABLE"), chain.get_attr("NFTA_CHAIN_NAME")
            key = f"chain {chain['nfgen_family']} {table} {name}"
            out[key] = repr(_plain(chain))
        for rule in nft.get_rules():
            key = f"rules {rule['nfgen_family']} {rule.get_attr('NFTA_RULE_TABLE')} {rule.get_attr('NFTA_RULE_CHAIN')}"
            out[key] = out.get(key, "") + repr(_plain(rule)) + "\n"
        for nftset in nft.get_sets():
            key = f"set {nftset['nfgen_family']} {nftset.get_attr('NFTA_SET_TABLE')} {nftset.get_attr('NFTA_SET_NAME')}"
            out[key] = repr(_plain(nftset))
    finally:
        nft.close()
    return out


# Legacy x_tables: getsockopt(IPT_SO_GET_INFO / IPT_SO_GET_ENTRIES).  Only
# tables listed as existing are asked for: asking creates a table on demand.
_XT_FAMILIES = (
    # names file, level, socket family, offsets of next_offset and of the counters in an entry
    ("ip_tables_names", socket.IPPROTO_IP, socket.AF_INET, 90, 96),
    ("ip6_tables_names", socket.IPPROTO_IPV6, socket.AF_INET6, 142, 152),
)
_SO_GET_INFO, _SO_GET_ENTRIES = 64, 65


def _legacy_iptables() -> dict[str, str]:
    out: dict[str, str] = {}
    for names_file, level, family, next_at, counters_at in _XT_FAMILIES:
        try:
            with open(f"/proc/thread-self/net/{names_file}") as handle:
                tables = handle.read().split()
        except FileNotFoundError:
            continue
        for table in tables:
            out[f"{names_file.split('_')[0]} {table}"] = _xt_table_digest(family, level, table, next_at, counters_at)
    return out


def _getsockopt(sock: socket.socket, level: int, option: int, data: bytes) -> bytes:
    """getsockopt with an input buffer (``socket.getsockopt`` can only pass zeros)."""
    buffer = ctypes.create_string_buffer(len(data))  # exactly: the kernel checks the length
    ctypes.memmove(buffer, data, len(data))
    size = ctypes.c_uint32(len(data))
    if _libc.getsockopt(sock.fileno(), level, option, buffer, ctypes.byref(size)) != 0:
        raise OSError(ctypes.get_errno(), f"getsockopt({option})")
    return buffer.raw


def _xt_table_digest(family: int, level: int, table: str, next_at: int, counters_at: int) -> str:
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        info = _getsockopt(sock, level, _SO_GET_INFO, table.encode().ljust(32, b"\0") + bytes(52))
        num_entries, size = struct.unpack_from("=II", info, 76)
        request = table.encode().ljust(32, b"\0") + struct.pack("=I", size) + bytes(4 + size)
        entries = _getsockopt(sock, level, _SO_GET_ENTRIES, request)
    blob = bytearray(entries[40:40 + size])
    offset = 0
    while offset < size:
        blob[offset + counters_at:offset + counters_at + 16] = bytes(16)
        next_offset = struct.unpack_from("=H", blob, offset + next_at)[0]
        if next_offset == 0:
            break
        offset += next_offset
    return f"{num_entries} entries, {size} bytes, sha256 {hashlib.sha256(blob).hexdigest()[:16]}"


def _sysctls() -> dict[str, str]:
    out: dict[str, str] = {}
    for directory, _, files in os.walk("/proc/sys/net"):
        for name in files:
            path = os.path.join(directory, name)
            if path in VOLATILE_SYSCTLS:
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError:
                continue
            if not mode & stat.S_IWUSR or not mode & stat.S_IRUSR:
                continue  # read-only values are state, not settings; write-only ones cannot be compared
            try:
                with open(path) as handle:
                    out[path] = handle.read().strip()
            except OSError as exc:
                out[path] = f"<{errno.errorcode.get(exc.errno or 0, exc.errno)}>"
    return out


def _named_namespaces() -> dict[str, str]:
    out: dict[str, str] = {}
    for directory in ("/run/netns", "/var/run/netns"):
        if os.path.isdir(directory) and os.path.realpath(directory) == directory:
            for name in os.listdir(directory):
                out[f"{directory}/{name}"] = "entry"
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if fields[3].startswith("net:["):
                out[f"mount {fields[4]}"] = fields[3]
            elif fields[4] in ("/run/netns", "/var/run/netns"):
                optional = " ".join(fields[6:fields.index("-")])
                out[f"mount {fields[4]}"] = f"{fields[3]} {'shared' if 'shared:' in optional else 'private'}"
    return out


# -- comparing ----------------------------------------------------------------------------------


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """Readable differences; keys that only appear in ``after`` are ignored for sysctls."""
    lines = []
    for section in before:
        old, new = before[section], after.get(section, {})
        changes = []
        for key in sorted(old.keys() - new.keys()):
            changes.append(f"  - {key}" + (f" = {old[key]}" if old[key] else ""))
        if section != "sysctls":
            for key in sorted(new.keys() - old.keys()):
                changes.append(f"  + {key}" + (f" = {new[key]}" if new[key] else ""))
        for key in sorted(old.keys() & new.keys()):
            if old[key] != new[key]:
                changes.append(f"  ~ {key}: {old[key]!r} -> {new[key]!r}")
        if changes:
            lines += [f"{section}:", *changes]
    return lines


class RootGuard:
    """The run's starting namespace, held open, and its snapshot."""

    def __init__(self) -> None:
        self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.inode = os.fstat(self.fd).st_ino
        self.before = snapshot(self.fd)
        self.problems: list[str] = []

    def check(self) -> list[str]:
        """Compare now with the start; a difference must persist for ``SETTLE`` seconds."""
        deadline = time.monotonic() + SETTLE
        while True:
            problems = diff(self.before, snapshot(self.fd))
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        main_thread = os.stat("/proc/self/ns/net").st_ino
        if main_thread != self.inode:
            problems.append(
                f"pytest's main thread ends the run in net:[{main_thread}], not in the namespace it started in "
                f"(net:[{self.inode}]): a `with ns:` was entered and never left"
            )
        os.close(self.fd)
        return problems


# -- the plugin ---------------------------------------------------------------------------------


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if not _is_xdist_worker(session.config):
        session.config.stash[SNAPSHOT] = RootGuard()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    guard = session.config.stash.get(SNAPSHOT, None)
    if guard is None:
        return
    guard.problems = guard.check()
    if guard.problems and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    guard = terminalreporter.config.stash.get(SNAPSHOT, None)
    if guard is None or not guard.problems:
        return
    terminalreporter.write_sep("=", "root namespace guard: the run's starting namespace changed", red=True, bold=True)
    for line in guard.problems:
        terminalreporter.write_line(line)
    terminalreporter.write_line("(the run fails: nothing may change the namespace the tests started in)")
