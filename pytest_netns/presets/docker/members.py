"""The Docker host's namespaces: the host and external machine (``_Addressed``) and ``Container``."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import dns.exception

from ..._kernel.handle import handle_of
from ..._net.hosts import HostsFile, Start
from ...errors import NetnsError
from ...namespace import Namespace
from . import embedded_dns
from .networks import Network

IPv4 = ipaddress.IPv4Address


class _Addressed(Namespace):
    """A namespace whose ``ip`` is the address the model gave it, not the first one the kernel lists."""

    def __init__(self, name: str, *, ip: IPv4, kill_grace: float) -> None:
        super().__init__(name, kill_grace=kill_grace, _defer_setup=True)
        self._ip = ip

    @property
    def ip(self) -> IPv4:
        """Its address in the model (the host: its outside address)."""
        return self._ip


class Container(_Addressed):
    """A container (a ``Namespace``): ``ip`` is its address on the network it was created on (``eth0``).

    ``networks`` maps each network it joined to its address there, in joining
    order (``eth0``, ``eth1``, ...).  On a user-defined network it has
    Docker's embedded DNS: ``resolve(name)`` asks it, and so do processes
    started with ``run``/``popen`` (their resolv.conf says ``nameserver
    127.0.0.11``) and in-process code inside it (``with container:``).
    """

    def __init__(self, name: str, *, ip: IPv4, kill_grace: float) -> None:
        super().__init__(name, ip=ip, kill_grace=kill_grace)
        #: (network, address, aliases) in joining order; replaced whole (the DNS thread reads it).
        self._endpoints: tuple[tuple[Network, IPv4, tuple[str, ...]], ...] = ()
        self._dns: embedded_dns.EmbeddedDns | None = None
        self._files: HostsFile | None = None
        self._files_lock = threading.Lock()

    @property
    def networks(self) -> Mapping[str, IPv4]:
        """Network name -> its address there, in joining order."""
        return MappingProxyType({network.name: address for network, address, _ in self._endpoints})

    def aliases(self, network: str) -> tuple[str, ...]:
        """Its aliases on ``network`` (a name it joined)."""
        for joined, _, aliases in self._endpoints:
            if joined.name == network:
                return aliases
        raise ValueError(f"container {self.name!r} is not on network {network!r} (it is on {', '.join(self.networks)})")

    def resolve(self, name: str) -> IPv4:
        """The address Docker's embedded DNS (127.0.0.11, asked from inside) gives ``name`` for this container.

        An unknown name, or a container only on the default bridge (which
        resolves no container names), raises ``ValueError``.
        """
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")
        if self._dns is None:
            raise ValueError(
                f"no name {name!r} for container {self.name!r}: it is only on the default bridge, "
                "which has no embedded DNS (use a user-defined network)"
            )
        self._serve_dns()
        try:
            with handle_of(self).entered():
                found = embedded_dns.lookup(name)
        except dns.exception.Timeout:
            raise NetnsError(
                f"resolving {name!r} in container {self.name!r}: no answer from {embedded_dns.DNS_IP}"
            ) from None
        if not found:
            raise ValueError(
                f"no name {name!r} for container {self.name!r} in Docker's embedded DNS "
                f"(networks {', '.join(n.name for n in self._dns_networks())})"
            )
        return found[0]

    def __repr__(self) -> str:
        return f"<Container {self.name!r} {self.ip}>" if not self.closed else super().__repr__()

    # Whatever runs inside may ask 127.0.0.11: the server is handed its sockets first.

    def __enter__(self) -> Container:
        self._serve_dns()
        super().__enter__()
        return self

    @property
    def fd(self) -> int:
        self._serve_dns()
        return super().fd

    @property
    def path(self) -> str:
        self._serve_dns()
        return super().path

    # -- the Docker host's side ----------------------------------------------------------------

    def _serve_dns(self) -> None:
        if self._dns is not None:
            self._dns.serve()

    def _dns_networks(self) -> Sequence[Network]:
        """Its user-defined networks in joining order: where its embedded DNS looks names up."""
        return [network for network, _, _ in self._endpoints if network.user_defined]

    def _in_process_lookup(self, name: str) -> list[IPv4]:
        """``socket.getaddrinfo``'s answer for a thread inside (``_net.resolver``): the embedded DNS, or no names."""
        return embedded_dns.lookup(name) if self._dns is not None else []

    def _joined(self, network: Network, address: IPv4, aliases: Sequence[str]) -> None:
        """Record a new endpoint; the first user-defined network starts the embedded DNS and resolv.conf."""
        self._endpoints = (*self._endpoints, (network, address, tuple(aliases)))
        if network.user_defined and self._dns is None:
            self._dns = embedded_dns.EmbeddedDns(self, self._dns_networks)
            # The files are made when the first process starts: most containers of a test start none.
            handle_of(self).spawner = self._spawn_with_files

    def _spawn_with_files(self, start: Start, kwargs: dict[str, Any]) -> Any:
        """Start a process under Docker's resolv.conf and hosts file (made on first use)."""
        self._serve_dns()
        with self._files_lock:
            if self._files is None:
                files = HostsFile(resolv_conf=embedded_dns.RESOLV_CONF)
                files.update({self.name: [self.ip]})
                self._files = files
        return self._files.spawn_via(start, kwargs)

    def _stop_dns(self) -> None:
        """Close the DNS sockets (they pin the namespace); before the namespace is released."""
        if self._dns is not None:
            self._dns.close()

    def _close_files(self) -> None:
        """Remove the private resolv.conf/hosts (after the namespace and its processes are gone)."""
        if self._files is not None:
            self._files.close()
