"""Summaries of samples: median and 90th percentile (nearest rank), in milliseconds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Median and p90 of ``n`` samples, in milliseconds."""

    n: int
    median: float
    p90: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Summary:
        if not seconds:
            raise ValueError("no samples")
        ordered = sorted(seconds)
        p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
        return cls(len(ordered), statistics.median(ordered) * 1e3, p90 * 1e3)

    def cell(self) -> str:
        return f"{fmt_ms(self.median)} / {fmt_ms(self.p90)}"


def fmt_ms(ms: float) -> str:
    """A duration in ms with about three significant digits (s above 10 s)."""
    if ms >= 10_000:
        return f"{ms / 1e3:.1f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def ratio(numerator: Summary | None, denominator: Summary | None) -> str:
    """``numerator / denominator`` of the medians, like ``31x`` (or ``-``)."""
    if numerator is None or denominator is None or denominator.median <= 0:
        return "-"
    value = numerator.median / denominator.median
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"
