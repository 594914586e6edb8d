"""One nf_tables socket per node, shared by kube-proxy's rules and the NetworkPolicy enforcer.

A node's socket lives from its first use to the node's teardown: opening one per
transaction costs a socket each time, and closing a socket after a transaction
that removed rules waits for the kernel's deferred destruction of them (an RCU
grace period, ~13 ms), which would be paid on every change.
"""

from __future__ import annotations

from ..._kernel import nft as _nft
from ..._kernel.handle import handle_of
from .objects import Node


class NodeSockets:
    """The nf_tables socket of each node, made in the node's namespace on first use, closed with the node."""

    def __init__(self) -> None:
        self._sockets: dict[str, _nft.NftSocket] = {}

    def of(self, node: Node) -> _nft.NftSocket:
        sock = self._sockets.get(node.name)
        if sock is None:
            handle = handle_of(node)
            with handle.entered():
                sock = _nft.NftSocket()  # a netlink socket acts in the namespace it was made in
            self._sockets[node.name] = sock
            handle.add_cleanup(lambda: self._close(node.name), f"closing the nf_tables socket of {node.name!r}")
        return sock

    def _close(self, name: str) -> None:
        sock = self._sockets.pop(name, None)
        if sock is not None:
            sock.close()
