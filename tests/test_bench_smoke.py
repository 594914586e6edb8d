"""The benchmark harness (``python -m bench``) still runs, in its smallest mode.

No timing is asserted here: performance lives in the benchmark itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.serial]

ROWS = [
    "netns",
    "netns_pair",
    "netns_bridge, 3 members",
    "netns_bridge, 5 members",
    "chain of 5 routers",
    "netns_nat",
    "10 namespaces at once",
]
SECTIONS = [
    "## Setup + teardown per test, as pytest measures it",
    "## Where the netns_pair time goes",
    "## Time until the kernel has freed the namespaces after teardown",
    "## Cost over 40 consecutive netns_pair tests (plugin defaults)",
    "## pytest-xdist: 10 netns_pair tests",
    "## Memory per namespace (held at once)",
    "## Partitions: cutting and healing 5 namespaces (issue 15)",
    "## The Kubernetes and Docker models against netns_pair (issue 13)",
    "## Goals (issues 2, 6, 12 to 15)",
]


def test_bench_smoke(netns_factory: object, tmp_path: Path) -> None:
    # netns_factory only makes pytest-netns skip (or fail with --netns-require) where namespaces are unavailable.
    output = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "FAILED" not in done.stderr, done.stderr[-4000:]
    text = output.read_text()
    assert text.strip() == done.stdout.strip()
    for section in SECTIONS:
        assert section in text
    table = text.split("## Setup + teardown per test", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert [label for label in ROWS if label in rows] == ROWS, sorted(rows)
    for label in ROWS:
        cells = [cell.strip() for cell in rows[label].split("|")[1:-1]]
        measured = cells[1:-4]
        if f"- {label}: hand-rolled baselines skipped" not in text:  # `ip`/`nft` missing on this machine
            assert all(cell.endswith(" ms") for cell in measured), rows[label]  # every implementation measured
        assert measured[0].endswith(" ms") and measured[-1].endswith(" ms"), rows[label]  # plugin and floor
    # The pair whose test body enters both namespaces and sends a datagram: plugin columns only.
    cells = [cell.strip() for cell in rows["netns_pair, a datagram under `with`"].split("|")[1:-1]]
    assert cells[1].endswith(" ms") and cells[-5] == "-", cells
