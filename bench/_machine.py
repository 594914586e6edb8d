"""A description of the machine and software a run came from."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def _command(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def describe() -> list[str]:
    """Lines for the report: hardware, kernel, software versions, commit, load."""
    commit = _command("git", "rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if _command("git", "status", "--porcelain", "--", "pytest_netns") else ""
    iproute = _command("ip", "-V").replace("ip utility, ", "")
    return [
        f"CPU: {_cpu_model()}, {os.cpu_count()} cores; memory {_mem_total_gib():.0f} GiB",
        f"Kernel: Linux {platform.release()}; Python {platform.python_version()}",
        f"pytest {_version('pytest')}, pytest-xdist {_version('pytest-xdist')}, pyroute2 {_version('pyroute2')}, "
        f"{iproute or 'iproute2 absent'}",
        f"pytest-netns {_version('pytest-netns')} at commit {commit or '?'}{dirty}",
        f"Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; load average at start {load()}",
    ]
