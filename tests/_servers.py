"""Servers in namespaces for the tests that check real traffic (clusters, Docker hosts).

A ``Responder`` listens inside a namespace on threads of the test process
and greets each TCP connection (or answers each UDP datagram) with
"<label> <peer address>", so a test sees both who served it and whom the
server saw.  ``ask`` connects from a namespace and returns that pair;
``first_datagram_arrives`` checks that a link carries its very first packet.
The ``servers`` fixture (tests/conftest.py) closes the Responders a test
started before its namespaces are torn down.
"""

from __future__ import annotations

import socket
import threading

from pytest_netns import Namespace


class Responder:
    """A server in ``ns`` on threads of the test process.

    Each TCP connection is greeted with "<label> <peer address>" and then
    echoed; each UDP datagram is answered with the same line.
    """

    def __init__(
        self, ns: Namespace, port: int, *, label: str | None = None, proto: str = "tcp", host: str = "0.0.0.0"
    ) -> None:
        self.label = label or ns.name
        self.proto = proto
        with ns:  # the socket lives in the namespace it was made in
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        if proto == "tcp":
            self.sock.listen(128)
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                if self.proto == "tcp":
                    conn, peer = self.sock.accept()
                    conn.sendall(f"{self.label} {peer[0]}\n".encode())
                    self.connections.append(conn)
                    threading.Thread(target=self._echo, args=(conn,), daemon=True).start()
                else:
                    _, peer = self.sock.recvfrom(2048)
                    if peer is None:  # shut down
                        return
                    self.sock.sendto(f"{self.label} {peer[0]}\n".encode(), peer)
            except OSError:
                return

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        """After the greeting, echo what the client sends until it closes (the connection stays usable)."""
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()/recvfrom()
        except OSError:
            pass
        self.sock.close()
        self.thread.join()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # ends its echo thread
            except OSError:
                pass
            conn.close()


def connect(ns: Namespace, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A TCP connection from ``ns`` to ``address`` (the socket is made inside ``ns``)."""
    with ns:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def ask(ns: Namespace, address: tuple[str, int], *, proto: str = "tcp", timeout: float = 5.0) -> tuple[str, str]:
    """Connect (or send a datagram) from ``ns``; return (label of the server that answered, address the server saw).

    TCP reads up to the greeting's newline, so a server may keep the
    connection open or close it.
    """
    if proto == "udp":
        with ns:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.send(b"?")
            data = sock.recv(256)
    else:
        with connect(ns, address, timeout) as sock:
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    label, peer = data.decode().split()
    return label, peer


def first_datagram_arrives(a: Namespace, b: Namespace, host: str, family: int = socket.AF_INET) -> bool:
    """Whether one datagram sent from ``a`` to ``host`` (in ``b``) arrives within 0.5 s: a lost first ARP request
    or neighbour solicitation costs the kernel a 1 s retransmit."""
    with b:
        server = socket.socket(family, socket.SOCK_DGRAM)
    with a:
        client = socket.socket(family, socket.SOCK_DGRAM)
    with server, client:
        server.bind((host, 7))
        server.settimeout(0.5)
        client.sendto(b"first", (host, 7))
        try:
            return server.recv(16) == b"first"
        except TimeoutError:
            return False
