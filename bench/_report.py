"""The Markdown report: tables and the goals verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._memory import MemoryResult
from ._shapes import MODELS, Shape
from ._stats import Summary, fmt_ms, ratio


@dataclass
class Column:
    key: str
    title: str


@dataclass
class ShapeRow:
    shape: Shape
    cells: dict[str, Summary | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: column key -> (setup, teardown) summaries
    phases: dict[str, tuple[Summary, Summary]] = field(default_factory=dict)
    #: A model's yardstick: netns_pair (default plugin column) measured in the same rounds.
    yardstick: Summary | None = None


@dataclass
class Growth:
    tests: int
    window: int
    first: Summary
    last: Summary
    samples: list[dict[str, int]]
    #: the same number of tests with a no-op fixture (pytest's own growth)
    control: list[dict[str, int]] = field(default_factory=list)

    def extra_rss_per_test(self) -> float | None:
        """KiB of RSS growth per test between the first and last sample, beyond the no-op control's."""
        if len(self.samples) < 2 or len(self.control) < 2:
            return None

        def slope(samples: list[dict[str, int]]) -> float:
            first, last = samples[0], samples[-1]
            return (last["rss_kib"] - first["rss_kib"]) / max(last["sample"] - first["sample"], 1)

        return slope(self.samples) - slope(self.control)


@dataclass
class XdistRun:
    workers: int
    tests: int
    wall: float
    per_test: Summary
    #: wall time of the same suite with a no-op fixture (start-up, collection, pytest per test)
    noop_wall: float | None = None


@dataclass
class Report:
    mode: str
    machine: list[str]
    command: str
    plugin_columns: list[Column]
    default_plugin: str
    baselines: list[str] = field(default_factory=lambda: ["ip", "ip-batch"])
    rows: list[ShapeRow] = field(default_factory=list)
    #: (what, summary) rows splitting the netns_pair figure
    breakdown: list[tuple[str, Summary]] = field(default_factory=list)
    freeing: list[tuple[str, Summary]] = field(default_factory=list)
    growth: Growth | None = None
    xdist: list[XdistRun] = field(default_factory=list)
    memory: list[tuple[str, MemoryResult]] = field(default_factory=list)
    #: (what, summary): cutting and healing a partition (issue 15)
    partition: list[tuple[str, Summary]] = field(default_factory=list)
    #: (what, summary): creating and deleting a NetworkPolicy (issue 14)
    policy: list[tuple[str, Summary]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0
    load_end: str = ""

    # -- lookups --------------------------------------------------------------

    def row(self, key: str, size: int | None = None) -> ShapeRow | None:
        for row in self.rows:
            if row.shape.key == key and (size is None or row.shape.size == size):
                return row
        return None

    def cell(self, key: str, column: str, size: int | None = None) -> Summary | None:
        row = self.row(key, size)
        return row.cells.get(column) if row else None

    # -- rendering ------------------------------------------------------------

    def columns(self) -> list[Column]:
        titles = {"ip": "ip per step", "ip-batch": "ip -batch", "ip-exec": "ip netns exec per step"}
        return [*self.plugin_columns, *(Column(b, titles[b]) for b in self.baselines), Column("floor", "floor")]

    def shape_table(self) -> list[str]:
        columns = self.columns()
        head = ["shape", *(c.title for c in columns), "ip ÷ plugin", "ip -batch ÷ plugin", "plugin ÷ floor", "n"]
        lines = [_row(head), _row(["---"] * len(head))]
        for row in self.rows:
            plugin = row.cells.get(self.default_plugin)
            cells = [row.shape.label]
            cells += [_cell(row.cells.get(c.key)) for c in columns]
            cells += [
                ratio(row.cells.get("ip"), plugin),
                ratio(row.cells.get("ip-batch"), plugin),
                ratio(plugin, row.cells.get("floor")),
            ]
            counts = sorted({s.n for s in row.cells.values() if s})
            cells.append("/".join(map(str, counts)) or "-")
            lines.append(_row(cells))
        return lines

    def goals(self) -> list[tuple[str, str, str]]:
        """(goal, measured, verdict) for the goals of issues 2, 6, 12 and 15."""
        full = self.mode != "smoke"
        pair = self.cell("pair", self.default_plugin)
        floor = self.cell("pair", "floor")
        ip = self.cell("pair", "ip")
        result = []

        def verdict(ok: bool | None) -> str:
            if not full:
                return "not evaluated (smoke run)"
            if ok is None:
                return "not measured"
            return "met" if ok else "**missed**"

        result.append(
            (
                "netns_pair setup + teardown median <= 3 ms",
                fmt_ms(pair.median) if pair else "-",
                verdict(pair.median <= 3 if pair else None),
            )
        )
        traffic = self.cell("traffic", self.default_plugin)
        result.append(
            (
                "the same with a datagram sent under `with ns:` <= 3 ms (issue 12)",
                fmt_ms(traffic.median) if traffic else "-",
                verdict(traffic.median <= 3 if traffic else None),
            )
        )
        result.append(
            (
                ">= 25x cheaper than the hand-rolled ip fixture",
                ratio(ip, pair),
                verdict(ip.median / pair.median >= 25 if ip and pair else None),
            )
        )
        result.append(
            (
                "within 2x of the floor",
                ratio(pair, floor),
                verdict(pair.median / floor.median <= 2 if pair and floor else None),
            )
        )
        bridge = self.cell("bridge", self.default_plugin, 100) if full else None
        result.append(
            (
                "100-member bridge up + down <= 250 ms",
                fmt_ms(bridge.median) if bridge else "-",
                verdict(bridge.median <= 250 if bridge else None),
            )
        )
        many = self.cell("many", self.default_plugin, 1000) if full else None
        result.append(
            (
                "1,000 namespaces up + down <= 3 s",
                fmt_ms(many.median) if many else "-",
                verdict(many.median <= 3000 if many else None),
            )
        )
        if self.growth:
            g = self.growth
            change = g.last.median / g.first.median
            fds = [s["fds"] for s in g.samples]
            extra = g.extra_rss_per_test()
            flat = change <= 1.10 and (not fds or max(fds) - min(fds) <= 2) and (extra is None or extra <= 1.0)
            measured = f"cost {change:.2f}x"
            if extra is not None:
                measured += f"; RSS {extra:+.1f} KiB per test beyond pytest's own"
            if fds:
                measured += f"; open fds {min(fds)}..{max(fds)}"
            result.append(
                (f"flat over {g.tests:,} tests (last {g.window:,} vs first {g.window:,})", measured, verdict(flat))
            )
        else:
            result.append(("flat over 10,000 tests", "-", verdict(None)))
        slowest = max(self.partition, key=lambda item: item[1].median)[1] if self.partition else None
        result.append(
            (
                "cutting or healing a partition of 5 namespaces <= 5 ms (issue 15)",
                " / ".join(fmt_ms(s.median) for _, s in self.partition) or "-",
                verdict(slowest.median <= 5 if slowest else None),
            )
        )
        for key, goal in MODELS.items():
            row = self.row(key)
            label = row.shape.label if row else key
            model = row.cells.get(self.default_plugin) if row else None
            pair = row.yardstick if row else None
            result.append(
                (
                    f"{label}: setup + teardown <= {goal:g}x netns_pair in the same rounds (issue 13)",
                    ratio(model, pair),
                    verdict(model.median / pair.median <= goal if model and pair else None),
                )
            )
        slowest = max(self.policy, key=lambda item: item[1].median)[1] if self.policy else None
        result.append(
            (
                "a NetworkPolicy change in force <= 5 ms, 3 nodes and 20 pods (issue 14)",
                " / ".join(fmt_ms(s.median) for _, s in self.policy) or "-",
                verdict(slowest.median <= 5 if slowest else None),
            )
        )
        return result

    def models_table(self) -> list[str]:
        """The models of issue 13 against netns_pair measured in the same rounds."""
        head = ["model", "setup + teardown", "netns_pair, same rounds", "model ÷ netns_pair", "goal", "n"]
        lines = [_row(head), _row(["---"] * len(head))]
        for key, goal in MODELS.items():
            row = self.row(key)
            if row is None:
                continue
            model = row.cells.get(self.default_plugin)
            pair = row.yardstick
            counts = "/".join(str(s.n) for s in (model, pair) if s) or "-"
            lines.append(
                _row([row.shape.label, _cell(model), _cell(pair), ratio(model, pair), f"<= {goal:g}x", counts])
            )
        return lines

    def markdown(self) -> str:
        out = [f"# pytest-netns benchmark ({self.mode} run)", ""]
        out += [f"Command: `{self.command}` (took {self.duration / 60:.1f} min).", ""]
        out += ["## Machine", ""] + [f"- {line}" for line in self.machine]
        out += [f"- Load average at the end: {self.load_end}", ""]
        busy = _busy(self.machine, self.load_end)
        if busy:
            out += [
                f"**Warning: the machine was busy during this run ({busy}); the figures are inflated and "
                "noisy, and the verdicts below are not meaningful. Re-run on an idle machine.**",
                "",
            ]
        out += ["## Setup + teardown per test, as pytest measures it", ""]
        out += [
            "Median / p90 of `report.duration` of the setup and teardown phases of trivial tests that "
            "request the fixture (the first tests of each suite are left out as warm-up). "
            "The floor is the same kernel work done in a plain Python loop, without pytest. "
            f'Ratios compare medians; "plugin" in the ratios is `{self.default_plugin}`.',
            "",
        ]
        out += [*self.shape_table(), ""]
        row_notes = [f"- {row.shape.label}: {note}" for row in self.rows for note in row.notes]
        if row_notes:
            out += ["Notes:", "", *row_notes, ""]
        if any(self.row(key) for key in MODELS):
            out += [
                "## The Kubernetes and Docker models against netns_pair (issue 13)",
                "",
                f"Each round runs the model's suite and a `netns_pair` suite (`{self.default_plugin}`) one after "
                "the other, in alternating order, so the ratio compares tests run under the same load.",
                "",
                *self.models_table(),
                "",
            ]
        if self.breakdown:
            out += ["## Where the netns_pair time goes", "", _row(["what", "median / p90"]), _row(["---"] * 2)]
            out += [_row([label, summary.cell()]) for label, summary in self.breakdown] + [""]
        if self.freeing:
            out += [
                "## Time until the kernel has freed the namespaces after teardown",
                "",
                _row(["what was torn down", "median / p90", "n"]),
                _row(["---"] * 3),
            ]
            out += [_row([label, s.cell(), str(s.n)]) for label, s in self.freeing] + [""]
        if self.growth:
            g = self.growth
            out += [
                f"## Cost over {g.tests:,} consecutive netns_pair tests (plugin defaults)",
                "",
                _row(["window", "median / p90"]),
                _row(["---"] * 2),
                _row([f"first {g.window:,}", g.first.cell()]),
                _row([f"last {g.window:,}", g.last.cell()]),
                "",
            ]
            for what, samples in (("netns_pair", g.samples), ("a no-op fixture (pytest alone)", g.control)):
                if samples:
                    first, last = samples[0], samples[-1]
                    out += [
                        f"Test process with {what}: after {first['sample']:,} tests RSS "
                        f"{first['rss_kib'] / 1024:.1f} MiB and {first['fds']} open fds; after {last['sample']:,} "
                        f"tests RSS {last['rss_kib'] / 1024:.1f} MiB and {last['fds']} open fds.",
                        "",
                    ]
        if self.xdist:
            base = self.xdist[0]
            out += [
                f"## pytest-xdist: {base.tests:,} netns_pair tests",
                "",
                _row(
                    [
                        "workers",
                        "wall time",
                        "speed-up",
                        "same suite, no-op fixture",
                        "difference",
                        "speed-up of the difference",
                        "setup + teardown median / p90",
                    ]
                ),
                _row(["---"] * 7),
            ]
            for run in self.xdist:
                label = "no xdist" if run.workers == 0 else f"-n {run.workers}"
                diff = run.wall - run.noop_wall if run.noop_wall is not None else None
                base_diff = base.wall - base.noop_wall if base.noop_wall is not None else None
                out.append(
                    _row(
                        [
                            label,
                            f"{run.wall:.2f} s",
                            f"{base.wall / run.wall:.2f}x",
                            f"{run.noop_wall:.2f} s" if run.noop_wall is not None else "-",
                            f"{diff:.2f} s" if diff is not None else "-",
                            f"{base_diff / diff:.2f}x" if diff and base_diff else "-",
                            run.per_test.cell(),
                        ]
                    )
                )
            out += [
                "",
                "Wall times of the whole pytest process (start-up, collection and worker start included); "
                "the difference to the no-op suite is the time the fixtures add.",
                "",
            ]
        if self.memory:
            out += [
                "## Memory per namespace (held at once)",
                "",
                _row(
                    [
                        "variant",
                        "namespaces held",
                        "MemAvailable drop",
                        "kernel (Slab+Percpu+stacks+page tables)",
                        "test process RSS",
                    ]
                ),
                _row(["---"] * 5),
            ]
            for label, m in self.memory:
                out.append(
                    _row(
                        [
                            label,
                            f"{m.namespaces:,}",
                            f"{m.available:.0f} KiB",
                            f"{m.kernel:.0f} KiB",
                            f"{m.process:.1f} KiB",
                        ]
                    )
                )
            out += ["", "Per namespace; for netns_pair, per namespace of the pairs (a veth end each).", ""]
        if self.partition:
            out += [
                "## Partitions: cutting and healing 5 namespaces (issue 15)",
                "",
                _row(["what", "median / p90", "n"]),
                _row(["---"] * 3),
            ]
            out += [_row([label, s.cell(), str(s.n)]) for label, s in self.partition] + [""]
        if self.policy:
            out += [
                "## NetworkPolicy changes: 3 nodes, 20 pods (issue 14)",
                "",
                _row(["what", "median / p90", "n"]),
                _row(["---"] * 3),
            ]
            out += [_row([label, s.cell(), str(s.n)]) for label, s in self.policy] + [""]
        out += ["## Goals (issues 2, 6, 12 to 15)", "", _row(["goal", "measured", "verdict"]), _row(["---"] * 3)]
        out += [_row(list(g)) for g in self.goals()] + [""]
        if self.notes:
            out += ["## Notes", "", *(f"- {n}" for n in self.notes), ""]
        return "\n".join(out)


def _busy(machine: list[str], load_end: str) -> str:
    """A description of the load if others used more than half the cores at the start or the end, else ''."""
    import os
    import re

    cores = os.cpu_count() or 1
    start = next((m.group(1) for line in machine if (m := re.search(r"load average at start ([\d.]+)", line))), "0")
    end = load_end.split()[0] if load_end else "0"
    # The run itself keeps about one core busy: allow for it at the end.
    if float(start) > cores / 2 or float(end) > cores / 2 + 1:
        return f"1-minute load average {start} at the start and {end} at the end, on {cores} cores"
    return ""


def _process(sample: dict[str, int]) -> str:
    threads = f", {sample['threads']} threads" if "threads" in sample else ""
    return f"RSS {sample['rss_kib'] / 1024:.1f} MiB{threads}, {sample['fds']} open fds"


def _cell(summary: Summary | None) -> str:
    return summary.cell() if summary else "-"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
