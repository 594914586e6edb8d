"""A process the fault tests' inner suite starts inside a namespace: ``inner_child.py MODE LABEL``.

It logs ``proc <pid> <starttime> <label>`` (see harness.py), then:

    sleep        prints "ok" and sleeps
    ignore-term  ignores SIGTERM and SIGINT, prints "ok" and sleeps
    daemon       double-forks; the grandchild calls setsid(), closes its
                 standard streams and sleeps; the command returns once the
                 grandchild has logged itself
"""

import os
import signal
import sys
import time


def log(*words: object) -> None:
    fd = os.open(os.environ["NETNS_FAULT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, words)) + "\n").encode())
    finally:
        os.close(fd)


def starttime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        data = handle.read()
    return int(data[data.rindex(")") + 2:].split()[19])


def main() -> None:
    mode, label = sys.argv[1], sys.argv[2]
    if mode == "daemon":
        ready_r, ready_w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                log("proc", os.getpid(), starttime(os.getpid()), label)
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.write(ready_w, b"x")
                os.close(ready_w)
                time.sleep(600)
            os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        return
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    log("proc", os.getpid(), starttime(os.getpid()), label)
    print("ok", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
