"""nf_tables transactions over ``netlink.NetlinkSocket``, in the calling thread's namespace.

A :class:`Batch` collects requests (``objects``) and commits them as one
atomic transaction whose acknowledgements are all read and checked: a
refused request raises :class:`NftError` naming it, with the kernel's text.
:func:`replace` and :func:`append` install a :class:`~.objects.Table` value;
each operation opens a ``NETLINK_NETFILTER`` socket on the calling thread
and closes it before returning.

pyroute2's ``NFTables`` is not used to write: its ``begin()``/``commit()``
send without ``NLM_F_ACK`` and never read the answer, so a rejected rule
would go unnoticed (``docs/kernel-facts.md``).
"""

from __future__ import annotations

import contextlib
import errno
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ...errors import KernelError
from ..netlink import NETLINK_NETFILTER, NetlinkSocket, Request, parse_attrs
from . import objects
from .objects import Chain, Element, Rule, Set, Table

#: Seconds to wait for an answer from nf_tables.
RECV_TIMEOUT = 5.0


class NftError(KernelError):
    """The kernel refused an nftables request, or did not answer it.

    A :class:`~pytest_netns.errors.KernelError`: ``errno`` is the kernel's
    error (ETIMEDOUT when no answer came), ``request`` names the refused
    message, ``detail`` holds the kernel's extended-ack text ("" if none),
    and ``operation`` what the public function was doing.
    """

    def __init__(self, err: int, request: str, detail: str | None = None, operation: str | None = None) -> None:
        doing = f"nftables: {request}" if operation is None else f"{operation} (nftables: {request})"
        super().__init__(err, doing, detail or "")
        self.request = request
        self.operation = operation

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.errno, self.request, self.detail, self.operation))


class NftSocket(NetlinkSocket):
    """A ``NETLINK_NETFILTER`` socket in the calling thread's namespace; its failures are :class:`NftError`."""

    what = "a netlink socket to nf_tables"
    silence = "no answer within {timeout:g} s"

    def __init__(self) -> None:
        super().__init__(NETLINK_NETFILTER, timeout=RECV_TIMEOUT, rcvbuf=1 << 20)

    def error(self, code: int, doing: str, detail: str = "") -> KernelError:
        return NftError(code, doing, detail)


@contextlib.contextmanager
def operation(doing: str) -> Iterator[NftSocket]:
    """A socket for one operation; an :class:`NftError` raised inside also names ``doing``."""
    try:
        with NftSocket() as sock:
            yield sock
    except NftError as exc:
        if exc.operation is not None:
            raise
        raise NftError(exc.errno or errno.EIO, exc.request, exc.detail, doing) from None


def exists(sock: NetlinkSocket, family: str, table: str, chain: str | None = None) -> bool:
    """Whether ``table`` (or ``chain`` in it) exists: one GET round trip.

    Worth it because the kernel makes any transaction that deletes
    something, or re-adds an existing base chain, wait for an RCU grace
    period (8-24 ms here), while one that only adds takes ~0.3 ms.
    """
    try:
        sock.query(objects.get(family, table, chain))
    except KernelError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


class Batch:
    """nf_tables requests committed together as one transaction."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._set_ids = 0

    def set_id(self) -> int:
        """A fresh id naming a set within this batch (for ``Lookup``/``Dynset`` of a set made in it)."""
        self._set_ids += 1
        return self._set_ids

    def add_table(self, family: str, name: str, *, flags: int = 0) -> None:
        """Create ``name`` if missing (an existing table is kept)."""
        self.requests.append(objects.new_table(family, name, flags=flags))

    def delete_table(self, family: str, name: str) -> None:
        """Delete ``name`` (the kernel answers ENOENT if it is missing)."""
        self.requests.append(objects.del_table(family, name))

    def fresh_table(self, sock: NetlinkSocket, family: str, name: str) -> None:
        """Start ``name`` empty, replacing it if it exists.

        Replacing is nft's own idiom, "add (so that the delete cannot
        fail), delete, add", which the kernel applies atomically together
        with whatever follows in the batch.
        """
        if exists(sock, family, name):
            self.add_table(family, name)
            self.delete_table(family, name)
        self.add_table(family, name)

    def add_chain(
        self,
        family: str,
        table: str,
        name: str,
        *,
        hook: int | None = None,
        priority: int = 0,
        kind: str = "filter",
        device: str | None = None,
    ) -> None:
        """Create a chain; with ``hook`` it is a base chain of type ``kind``."""
        chain = Chain(name, hook=hook, priority=priority, type=kind, device=device)
        self.requests.append(objects.new_chain(family, table, chain))

    def add_rule(self, family: str, table: str, chain: str, rule: Rule) -> None:
        """Append a rule made of ``rule``'s expressions to ``chain``."""
        self.requests.append(objects.new_rule(family, table, chain, rule))

    def flush_chain(self, family: str, table: str, name: str) -> None:
        """Delete every rule of the chain (``nft flush chain``)."""
        self.requests.append(objects.flush_chain(family, table, name))

    def delete_chain(self, family: str, table: str, name: str) -> None:
        """Delete an empty chain that no rule references once the batch is applied."""
        self.requests.append(objects.del_chain(family, table, name))

    def add_set(self, family: str, table: str, value: Set) -> None:
        """Create a set or map (an existing one of that name is kept)."""
        self.requests.append(objects.new_set(family, table, value))

    def delete_set(self, family: str, table: str, name: str) -> None:
        """Delete a set that no rule references once the batch is applied."""
        self.requests.append(objects.del_set(family, table, name))

    def add_elements(
        self, family: str, table: str, name: str, elements: Sequence[Element], *, set_id: int | None = None
    ) -> None:
        """Add elements (key, verdict or None) to a set or map."""
        if elements:
            self.requests.append(objects.new_elements(family, table, name, elements, set_id=set_id))

    def delete_elements(self, family: str, table: str, name: str, keys: list[bytes]) -> None:
        """Delete the elements of ``keys`` (each must be there)."""
        if keys:
            self.requests.append(objects.del_elements(family, table, name, keys))

    def add_contents(self, table: Table, chains: list[Chain] | None = None) -> None:
        """Create ``chains`` (default: all of the table's), then append every rule of the table."""
        for chain in table.chains if chains is None else chains:
            self.requests.append(objects.new_chain(table.family, table.name, chain))
        for chain in table.chains:
            for rule in chain.rules:
                self.add_rule(table.family, table.name, chain.name, rule)

    def commit(self, sock: NetlinkSocket | None = None) -> None:
        """Send the batch on ``sock`` (or a fresh socket of the calling thread) and check every answer.

        nfnetlink processes a batch synchronously inside ``send()`` and
        queues one answer per request (on failure the whole batch is aborted
        and every request still gets its answer; a refused batch gets a
        single answer), so all answers wait when ``send()`` returns.
        """
        if not self.requests:
            return
        if sock is None:
            with NftSocket() as own:
                return self.commit(own)
        sock.execute(self.requests, frame=objects.batch_frame())


def replace(table: Table, doing: str) -> NftTable:
    """Install ``table`` with its chains and rules, atomically replacing a table of that name."""
    batch = Batch()
    with operation(doing) as sock:
        batch.fresh_table(sock, table.family, table.name)
        batch.add_contents(table)
        batch.commit(sock)
    return NftTable(table.family, table.name)


def append(table: Table, doing: str) -> NftTable:
    """Append ``table``'s rules to its chains, creating the table and the chains that are missing first.

    Each chain is looked for first: re-adding an existing base chain would
    cost a grace period.
    """
    batch = Batch()
    with operation(doing) as sock:
        missing = [chain for chain in table.chains if not exists(sock, table.family, table.name, chain.name)]
        if missing:
            batch.add_table(table.family, table.name)
        batch.add_contents(table, missing)
        batch.commit(sock)
    return NftTable(table.family, table.name)


@dataclass(frozen=True)
class NftTable:
    """Handle on a table made by this package.

    ``remove()`` deletes the table (and with it every chain and rule in it)
    from the network namespace of the calling thread, which must be the one
    the table was created in.  Removing a table that is already gone is not
    an error.
    """

    family: str
    name: str

    def remove(self) -> None:
        """Delete the table; a missing table is silently accepted."""
        delete_table(self.family, self.name, missing_ok=True)


def delete_table(family: str, name: str, *, missing_ok: bool = True) -> None:
    """Delete table ``family``/``name`` in the calling thread's namespace.

    With ``missing_ok`` a table that does not exist is not an error.
    """
    check_family(family)
    check_table_name(name)
    with operation(f"deleting nftables table {family} {name}") as sock:
        if missing_ok and not exists(sock, family, name):
            return
        batch = Batch()
        batch.delete_table(family, name)
        batch.commit(sock)


def chain_names(sock: NetlinkSocket, family: str, table: str) -> set[str]:
    """The names of the chains of ``table`` (one dump; an empty set if the table is missing)."""
    names = set()
    for message in sock.dump_raw(objects.list_chains(family, table)):
        attrs = parse_attrs(message, 20, len(message))
        if attrs.get(objects.NFTA_CHAIN_TABLE, b"").rstrip(b"\0").decode() == table:
            names.add(attrs.get(objects.NFTA_CHAIN_NAME, b"").rstrip(b"\0").decode())
    return names


def list_tables() -> list[tuple[str, str]]:
    """(family, name) of every nftables table in the calling thread's namespace."""
    tables = []
    with operation("listing nftables tables") as sock:
        for message in sock.dump_raw(objects.list_tables()):
            (number,) = struct.unpack_from("=B", message, 16)
            name = parse_attrs(message, 20, len(message)).get(objects.NFTA_TABLE_NAME, b"")
            tables.append((objects.FAMILY_NAMES.get(number, str(number)), name.rstrip(b"\0").decode()))
    return tables


def check_family(family: object) -> str:
    if family not in objects.FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(sorted(objects.FAMILIES))}")
    return family


def check_table_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"table name {name!r} must be 1-200 characters")
    return name
