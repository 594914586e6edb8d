"""The helper process that finishes closing AF_PACKET sockets (see ``_afpacket.close_later``).

Run as a script (``python -I -S packet_closer.py``) with a ``SOCK_SEQPACKET``
Unix socket as its stdin; standard library only.  Messages from the test
process: ``F`` + id carrying a descriptor (``SCM_RIGHTS``); ``R`` + id once
the sender has closed its own copy (the helper's close must be the last
one, or the sender would wait); ``W`` + id, answered ``D`` + id when every
released socket so far is closed.  It exits when the test process is gone
(end of file); what it still holds is then closed by the kernel.

After the first message of a burst it sleeps ``BATCH_DELAY`` before reading
the rest: a message that finds nobody waiting wakes nobody, and a helper
woken for every socket would take the CPU from the test it serves.
"""

from __future__ import annotations

import array
import os
import socket
import threading
import time

MAX_THREADS = 64  # each waits in the kernel for a grace period, holding no CPU
BATCH_DELAY = 0.01
_CMSG = socket.CMSG_SPACE(4 * 8)


class Helper:
    def __init__(self, link: socket.socket) -> None:
        self.link = link
        self.cond = threading.Condition()
        self.work: list[int] = []
        self.held: dict[bytes, list[int]] = {}
        self.idle = self.threads = self.open = 0

    def serve(self) -> None:
        while True:
            try:
                batch = [self.link.recvmsg(16, _CMSG)]
            except OSError:
                return
            if batch[0][0]:
                time.sleep(BATCH_DELAY)
                self.link.setblocking(False)
                try:
                    while batch[-1][0]:  # an empty message is the end: the test process is gone
                        batch.append(self.link.recvmsg(16, _CMSG))
                except BlockingIOError:
                    pass
                except OSError:
                    return
                self.link.setblocking(True)
            for data, ancillary, _flags, _addr in batch:
                if not data:
                    return  # the test process is gone
                self.handle(data[:1], data[1:9], ancillary)

    def handle(self, kind: bytes, ident: bytes, ancillary: list[tuple[int, int, bytes]]) -> None:
        for level, what, payload in ancillary:
            if level == socket.SOL_SOCKET and what == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self.held.setdefault(ident, []).extend(fds)
        if kind == b"R":
            with self.cond:
                released = self.held.pop(ident, [])
                self.work.extend(released)
                self.open += len(released)
                spawn = max(0, min(len(self.work) - self.idle, MAX_THREADS - self.threads))
                self.threads += spawn
                self.cond.notify_all()
            for _ in range(spawn):
                threading.Thread(target=self.close_forever, daemon=True).start()
        elif kind == b"W":
            threading.Thread(target=self.answer, args=(ident,), daemon=True).start()

    def close_forever(self) -> None:
        while True:
            with self.cond:
                self.idle += 1
                while not self.work:
                    self.cond.wait()
                self.idle -= 1
                fd = self.work.pop()
            os.close(fd)  # waits ~16 ms for the kernel's grace period; the threads overlap them
            with self.cond:
                self.open -= 1
                self.cond.notify_all()

    def answer(self, ident: bytes) -> None:
        with self.cond:
            while self.open:
                self.cond.wait()
        self.link.send(b"D" + ident)


if __name__ == "__main__":
    os.nice(10)  # never ahead of the tests on a busy machine
    Helper(socket.socket(fileno=0)).serve()
