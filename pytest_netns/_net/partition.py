"""Partitions: namespaces cut off from each other, silently or refusing, and healed again.

``partition(*groups)`` cuts every pair of namespaces in different groups,
both ways; ``block(src, dst)`` cuts ``src``'s packets to ``dst`` (both ways
unless ``one_way``), dropping them or, with ``reject``, refusing them.

How: each namespace that must stop receiving gets one nftables table of its
own (``rules.partition_table``), installed in one transaction: a prerouting
chain that drops packets whose source is an address of a namespace it is cut
from.  Dropping where packets arrive, before routing, is what makes it
silent: a drop in the sender's own output path would fail its ``sendto``
with EPERM, which no real partition does; routed traffic between groups is
dropped by the namespace it is routed to, whatever routers lie between.
Addresses are read from the kernel when the partition is made.

Healing marks those tables dormant (the kernel unhooks their chains): one
message per namespace, ~0.05 ms, where deleting a table makes the kernel
wait for an RCU grace period (~13 ms per namespace here).  The dormant
tables go with their namespaces, or are deleted by ``release_all()``, which
the pytest plugin calls at the end of every test: a test that never heals
leaves nothing in place for the next one, even on a namespace that outlives
it (a module-scoped topology).  A namespace that is torn down first heals
the partition for the others (its addresses may be given out again).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import itertools
import socket
import threading
from collections.abc import Iterable, Sequence

from .._kernel import netlink as _netlink
from .._kernel import nft
from .._kernel import rtnl as _rtnl
from .._kernel.handle import handle_of
from ..errors import FeatureUnavailable, KernelError, NetnsError
from ..namespace import Namespace
from . import rules

__all__ = ["Group", "Partition", "block", "partition", "release_all"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: A group: namespaces, or one namespace on its own.
Group = Namespace | Iterable[Namespace]

#: Errors that mean the kernel lacks a piece of nf_tables (a module it could not load).
_MISSING = (errno.EOPNOTSUPP, errno.ENOENT, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT)

_numbers = itertools.count(1)
_live: list[Partition] = []
_live_lock = threading.Lock()

# What a member's table is doing.
_CUT, _DORMANT, _GONE = "cut", "dormant", "gone"


class Partition:
    """A cut between namespaces, made by ``partition()`` or ``block()``, in force until healed.

    ``groups`` are the sides as given (for ``block``: ``(src, dst)``),
    ``active`` whether the cut is in force.  Use it as a context manager
    (healed at the end of the block) or call ``heal()``; anything still in
    place is removed at the end of the test (or when a namespace of it is
    torn down).
    """

    def __init__(
        self,
        groups: Sequence[tuple[Namespace, ...]],
        blocks: dict[Namespace, list[Namespace]],
        *,
        one_way: bool,
        reject: bool,
        kind: str,
    ) -> None:
        self.groups: tuple[tuple[Namespace, ...], ...] = tuple(groups)
        #: Only ``src``'s packets to ``dst`` are cut (``block(one_way=True)``).
        self.one_way = one_way
        #: Packets are refused (TCP reset, ICMP port unreachable) instead of dropped.
        self.reject = reject
        self._kind = kind
        self._blocks = blocks
        self._table = f"{nft.TABLE_PREFIX}_cut_{next(_numbers)}"
        self._state: dict[Namespace, str] = {}
        self._lock = threading.RLock()

    # -- what it is --------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the cut is in force (False once healed)."""
        return _CUT in self._state.values()

    @property
    def namespaces(self) -> list[Namespace]:
        """Every namespace of the groups, in order."""
        return [ns for group in self.groups for ns in group]

    def __repr__(self) -> str:
        sides = [", ".join(ns.name for ns in group) for group in self.groups]
        if self._kind == "block":
            text = f"block {sides[0]} {'->' if self.one_way else '<->'} {sides[1]}"
            text += ", reject" if self.reject else ""
        else:
            text = " | ".join(sides)
        return f"<Partition {text} ({'active' if self.active else 'healed'})>"

    def __enter__(self) -> Partition:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.heal()

    # -- cutting and healing ---------------------------------------------------------------------------

    def _cut(self) -> None:
        """Install the rules: one transaction per receiving namespace; undone if one fails."""
        for ns in self.namespaces:
            handle_of(ns).check_open()
        involved = dict.fromkeys([*self._blocks, *(src for srcs in self._blocks.values() for src in srcs)])
        addresses = {ns: _addresses(ns) for ns in involved}
        with _live_lock:
            _live.append(self)
        batches: dict[tuple[IPAddress, ...], nft.Batch] = {}  # the members of a group block the same addresses
        try:
            for dst, sources in self._blocks.items():
                own = set(addresses[dst])
                blocked = tuple(a for a in dict.fromkeys(a for src in sources for a in addresses[src]) if a not in own)
                if blocked not in batches:
                    batches[blocked] = _batch(rules.partition_table(self._table, blocked, reject=self.reject))
                doing = f"cutting {dst.name!r} off from {', '.join(repr(src.name) for src in sources)}"
                with self._lock:
                    _install(dst, batches[blocked], doing)
                    self._state[dst] = _CUT
        except BaseException:
            try:
                self._dispose()
            except Exception:  # the first error is the one to report
                pass
            raise
        for ns in involved:  # a source torn down first may see its addresses given out again
            handle_of(ns).add_cleanup(functools.partial(self._closing, ns), f"healing partition {self._table}")

    def heal(self) -> None:
        """End the cut in every namespace at once: traffic flows again.  Idempotent.

        Connections that stalled resume (TCP retransmits); what was dropped
        while cut stays lost.  A namespace already torn down is skipped.
        """
        failures: list[KernelError] = []
        with self._lock:
            for ns, state in list(self._state.items()):
                if state != _CUT:
                    continue
                if ns.closed:
                    self._state[ns] = _GONE
                    continue
                try:
                    _set_dormant(ns, self._table, f"healing {self!r} in {ns.name!r}")
                except KernelError as exc:
                    failures.append(exc)
                    continue
                self._state[ns] = _DORMANT
        if failures:
            raise failures[0]

    def _closing(self, ns: Namespace) -> None:
        """``ns`` is being torn down (its table goes with it): heal the others, whose rules name its addresses."""
        with self._lock:
            if ns in self._state:
                self._state[ns] = _GONE
        self.heal()
        if all(state == _GONE for state in self._state.values()):
            _forget(self)

    def _leftovers(self) -> list[Namespace]:
        """The namespaces still holding this partition's (dormant) table, now counted as gone."""
        with self._lock:
            left = [ns for ns, state in self._state.items() if state == _DORMANT and not ns.closed]
            self._state = dict.fromkeys(self._state, _GONE)
        return left

    def _dispose(self) -> None:
        """Heal, then delete the tables of the namespaces still there."""
        _forget(self)
        try:
            self.heal()
        finally:
            problems = _delete_tables({ns: [self._table] for ns in self._leftovers()})
        if problems:
            raise problems[0]


# -- the public functions --------------------------------------------------------------------------------


def partition(*groups: Group) -> Partition:
    """Cut the groups off from each other: packets between namespaces of different groups vanish.

    Each group is an iterable of namespaces (or one namespace).  Both
    directions, silently: the sender gets no error and no ICMP, a TCP
    connect times out, established connections stall and resume after the
    heal.  Namespaces in no group are unaffected; routed traffic between
    groups is cut too, whatever routers lie between (a router that
    masquerades hides the addresses behind it: put it in their group).
    Use it as a context manager, or call ``heal()``; what is still in place
    is removed at the end of the test.  Fewer than two groups, or a
    namespace in two groups, raise ``ValueError`` naming it.
    """
    if len(groups) < 2:
        raise ValueError(f"partition() needs at least two groups, got {len(groups)}: {groups!r}")
    sides = _sides(groups, [f"group {i + 1}" for i in range(len(groups))])
    blocks = {
        ns: [other for j, side in enumerate(sides) if j != i for other in side]
        for i, mine in enumerate(sides)
        for ns in mine
    }
    cut = Partition(sides, blocks, one_way=False, reject=False, kind="partition")
    cut._cut()
    return cut


def block(src: Group, dst: Group, *, one_way: bool = False, reject: bool = False) -> Partition:
    """Cut ``src``'s packets to ``dst`` (each a namespace or an iterable of them), and back unless ``one_way``.

    Silent drops as in ``partition()``; with ``reject=True`` the sender
    gets a TCP reset, or an ICMP port unreachable for other protocols, so
    a connect is refused at once: a crashed host rather than a cut cable.
    The reject reaches the sender even when the block is two-way.
    Returns the ``Partition``, healed as ``partition()``'s.
    """
    for name, value in (("one_way", one_way), ("reject", reject)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    sides = _sides((src, dst), ["src", "dst"])
    blocks = {ns: list(sides[0]) for ns in sides[1]}
    if not one_way:
        blocks.update({ns: list(sides[1]) for ns in sides[0]})
    cut = Partition(sides, blocks, one_way=one_way, reject=reject, kind="block")
    cut._cut()
    return cut


def release_all() -> None:
    """Heal every partition still in place and delete its tables: the end of a test.

    One transaction per namespace, the namespaces in parallel: a deletion
    makes the kernel wait for an RCU grace period (~13 ms here), and the
    waits of concurrent transactions overlap (5 namespaces: 70 ms one after
    the other, 16 ms at once).  Raises ``NetnsError`` listing what failed
    (after trying everything).
    """
    with _live_lock:
        live = list(_live)
        _live.clear()
    problems: list[BaseException] = []
    tables: dict[Namespace, list[str]] = {}
    for cut in live:
        try:
            cut.heal()
        except Exception as exc:
            problems.append(exc)
        for ns in cut._leftovers():
            tables.setdefault(ns, []).append(cut._table)
    problems += _delete_tables(tables)
    if problems:
        lines = "\n".join(f"  - {type(p).__name__}: {p}" for p in problems)
        raise NetnsError(f"removing the partitions left in place failed:\n{lines}")


# -- internals ------------------------------------------------------------------------------------------


def _sides(groups: Sequence[object], labels: list[str]) -> list[tuple[Namespace, ...]]:
    """Each group as a tuple of namespaces; ValueError naming an empty group, a stranger or a namespace in two."""
    sides: list[tuple[Namespace, ...]] = []
    seen: dict[int, str] = {}
    for label, group in zip(labels, groups, strict=True):
        if isinstance(group, Namespace):
            members: tuple[object, ...] = (group,)
        elif isinstance(group, (str, bytes)) or not isinstance(group, Iterable):
            raise ValueError(f"{label} must be a namespace or an iterable of namespaces, got {group!r}")
        else:
            members = tuple(group)
        if not members:
            raise ValueError(f"{label} is empty: every group needs at least one namespace")
        for member in members:
            if not isinstance(member, Namespace):
                raise ValueError(f"{label} holds {member!r}, which is not a Namespace")
            where = seen.get(id(member))
            if where is not None:
                place = f"twice in {label}" if where == label else f"in {where} and in {label}"
                raise ValueError(f"namespace {member.name!r} is {place}: a namespace can be on one side only")
            seen[id(member)] = label
        sides.append(members)  # type: ignore[arg-type]
    return sides


def _addresses(ns: Namespace) -> list[IPAddress]:
    """Every address of ``ns`` but loopback's (127.0.0.0/8, ::1), as the kernel has them now.

    One RTM_GETADDR dump read by hand (``Namespace.addresses()`` decodes with
    pyroute2: 0.25 ms a namespace, most of the time a cut takes).
    """
    request = _netlink.Request(
        _rtnl.RTM_GETADDR, 0, _rtnl.IFADDR.pack(0, 0, 0, 0, 0), f"listing addresses in {ns.name!r}"
    )
    found: list[IPAddress] = []
    for message in handle_of(ns).rtnl.dump_raw(request):
        family = message[_netlink.HEADER.size]
        attrs = _netlink.parse_attrs(message, _netlink.HEADER.size + _rtnl.IFADDR.size, len(message))
        raw = attrs.get(_rtnl.IFA_LOCAL) or attrs.get(_rtnl.IFA_ADDRESS)
        if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(raw)
        if not address.is_loopback:
            found.append(address)
    return found


def _batch(table: nft.Table) -> nft.Batch:
    """The transaction that creates ``table``, encoded once (it can be sent to several namespaces)."""
    batch = nft.Batch()
    batch.add_table(table.family, table.name)
    batch.add_contents(table)
    return batch


def _install(ns: Namespace, batch: nft.Batch, doing: str) -> None:
    try:
        with handle_of(ns).entered(), nft.operation(doing) as sock:
            batch.commit(sock)
    except KernelError as exc:
        if exc.errno in _MISSING:
            raise FeatureUnavailable(
                f"{doing}: partitions need nftables filter chains with reject (nf_tables, nft_reject_inet), "
                f"which the running kernel refused: {exc}",
                feature="nft-filter",
            ) from None
        raise


def _set_dormant(ns: Namespace, table: str, doing: str) -> None:
    batch = nft.Batch()
    batch.add_table("inet", table, flags=nft.NFT_TABLE_F_DORMANT)
    with handle_of(ns).entered(), nft.operation(doing) as sock:
        batch.commit(sock)


def _delete_tables(tables: dict[Namespace, list[str]]) -> list[BaseException]:
    """Delete each namespace's ``tables`` (one transaction each, all at once); the failures."""
    problems: list[BaseException] = []

    def delete(ns: Namespace, names: list[str]) -> None:
        batch = nft.Batch()
        for name in names:
            batch.delete_table("inet", name)
        try:
            with handle_of(ns).entered(), nft.operation(f"deleting healed partitions in {ns.name!r}") as sock:
                batch.commit(sock)
        except (KernelError, NetnsError) as exc:
            if not ns.closed:  # torn down meanwhile: its tables went with it
                problems.append(exc)

    if len(tables) == 1:
        delete(*next(iter(tables.items())))
        return problems
    threads = [threading.Thread(target=delete, args=item, name="netns-partition-release") for item in tables.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return problems


def _forget(cut: Partition) -> None:
    with _live_lock:
        if cut in _live:
            _live.remove(cut)
