"""Exceptions raised by pytest-netns.

    NetnsError                      anything the plugin could not do
    ├── KernelError (+ OSError)     a netlink request or system call failed
    ├── CommandError (+ subprocess.CalledProcessError)
    │   │                           a command run inside a namespace failed
    │   └── ProcessExited           a process started with popen exited while
    │                               wait_for_port waited for it to listen
    ├── NetnsTimeout (+ TimeoutError)
    │                               what was awaited did not happen in time
    │                               (wait_for_port, Capture.wait)
    ├── FeatureUnavailable          the running kernel lacks a feature
    └── TeardownError               cleaning up a namespace went wrong

    NetnsLeakWarning (UserWarning)  a namespace outlived its teardown
    NetnsProcessWarning (UserWarning)
                                    a process outlived the kill grace after SIGTERM: killed

Bad input is always a plain ``ValueError`` naming the value, raised before the
kernel is touched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class NetnsError(Exception):
    """Base class of every error pytest-netns raises (except ``ValueError``)."""


class KernelError(NetnsError, OSError):
    """A request to the kernel failed; ``errno`` is the kernel's error code."""

    def __init__(self, errno: int, doing: str, detail: str = "") -> None:
        import os

        strerror = os.strerror(errno)
        if detail:
            strerror = f"{strerror} ({detail})"
        OSError.__init__(self, errno, strerror)
        self.doing = doing
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.doing}: [Errno {self.errno}] {self.strerror}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.errno, self.doing, self.detail))


class CommandError(NetnsError, subprocess.CalledProcessError):
    """A command run with ``Namespace.run(check=True)`` exited non-zero."""

    def __init__(
        self,
        returncode: int,
        cmd: str | Sequence[str],
        output: str | bytes | None = None,
        stderr: str | bytes | None = None,
        namespace: str = "?",
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.namespace = namespace

    def __str__(self) -> str:
        shown = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        lines = [f"command {shown!r} in namespace {self.namespace!r} exited with code {self.returncode}"]
        for label, data in (("stdout", self.stdout), ("stderr", self.stderr)):
            if isinstance(data, bytes):
                data = data.decode(errors="replace")
            data = (data or "").rstrip()
            lines.append(f"{label}:" + ("\n" + _indent(data) if data else " (empty)"))
        return "\n".join(lines)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.returncode, self.cmd, self.output, self.stderr, self.namespace))


class ProcessExited(CommandError):
    """A process started with ``popen`` exited while ``wait_for_port`` waited for a server to listen.

    ``returncode`` (negative: killed by that signal), ``cmd``, ``pid``, and
    the end of its output where the test could read it (``stderr``, or
    ``output`` when only stdout was a pipe); ``note`` says why not otherwise.
    """

    def __init__(
        self,
        returncode: int,
        cmd: str | Sequence[str],
        *,
        pid: int,
        waiting: str,
        output: str | None = None,
        stderr: str | None = None,
        note: str = "",
        namespace: str = "?",
    ) -> None:
        super().__init__(returncode, cmd, output, stderr, namespace)
        self.pid = pid
        self.waiting = waiting
        self.note = note

    def __str__(self) -> str:
        shown = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        where = f" in namespace {self.namespace!r}" if self.namespace != "?" else ""
        how = f"exited with code {self.returncode}"
        if self.returncode < 0:
            import signal

            try:
                how = f"was killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-self.returncode}"
        lines = [f"{self.waiting}: pid {self.pid} ({shown}){where} {how}"]
        for label, data in (("stderr", self.stderr), ("stdout", self.output)):
            if data:
                lines.append(f"its {label} ends with:\n" + _indent(str(data).rstrip()))
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild_process_exited, (self.returncode, self.cmd, self.__dict__.copy()))


def _rebuild_process_exited(returncode: int, cmd: str | Sequence[str], state: dict[str, object]) -> ProcessExited:
    exc = ProcessExited.__new__(ProcessExited)
    exc.__dict__.update(state)
    exc.args = (returncode, cmd)
    return exc


class NetnsTimeout(NetnsError, TimeoutError):
    """What was awaited did not happen in time (``wait_for_port``, ``Capture.wait``); the message says what.

    Also a ``TimeoutError``: ``except TimeoutError`` keeps catching it.
    """


class FeatureUnavailable(NetnsError):
    """The machine lacks what was asked for; the message names it.

    ``feature`` is the name ``python -m pytest_netns doctor`` gives it
    (``netem``, ``libpcap``, ``br_netfilter``...), which
    ``--netns-require-features`` takes; None where no such feature applies.
    """

    def __init__(self, message: str, *, feature: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature


class TeardownError(NetnsError):
    """One or more steps of tearing a namespace down failed."""

    def __init__(self, namespace: str, problems: Sequence[BaseException]) -> None:
        self.namespace = namespace
        self.problems = list(problems)
        details = "\n".join(f"  - {type(p).__name__}: {p}" for p in self.problems)
        super().__init__(f"tearing down namespace {namespace!r} failed:\n{details}")


class NetnsLeakWarning(UserWarning):
    """Test code still holds something that keeps a namespace alive after teardown."""


class NetnsProcessWarning(UserWarning):
    """A process started inside was still running a kill grace after SIGTERM and was SIGKILLed.

    As ``docker stop`` does: a slow stop is not the test's failure, but it is
    named (command line, pid, grace).  ``-W error::pytest_netns.NetnsProcessWarning``
    makes it one.
    """


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
