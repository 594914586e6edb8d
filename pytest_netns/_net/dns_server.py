"""A DNS server for the models: one thread of the test process serves every zone's sockets.

A zone (a cluster's kube-dns, later Docker's embedded DNS) gives sockets it
created inside its own network namespace (a socket stays in the namespace it
was made in, whichever thread uses it) and an ``answer(query) -> response``
function; ``serve`` registers them with the one server thread, started on
first use, and the returned ``Served.close()`` unregisters and closes them
(a socket pins its namespace, so teardown must close them).  The thread stops
when nothing is left to serve.  No interpreter is started: answering is a
few dnspython calls.

UDP answers longer than the client allows (512 bytes, or its EDNS size) are
sent truncated with TC set, so the client retries over TCP.  TCP connections
carry length-prefixed messages (RFC 1035 4.2.2) and are read without blocking.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from collections.abc import Callable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode

from .._kernel.handle import handle_of
from ..errors import NetnsError
from ..namespace import Namespace

Answer = Callable[[dns.message.Message], dns.message.Message]

_MAX_TCP_BUFFER = 65535 + 2


class Served:
    """Sockets being served; ``close()`` stops serving them and closes them (idempotent)."""

    def __init__(self, server: _Server, sockets: Sequence[socket.socket]) -> None:
        self._server = server
        self.sockets = list(sockets)
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.remove(self)


def listen(ns: Namespace, address: str, port: int, *, backlog: int, doing: str) -> list[socket.socket]:
    """A UDP socket and a listening TCP socket on ``address:port``, made inside ``ns`` (they stay in it).

    A failure closes what was made and raises ``NetnsError`` starting with ``doing``.
    """
    sockets: list[socket.socket] = []
    try:
        with handle_of(ns).entered():
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
                sockets.append(sock)
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(backlog)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise NetnsError(f"{doing}: {exc}") from exc
    return sockets


def serve(sockets: Sequence[socket.socket], answer: Answer) -> Served:
    """Answer DNS queries arriving on ``sockets`` (UDP sockets, or listening TCP sockets) with ``answer``."""
    return _SERVER.add(sockets, answer)


def respond(query: dns.message.Message, answer: Answer) -> dns.message.Message:
    """``answer(query)``, or the error a server gives for what it does not answer."""
    if query.opcode() != dns.opcode.QUERY:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if len(query.question) != 1:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.FORMERR)
        return response
    try:
        return answer(query)
    except Exception:  # a fault in a zone must not stop the server: SERVFAIL, as a real server does
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response


def handle_wire(data: bytes, answer: Answer, *, limit: int | None) -> bytes | None:
    """The reply to one message in wire format (``None``: not a query worth an answer)."""
    try:
        query = dns.message.from_wire(data)
    except dns.message.ShortHeader:
        return None
    except dns.exception.DNSException:
        if len(data) < 12 or data[2] & 0x80:
            return None
        # FORMERR with the client's id, as servers answer what they cannot parse.
        return data[:2] + bytes([0x80 | (data[2] & 0x79), 0x01]) + bytes(8)
    if query.flags & dns.flags.QR:
        return None
    response = respond(query, answer)
    if limit is None:
        return response.to_wire()
    size = max(512, query.payload if query.edns >= 0 else 512)
    try:
        return response.to_wire(max_size=min(size, limit))
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()


class _Server:
    """The one thread serving every registered socket with a selector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._served: dict[int, Served] = {}
        #: What an accepted TCP connection sent so far, by fd.
        self._tcp_buffers: dict[int, bytearray] = {}

    def add(self, sockets: Sequence[socket.socket], answer: Answer) -> Served:
        served = Served(self, sockets)
        with self._lock:
            if self._thread is None:
                self._start()
            assert self._selector is not None
            for sock in sockets:
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ, (answer, served))
            self._served[id(served)] = served
        return served

    def remove(self, served: Served) -> None:
        with self._lock:
            selector = self._selector
            for sock in served.sockets:
                if selector is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        selector.unregister(sock)
                sock.close()
            # Connections accepted on this zone's listeners.
            if selector is not None:
                for key in list(selector.get_map().values()):
                    if key.data is not None and key.data[1] is served and key.fileobj not in served.sockets:
                        selector.unregister(key.fileobj)
                        self._tcp_buffers.pop(key.fd, None)
                        key.fileobj.close()  # type: ignore[union-attr]
            self._served.pop(id(served), None)
            thread = self._thread if not self._served else None
            if thread is not None:
                self._thread = self._selector = None
                os.write(self._wake_w, b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _start(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(
            target=self._run, args=(self._selector, self._wake_r, self._wake_w), name="netns-dns", daemon=True
        )
        self._thread.start()

    def _run(self, selector: selectors.BaseSelector, wake_r: int, wake_w: int) -> None:
        try:
            while True:
                events = selector.select()
                with self._lock:
                    if self._selector is not selector:
                        break  # stopped: nothing left to serve
                    for key, _ in events:
                        if key.data is None:
                            with contextlib.suppress(BlockingIOError):
                                os.read(wake_r, 512)
                            continue
                        if selector.get_map().get(key.fd) is not key:
                            continue  # unregistered by a teardown since select returned
                        answer, served = key.data
                        self._ready(selector, key.fileobj, answer, served)  # type: ignore[arg-type]
        finally:
            selector.close()
            os.close(wake_r)
            os.close(wake_w)

    def _ready(self, selector: selectors.BaseSelector, sock: socket.socket, answer: Answer, served: Served) -> None:
        try:
            if sock.type == socket.SOCK_DGRAM:
                data, peer = sock.recvfrom(65535)
                reply = handle_wire(data, answer, limit=65535)
                if reply is not None:
                    sock.sendto(reply, peer)
            elif sock in served.sockets:  # a listener
                conn, _ = sock.accept()
                conn.setblocking(False)
                self._tcp_buffers[conn.fileno()] = bytearray()
                selector.register(conn, selectors.EVENT_READ, (answer, served))
            else:
                self._tcp_read(selector, sock, answer)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            if sock.type == socket.SOCK_STREAM and sock not in served.sockets:
                self._drop(selector, sock)

    def _tcp_read(self, selector: selectors.BaseSelector, conn: socket.socket, answer: Answer) -> None:
        chunk = conn.recv(65535)
        buffer = self._tcp_buffers.setdefault(conn.fileno(), bytearray())
        if not chunk or len(buffer) + len(chunk) > 4 * _MAX_TCP_BUFFER:
            self._drop(selector, conn)
            return
        buffer += chunk
        while len(buffer) >= 2:
            length = int.from_bytes(buffer[:2], "big")
            if len(buffer) < 2 + length:
                return
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            reply = handle_wire(message, answer, limit=None)
            if reply is not None:
                # Answers are small; a client that does not read them loses its connection.
                conn.setblocking(True)
                conn.settimeout(1.0)
                try:
                    conn.sendall(len(reply).to_bytes(2, "big") + reply)
                finally:
                    conn.setblocking(False)

    def _drop(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        self._tcp_buffers.pop(conn.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn)
        conn.close()

    def threads(self) -> int:
        """1 while the server thread runs, else 0 (for tests)."""
        return 0 if self._thread is None else 1


_SERVER = _Server()


def running() -> bool:
    """Whether the server thread is running (it stops when nothing is served)."""
    return _SERVER.threads() == 1
