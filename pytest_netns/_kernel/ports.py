"""``wait_for_port``'s kernel side: TCP connects from inside a namespace, and the processes that were to listen."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..errors import NetnsTimeout, ProcessExited
from . import process as _process
from .handle import NetnsHandle


def wait_for_port(
    handle: NetnsHandle,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    timeout: float,
    watched: Sequence[subprocess.Popen[Any]],
    *,
    any_exit: bool,
    homes: Mapping[subprocess.Popen[Any], str],
) -> None:
    """Connect (and close) from inside until ``address:port`` accepts, every 20 ms.

    ``ProcessExited`` as soon as a ``watched`` process has exited (with any
    code if ``any_exit``, else with an error); ``NetnsTimeout`` after
    ``timeout`` seconds.  ``homes`` names the namespace of each process ``popen`` started.
    """
    __tracebackhide__ = True
    where = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    deadline = time.monotonic() + timeout
    while True:
        with handle.entered():
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with sock:
            sock.settimeout(0.5)
            try:
                sock.connect((str(address), port))
                return
            except OSError as exc:
                last = exc
        for proc in watched:
            code = proc.poll()
            if code is not None and (any_exit or code != 0):
                waiting = f"waiting for {where} to accept a connection from {handle.name!r}"
                raise exited(proc, waiting, homes.get(proc, "?"))
        if time.monotonic() > deadline:
            running = "".join(
                f"; pid {proc.pid} ({_process.describe(proc.args)}) is still running" for proc in watched if any_exit
            )
            raise NetnsTimeout(
                f"nothing accepted a connection to {where} from {handle.name!r} within {timeout:g}s "
                f"(last error: {last}){running}"
            )
        time.sleep(0.02)


def exited(proc: subprocess.Popen[Any], waiting: str, namespace: str) -> ProcessExited:
    """The error for a process that ended while ``waiting``: the end of its output where the test could read it."""
    found: dict[str, str | None] = {"stderr": None, "output": None}
    for key, stream in (("stderr", proc.stderr), ("output", proc.stdout)):
        if stream is not None:
            data = _process.peek_pipe(stream.fileno())
            found[key] = _process.tail(data) if data else None
    note = ""
    if proc.stderr is None:
        note = (
            "(its stderr is not a pipe to the test, so it cannot be shown here: popen(..., "
            "stderr=subprocess.PIPE) shows its end; what it wrote to the test's own stderr is in the "
            "report's captured stderr)"
        )
    elif not found["stderr"]:
        note = "(it wrote nothing to its stderr that is still unread)"
    return ProcessExited(
        proc.returncode,
        cast("str | list[str]", proc.args),  # popen's commands are; a Popen from elsewhere is shown as str()
        pid=proc.pid,
        waiting=waiting,
        output=found["output"] if not found["stderr"] else None,
        stderr=found["stderr"],
        note=note,
        namespace=namespace,
    )
