"""Run a throwaway pytest suite in a subprocess and collect pytest's own timings.

The suite is generated into a temporary directory (its own ``pytest.ini``,
so the repository's configuration does not apply) and run with
``-p bench._recorder``, which writes setup and teardown ``report.duration``
per test.  Implementations:

* ``plugin``: pytest-netns as installed (entry point), plus
  ``bench._plugin_shapes`` for the recipes over ``netns_topology`` and
  ``netns_factory``; optionally ``--netns-pcap=<mode>``;
* ``ip`` / ``ip-batch`` / ``ip-exec``: ``-p no:netns -p bench._handrolled``, run in a
  private mount namespace with a tmpfs on ``/run`` (``ip netns add`` writes
  ``/run/netns``; the host must never see it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._shapes import Shape

REPO = Path(__file__).resolve().parent.parent
PRIVATE_RUN = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    'mount -t tmpfs bench-run /run && exec "$@"',
    "sh",
]


class SuiteError(RuntimeError):
    """A generated suite did not pass: the message holds the end of pytest's output."""


@dataclass
class SuiteResult:
    """Per-test setup + teardown seconds (in run order), samples, and the wall time."""

    costs: list[float]
    setups: list[float]
    teardowns: list[float]
    samples: list[dict[str, int]] = field(default_factory=list)
    wall: float = 0.0


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    env.update(extra)
    return env


def _base_command(impl: str, pcap: str | None) -> tuple[list[str], list[str], dict[str, str]]:
    """(prefix, pytest arguments, environment) for an implementation."""
    args = ["-p", "bench._recorder", "-p", "no:cacheprovider"]
    if impl == "plugin":
        args += ["-p", "bench._plugin_shapes", "-o", "netns_require=true"]
        if pcap:
            args.append(f"--netns-pcap={pcap}")
        return [], args, {}
    modes = {"ip": "step", "ip-batch": "batch", "ip-exec": "exec"}
    if impl in modes:
        args += ["-p", "no:netns", "-p", "bench._handrolled"]
        return PRIVATE_RUN, args, {"BENCH_IP_MODE": modes[impl]}
    raise ValueError(f"unknown implementation {impl!r}")


class Workdir:
    """A temporary directory holding a generated suite (removed on exit)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="pytest-netns-bench-"))
        (self.path / "pytest.ini").write_text("[pytest]\naddopts =\n")

    def __enter__(self) -> Workdir:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def run_pytest(
    workdir: Path,
    impl: str,
    args: list[str],
    *,
    pcap: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
) -> subprocess.CompletedProcess[str]:
    prefix, base, extra = _base_command(impl, pcap)
    cmd = [*prefix, sys.executable, "-m", "pytest", *base, *args]
    return subprocess.run(
        cmd, cwd=workdir, env=_env({**extra, **(env or {})}), capture_output=True, text=True, timeout=timeout
    )


def run_shape(
    shape: Shape,
    impl: str,
    *,
    pcap: str | None = None,
    xdist: int | None = None,
    sample_every: int = 0,
    tests: int | None = None,
) -> SuiteResult:
    """Run ``tests`` (default ``shape.tests``) tests of ``shape`` with ``impl``; per-test costs."""
    if tests is not None:
        shape = Shape(shape.key, shape.size, shape.fixture, shape.needs, tests)
    with Workdir() as work:
        module = work.path / "test_bench.py"
        module.write_text(shape.test_module())
        record = work.path / "record.jsonl"
        args = ["-q", "-p", "no:randomly", str(module)]
        args += ["-n", str(xdist)] if xdist else []
        env = {"BENCH_RECORD": str(record), "BENCH_SAMPLE_EVERY": str(sample_every)}
        start = time.perf_counter()
        done = run_pytest(work.path, impl, args, pcap=pcap, env=env)
        wall = time.perf_counter() - start
        rows, samples = _read_records(record)
        bad = [row for row in rows if row.get("outcome") != "passed"]
        if done.returncode or bad or len(rows) != shape.tests:
            detail = bad[0].get("message", "") if bad else ""
            raise SuiteError(
                f"{shape.label} with {impl}: pytest exited {done.returncode}, {len(rows)}/{shape.tests} tests "
                f"recorded, {len(bad)} not passed\n{detail[-1500:]}\n{_tail(done.stdout + done.stderr)}"
            )
        for path in work.path.glob("record.jsonl.*"):
            samples += _read_records(path)[1]
        setups = [row.get("setup", 0.0) for row in rows]
        teardowns = [row.get("teardown", 0.0) for row in rows]
        return SuiteResult([s + t for s, t in zip(setups, teardowns, strict=True)], setups, teardowns, samples, wall)


def _read_records(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text().splitlines():
            item = json.loads(line)
            (samples if "sample" in item else rows).append(item)
    return rows, samples


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class PluginFeatures:
    """What the installed plugin offers right now (other engineers are still adding to it)."""

    fixtures: frozenset[str]
    pcap_modes: tuple[str, ...]  # empty while --netns-pcap does not exist


def probe_plugin() -> PluginFeatures:
    """Ask pytest which fixtures the plugin defines and whether ``--netns-pcap`` exists."""
    with Workdir() as work:
        fixtures = run_pytest(work.path, "plugin", ["--fixtures", "-q"])
        helptext = run_pytest(work.path, "plugin", ["--help"])
    names = frozenset(re.findall(r"^(\w+)(?: \[[^\]]*\])?(?: -- |$)", fixtures.stdout, re.M))
    match = re.search(r"--netns-pcap=\{([\w,]+)\}", helptext.stdout)
    modes: tuple[str, ...] = ()
    if match:
        modes = tuple(match.group(1).split(","))
    elif "--netns-pcap" in helptext.stdout:
        modes = ("never", "failed")
    return PluginFeatures(names, modes)
