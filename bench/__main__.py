"""``python -m bench``: the pytest-netns benchmark (run it inside ``unshare --net``, as root).

Measures fixture setup + teardown as pytest sees it for each shape, side by
side with hand-rolled ``ip`` fixtures (per step and ``ip -batch``) and the
floor (the kernel work alone); then the time until the kernel has freed torn
down namespaces, the cost over many consecutive tests, pytest-xdist scaling
and memory per namespace.  Prints a Markdown report and writes it to
``--output`` (default ``bench/RESULTS.md`` for the full run).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import _floor, _machine, _memory, _partition, _policy, _profile, _shapes, _suite
from ._report import Column, Growth, Report, ShapeRow, XdistRun
from ._stats import Summary, fmt_ms

HERE = Path(__file__).resolve().parent
_start = time.perf_counter()


@dataclass(frozen=True)
class Scale:
    """Sizes of the scale runs for one mode."""

    growth: tuple[int, int]  # consecutive tests, window compared
    xdist: int  # tests in the xdist suite
    memory: tuple[int, int]  # namespaces held, repetitions
    freeing: int  # repetitions of the small freeing cases
    burst: int  # pairs built back to back before the last freeing case
    freeing_sizes: tuple[int, int]  # the "many at once" freeing cases
    partition: int  # rounds of cutting and healing a partition
    policy: int  # NetworkPolicy creations and deletions


SCALE = {
    "full": Scale((10_000, 1000), 1000, (1000, 3), 20, 1000, (100, 1000), 500, 200),
    "quick": Scale((1000, 200), 200, (300, 1), 5, 200, (100, 1000), 100, 50),
    "smoke": Scale((40, 10), 10, (10, 1), 1, 5, (5, 10), 5, 3),
}


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _start:7.1f}s] {message}", file=sys.stderr, flush=True)


def check_private_netns() -> None:
    """Refuse to run in the machine's own network namespace (run inside ``unshare --net``)."""
    try:
        ours = os.stat("/proc/thread-self/ns/net").st_ino
        init = os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return  # cannot tell (a sandbox hides PID 1): nothing here touches the current namespace anyway
    if ours == init:
        sys.exit("bench: run inside a private network namespace: unshare --net -- python -m bench ...")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer tests per shape and smaller scale runs (~3 min)")
    mode.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest run (a few tests, shrunken shapes): checks the harness works, times mean nothing",
    )
    parser.add_argument(
        "--only",
        metavar="KEYS",
        default="",
        help="comma-separated parts to run: shape keys ("
        + ",".join(dict.fromkeys(s.key for s in _shapes.shapes("quick")))
        + ") and freeing,growth,xdist,memory,partition,policy",
    )
    parser.add_argument(
        "--extra-baselines",
        action="store_true",
        help="also measure the hand-rolled fixture written with `ip netns exec NS ip ...` per step",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="write the Markdown report here (default: bench/RESULTS.md for the full run, nowhere for --quick/--smoke)",
    )
    parser.add_argument(
        "--profile",
        metavar="SHAPE[:SIZE]",
        help="instead of the benchmark, cProfile the library calls of a fixture and print the top "
        f"functions; SHAPE is one of {', '.join(_profile.SHAPES)} (SIZE: members, routers or pods)",
    )
    return parser.parse_args(argv)


def measure_shape(shape: _shapes.Shape, features: _suite.PluginFeatures, report: Report) -> ShapeRow:
    """Every implementation of one shape, in rounds that alternate their order.

    The machine may be shared: splitting each column's tests into rounds run
    in turn (A B C, then C B A) spreads a change of load over all columns
    instead of charging it to one.
    """
    row = ShapeRow(shape)
    plugin_ok = shape.needs in features.fixtures
    if not plugin_ok:
        row.notes.append(f"plugin fixture `{shape.needs}` does not exist yet: plugin columns skipped")
    if shape.key == "docker" and plugin_ok and not _plugin_shapes_docker_network():
        row.notes.append("`DockerHost.network` does not exist yet: both containers on the default bridge (docker0)")
    runs: list[tuple[str, str, str | None, str]] = []  # (column key, implementation, pcap mode, title)
    if plugin_ok:
        for column in report.plugin_columns:
            pcap = column.key.split(":", 1)[1] if ":" in column.key else None
            runs.append((column.key, "plugin", pcap, column.title))
    missing = [tool for tool in ("ip", *(("nft",) if shape.key == "nat" else ())) if shutil.which(tool) is None]
    if shape.plugin_only:
        row.notes.append("plugin columns only: the test body uses the plugin's `Namespace` objects")
    elif missing:
        row.notes.append(f"hand-rolled baselines skipped: `{'`, `'.join(missing)}` not installed")
    else:
        runs += [(impl, impl, None, impl) for impl in report.baselines]
    if not shape.plugin_only:
        runs.append(("floor", "floor", None, "floor"))
    rounds = _shapes.rounds(shape)
    part = _shapes.Shape(shape.key, shape.size, shape.fixture, shape.needs, -(-shape.tests // rounds))
    skip = _shapes.warmup(part)
    costs: dict[str, list[float]] = {}
    setups: dict[str, list[float]] = {}
    teardowns: dict[str, list[float]] = {}
    failed: set[str] = set()
    if shape.key in _shapes.MODELS and plugin_ok:
        # The yardstick: netns_pair with the default plugin column, in the same rounds.
        runs.append((YARDSTICK, "pair", _default_pcap(report), "netns_pair (same rounds)"))
    for number in range(rounds):
        for key, impl, pcap, title in runs if number % 2 == 0 else runs[::-1]:
            if key in failed:
                continue
            try:
                if impl == "pair":
                    pair = _shapes.Shape("pair", 2, "netns_pair", "netns_pair", max(part.tests, 20))
                    result = _suite.run_shape(pair, "plugin", pcap=pcap)
                    costs.setdefault(key, []).extend(result.costs[_shapes.warmup(pair) :])
                    continue
                if impl == "floor":
                    times = _floor.measure(shape.key, shape.size, max(part.tests - skip, 1), warmup=min(skip, 2))
                    costs.setdefault(key, []).extend(times)
                    continue
                result = _suite.run_shape(part, impl, pcap=pcap)
            except (_suite.SuiteError, subprocess.TimeoutExpired, OSError) as exc:
                failed.add(key)
                row.notes.append(f"{title} failed: {str(exc).splitlines()[0]}")
                log(f"{shape.label}: {title} FAILED:\n{exc}")
                continue
            costs.setdefault(key, []).extend(result.costs[skip:])
            setups.setdefault(key, []).extend(result.setups[skip:])
            teardowns.setdefault(key, []).extend(result.teardowns[skip:])
    for key, _impl, _pcap, title in runs:
        if key in failed or not costs.get(key):
            continue
        if key == YARDSTICK:
            row.yardstick = Summary.of(costs[key])
            log(f"{shape.label}: {title} {row.yardstick.cell()}")
            continue
        summary = row.cells[key] = Summary.of(costs[key])
        if key in setups:
            row.phases[key] = (Summary.of(setups[key]), Summary.of(teardowns[key]))
        log(f"{shape.label}: {title} {summary.cell()}")
    return row


YARDSTICK = "yardstick"


def _default_pcap(report: Report) -> str | None:
    key = report.default_plugin
    return key.split(":", 1)[1] if ":" in key else None


def _plugin_shapes_docker_network() -> bool:
    from ._plugin_shapes import docker_network

    try:
        return docker_network()
    except ImportError:
        return False


def measure_breakdown(mode: str, report: Report) -> None:
    """Split the netns_pair figure: kernel work, library calls, pytest's share, setup vs teardown."""
    row = report.row("pair")
    pair = next(s for s in _shapes.shapes(mode) if s.key == "pair")
    skip = _shapes.warmup(pair)
    if row is None:
        return
    floor = row.cells.get("floor")
    if floor:
        report.breakdown.append(("floor: the kernel work, plain Python loop", floor))
    library = Summary.of(_profile.library_times("pair", max(pair.tests - skip, 1)))
    report.breakdown.append(("library calls of the fixture (presets.pair), no pytest", library))
    log(f"netns_pair library path: {library.cell()}")
    noop = _shapes.Shape("noop", 0, "bench_noop", "netns", pair.tests)
    try:
        result = _suite.run_shape(noop, "plugin")
        report.breakdown.append(
            ("pytest with a fixture that does nothing (plugin loaded)", Summary.of(result.costs[skip:]))
        )
    except (_suite.SuiteError, subprocess.TimeoutExpired) as exc:
        report.notes.append(f"no-op fixture run failed: {str(exc).splitlines()[0]}")
    total = row.cells.get(report.default_plugin)
    if total and report.default_plugin in row.phases:
        setup, teardown = row.phases[report.default_plugin]
        report.breakdown.append(("netns_pair through pytest: setup phase", setup))
        report.breakdown.append(("netns_pair through pytest: teardown phase", teardown))
        report.breakdown.append(("netns_pair through pytest: setup + teardown", total))


def measure_freeing(mode: str, report: Report) -> None:
    reps = SCALE[mode].freeing
    burst = SCALE[mode].burst
    sizes = SCALE[mode].freeing_sizes
    cases = [
        ("netns", 1, "1 namespace (netns)"),
        ("pair", 2, "2 namespaces (netns_pair)"),
        ("many", sizes[0], f"{sizes[0]} namespaces at once"),
        ("many", sizes[1], f"{sizes[1]:,} namespaces at once"),
        ("burst", burst, f"the last of {burst:,} netns_pair set up and torn down back to back"),
    ]
    for shape, size, label in cases:
        repetitions = reps if size <= 100 else max(1, reps // 4)
        cmd = [
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "--",
            sys.executable,
            "-m",
            "bench._freeing",
            shape,
            str(size),
            str(repetitions),
        ]
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_suite.REPO), os.environ.get("PYTHONPATH")]))
        )
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode:
            report.notes.append(f"freeing time for {label} failed: {done.stderr.strip().splitlines()[-1:]}")
            log(f"freeing {label}: FAILED\n{done.stderr}")
            continue
        import json

        summary = Summary.of(json.loads(done.stdout))
        report.freeing.append((label, summary))
        log(f"freeing {label}: {summary.cell()}")


def measure_growth(mode: str, report: Report) -> None:
    tests, window = SCALE[mode].growth
    pair = next(s for s in _shapes.shapes(mode) if s.key == "pair")
    try:
        result = _suite.run_shape(pair, "plugin", tests=tests, sample_every=max(window, 1))
    except (_suite.SuiteError, subprocess.TimeoutExpired) as exc:
        report.notes.append(f"growth run failed: {str(exc).splitlines()[0]}")
        log(f"growth FAILED:\n{exc}")
        return
    report.growth = Growth(
        tests,
        window,
        Summary.of(result.costs[:window]),
        Summary.of(result.costs[-window:]),
        sorted(result.samples, key=lambda s: s["sample"]),
    )
    noop = _shapes.Shape("noop", 0, "bench_noop", "netns", tests)
    try:
        control = _suite.run_shape(noop, "plugin", sample_every=max(window, 1))
        report.growth.control = sorted(control.samples, key=lambda s: s["sample"])
    except (_suite.SuiteError, subprocess.TimeoutExpired) as exc:
        report.notes.append(f"growth control run failed: {str(exc).splitlines()[0]}")
    log(f"growth over {tests}: first {report.growth.first.cell()}, last {report.growth.last.cell()}")


def measure_xdist(mode: str, report: Report) -> None:
    tests = SCALE[mode].xdist
    pair = next(s for s in _shapes.shapes(mode) if s.key == "pair")
    workers = [0, 1, 2] + ([4] if (os.cpu_count() or 1) >= 4 else [])
    for n in workers:
        try:
            result = _suite.run_shape(pair, "plugin", tests=tests, xdist=n or None)
        except (_suite.SuiteError, subprocess.TimeoutExpired) as exc:
            report.notes.append(f"xdist -n {n} failed: {str(exc).splitlines()[0]}")
            log(f"xdist -n {n} FAILED:\n{exc}")
            continue
        run = XdistRun(n, tests, result.wall, Summary.of(result.costs[min(5, tests // 2) :]))
        noop = _shapes.Shape("noop", 0, "bench_noop", "netns", tests)
        try:
            run.noop_wall = _suite.run_shape(noop, "plugin", xdist=n or None).wall
        except (_suite.SuiteError, subprocess.TimeoutExpired) as exc:
            report.notes.append(f"xdist -n {n} no-op run failed: {str(exc).splitlines()[0]}")
        report.xdist.append(run)
        log(f"xdist -n {n}: {run.wall:.2f} s, per test {run.per_test.cell()}")
    if (os.cpu_count() or 1) < 4:
        report.notes.append(f"pytest-xdist -n 4 not measured: this machine has {os.cpu_count()} cores.")


def measure_memory(mode: str, report: Report) -> None:
    count, reps = SCALE[mode].memory
    for variant in _memory.VARIANTS:
        result = _memory.measure(variant, count, reps, settle=0.2 if mode == "smoke" else 1.0)
        report.memory.append((variant, result))
        log(f"memory {variant}: {result}")


def measure_policy(mode: str, report: Report) -> None:
    """Creating and deleting a NetworkPolicy in a cluster of 3 nodes and 20 pods, in a loop without pytest."""
    try:
        creates, deletes = _policy.measure(SCALE[mode].policy)
    except _policy.Unavailable as exc:
        report.notes.append(f"NetworkPolicy changes not measured: {exc}")
        log(f"policy: skipped ({exc})")
        return
    report.policy = [
        (f"create: network_policy() selecting {_policy.SELECTED} of {_policy.PODS} pods", Summary.of(creates)),
        ("delete: NetworkPolicy.delete()", Summary.of(deletes)),
    ]
    for label, summary in report.policy:
        log(f"policy {label}: {summary.cell()}")


def measure_partition(mode: str, report: Report) -> None:
    """Cutting and healing a partition of 5 namespaces (2 | 3), in a loop without pytest."""
    cuts, heals = _partition.measure(SCALE[mode].partition)
    report.partition = [
        (f"cut: partition() of {_partition.SIZE} namespaces (addresses read, one transaction each)", Summary.of(cuts)),
        (f"heal: Partition.heal() of {_partition.SIZE} namespaces (tables made dormant)", Summary.of(heals)),
    ]
    for label, summary in report.partition:
        log(f"{label}: {summary.cell()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_private_netns()
    if args.profile:
        shape, _, size = args.profile.partition(":")
        count = int(size or (4 if shape == "cluster" else 3))
        print(_profile.profile(shape, max(10, 300 // count), size=count))
        return 0
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    only = {part.strip() for part in args.only.split(",") if part.strip()}

    def wanted(part: str) -> bool:
        return not only or part in only


    log(f"{mode} run; probing the installed plugin")
    features = _suite.probe_plugin()
    if {"never", "failed"} <= set(features.pcap_modes):
        columns = [
            Column("plugin:never", "plugin, pcap never"),
            Column("plugin:failed", "plugin, pcap failed (default)"),
        ]
        default = "plugin:failed"
    else:
        columns, default = [Column("plugin", "plugin")], "plugin"
    command = "unshare --net -- python -m bench" + (f" --{mode}" if mode != "full" else "")
    command += f" --only {args.only}" if args.only else ""
    report = Report(mode, _machine.describe(), command, columns, default)
    if args.extra_baselines:
        report.baselines.append("ip-exec")
        report.command += " --extra-baselines"
    if not features.pcap_modes:
        report.notes.append("`--netns-pcap` does not exist yet in the installed plugin: measured without it.")

    for shape in _shapes.shapes(mode):
        if wanted(shape.key):
            report.rows.append(measure_shape(shape, features, report))
    if wanted("pair"):
        measure_breakdown(mode, report)
    if wanted("freeing"):
        measure_freeing(mode, report)
    if wanted("growth"):
        measure_growth(mode, report)
    if wanted("xdist"):
        measure_xdist(mode, report)
    if wanted("memory"):
        measure_memory(mode, report)
    if wanted("partition"):
        measure_partition(mode, report)
    if wanted("policy"):
        measure_policy(mode, report)

    report.duration = time.perf_counter() - _start
    report.load_end = _machine.load()
    text = report.markdown()
    print(text)
    output = args.output or (str(HERE / "RESULTS.md") if mode == "full" and not only else None)
    if output:
        Path(output).write_text(text + "\n")
        log(f"wrote {output}")
    log(f"done in {fmt_ms(report.duration * 1e3)} ({shlex.join(sys.argv)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
