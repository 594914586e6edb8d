"""Kept namespaces: bind mounts under ``/run/netns`` that outlive the run, for debugging.

``--netns-keep-on-failure`` keeps a failed test's namespaces here and
``python -m pytest_netns list|cleanup`` finds and removes them.  A kept
namespace is recognised as ours only when all of these hold, so nothing
another program made is ever touched:

- its name in ``/run/netns`` starts with ``pytest-netns-`` (then the pid of
  the pytest process, a counter and the namespace's label);
- a metadata file ``/run/pytest-netns/kept/<name>.json`` written *before*
  the mount exists, naming the namespace's inode and cookie, the test, and
  the creating process (pid and start time) and boot;
- the path is a namespace bind mount whose inode and cookie are the ones
  recorded.

``/run/netns`` is prepared the way ``ip netns add`` does (iproute2): created
if missing, made a mount point bound onto itself and marked shared, under
an exclusive ``flock`` of the directory so concurrent processes do not stack
mounts.  A shared ``/run/netns`` lets an unmount in one mount namespace reach
the others.  Everything is done with system calls (``mount``/``umount2``
through ctypes), no binaries.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._kernel.handle import handle_of
from .._kernel.netns import CLONE_NEWNET, SO_NETNS_COOKIE

if TYPE_CHECKING:
    from ..namespace import Namespace

NETNS_RUN_DIR = Path("/run/netns")
STATE_DIR = Path("/run/pytest-netns/kept")
PREFIX = "pytest-netns-"
NSFS_MAGIC = 0x6E736673

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_lock = threading.Lock()
_counter = 0


@dataclass(frozen=True)
class KeptInfo:
    """What ``/run/pytest-netns/kept/<name>.json`` records about one kept namespace."""

    name: str
    namespace: str
    inode: int
    cookie: int
    test: str
    pid: int
    pid_start: int
    boot_id: str
    created: float
    plugin: str = "pytest-netns"

    @property
    def path(self) -> Path:
        return NETNS_RUN_DIR / self.name

    def enter_commands(self) -> list[str]:
        return [f"nsenter --net={self.path} <command>", f"ip netns exec {self.name} <command>"]


# -- keeping ---------------------------------------------------------------------------------------


def keep(ns: Namespace, test: str) -> KeptInfo:
    """Bind-mount ``ns`` at ``/run/netns/pytest-netns-<pid>-<n>-<label>``; it outlives the process.

    Raises OSError (with what was being done) when it cannot; leaves nothing then.
    """
    global _counter
    with _lock:
        _counter += 1
        number = _counter
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", ns.name)[:40]
    info = KeptInfo(
        name=f"{PREFIX}{os.getpid()}-{number}-{label}",
        namespace=ns.name,
        inode=ns.inode,
        cookie=ns.cookie,
        test=test,
        pid=os.getpid(),
        pid_start=process_start(os.getpid()) or 0,
        boot_id=boot_id(),
        created=time.time(),
    )
    prepare_run_dir()
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    meta = metadata_path(info.name)
    _write_atomic(meta, json.dumps(asdict(info), indent=1) + "\n")
    try:
        fd = os.open(info.path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
        os.close(fd)
        try:
            source = f"/proc/self/fd/{handle_of(ns).fd}"
            _mount(source, str(info.path), MS_BIND, f"bind-mounting {ns.name!r} on {info.path}")
        except BaseException:
            os.unlink(info.path)
            raise
    except BaseException:
        meta.unlink()
        raise
    return info


def prepare_run_dir() -> None:
    """Make ``/run/netns`` exist and be a shared mount point, as ``ip netns add`` does."""
    NETNS_RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    lock = os.open(NETNS_RUN_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        made_mount_point = False
        while True:
            try:
                _mount("", str(NETNS_RUN_DIR), MS_SHARED | MS_REC, f"making {NETNS_RUN_DIR} shared")
                return
            except OSError as exc:
                # EINVAL: not a mount point yet; bind it onto itself once, then retry.
                if exc.errno != errno.EINVAL or made_mount_point:
                    raise
            _mount(str(NETNS_RUN_DIR), str(NETNS_RUN_DIR), MS_BIND | MS_REC, f"bind-mounting {NETNS_RUN_DIR} on itself")
            made_mount_point = True
    finally:
        os.close(lock)  # releases the flock


def _mount(source: str, target: str, flags: int, doing: str) -> None:
    if _libc.mount(source.encode(), target.encode(), b"none", flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{doing}: {os.strerror(err)}")


# -- finding ---------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One kept namespace (or what is left of one) as ``list``/``cleanup`` see it."""

    name: str
    info: KeptInfo | None
    state: str  # "kept", "run still going", "stale metadata", "placeholder", "not ours"
    detail: str = ""

    @property
    def ours(self) -> bool:
        return self.state != "not ours"


def find() -> list[Entry]:
    """Every kept namespace and every leftover of one, by name."""
    names = set()
    with contextlib.suppress(FileNotFoundError):
        names |= {p.stem for p in STATE_DIR.glob(f"{PREFIX}*.json")}
    with contextlib.suppress(FileNotFoundError):
        names |= {n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(PREFIX)}
    return [_classify(name) for name in sorted(names)]


def _classify(name: str) -> Entry:
    info = read_metadata(name)
    path = NETNS_RUN_DIR / name
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if info is None:
        return Entry(name, None, "not ours", f"{path} has no metadata in {STATE_DIR}: not touched")
    if st is None:
        return Entry(name, info, "stale metadata", f"{path} is gone")
    if _is_namespace(path):
        if st.st_ino != info.inode or netns_cookie(str(path)) != info.cookie:
            return Entry(name, info, "not ours", f"{path} is another namespace than the one recorded: not touched")
        if running(info):
            return Entry(name, info, "run still going", f"pytest pid {info.pid} is still running")
        return Entry(name, info, "kept")
    if st.st_size == 0 and os.path.isfile(path):
        return Entry(name, info, "placeholder", "an empty mount point left by an interrupted keep")
    return Entry(name, info, "not ours", f"{path} is not a namespace: not touched")


def _is_namespace(path: Path) -> bool:
    """Whether ``path`` is a bind mount of a namespace (nsfs), checked with statfs."""
    buf = ctypes.create_string_buffer(120)  # struct statfs; f_type comes first
    if _libc.statfs(str(path).encode(), buf) != 0:
        return False
    return int.from_bytes(buf.raw[:8], "little") == NSFS_MAGIC


def read_metadata(name: str) -> KeptInfo | None:
    try:
        data = json.loads(metadata_path(name).read_text())
        info = KeptInfo(**data)
    except (OSError, ValueError, TypeError):
        return None
    if info.name != name or info.plugin != "pytest-netns":
        return None
    return info


def metadata_path(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def running(info: KeptInfo) -> bool:
    """Whether the pytest process that kept it is still alive (same pid, start time and boot)."""
    return info.boot_id == boot_id() and process_start(info.pid) == info.pid_start


def processes_inside(entry: Entry) -> list[int]:
    """Pids of the processes whose network namespace is this kept one."""
    if entry.info is None:
        return []
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != entry.info.inode:
                continue
        except OSError:
            continue
        if netns_cookie(f"/proc/{pid}/ns/net") == entry.info.cookie:
            found.append(int(pid))
    return found


def processes_of(ns: Namespace) -> list[tuple[int, str]]:
    """(pid, command line) of each process inside ``ns``, a namespace this process holds.

    Its inode alone tells it apart (no two live namespaces share one), so no
    thread enters anything to compare cookies, as ``processes_inside`` must.
    """
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/net").st_ino == ns.inode:
                    found.append((int(pid), command_line(int(pid))))
    return found


def command_line(pid: int, limit: int = 80) -> str:
    """A process's command line as one string (cut at ``limit`` characters), or ``?`` when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            text = handle.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- removing --------------------------------------------------------------------------------------


def remove(entry: Entry) -> list[str]:
    """Remove one of ours: kill processes inside, unmount, delete the file and the metadata.

    Returns what was done; raises OSError when a step fails (other than "already gone").
    """
    if not entry.ours:
        raise ValueError(f"{entry.name} is not a namespace pytest-netns kept: {entry.detail}")
    done = []
    path = NETNS_RUN_DIR / entry.name
    if entry.state in ("kept", "run still going"):
        for _ in range(100):
            pids = processes_inside(entry)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    done.append(f"killed pid {pid}")
            time.sleep(0.01)
        if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise OSError(err, f"unmounting {path}: {os.strerror(err)}")
        done.append(f"unmounted {path}")
    if entry.state != "stale metadata":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        metadata_path(entry.name).unlink()
    return done


# -- small helpers ---------------------------------------------------------------------------------


def process_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot), None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:  # pragma: no cover - every Linux has it
        return "?"


def netns_cookie(path: str) -> int | None:
    """The cookie of the network namespace behind ``path``, read by a thread that enters it and ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    result: list[int] = []

    def probe() -> None:
        if _libc.setns(fd, CLONE_NEWNET) == 0:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                result.append(int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little"))

    try:
        thread = threading.Thread(target=probe, name="netns-cookie")
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    return result[0] if result else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
