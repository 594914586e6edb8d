"""tc's units: rates in bits per second ("8mbit") and durations ("40ms"), parsed as tc parses them."""

from __future__ import annotations

import math
import re

__all__ = ["Duration", "parse_duration", "parse_rate"]

Duration = str | int | float

#: The rate units taken, case-insensitively: bits per second only.
_RATE_UNITS: dict[str, float] = {
    "bit": 1,
    "kibit": 1024,
    "kbit": 1000,
    "mibit": 1024**2,
    "mbit": 1000**2,
    "gibit": 1024**3,
    "gbit": 1000**3,
}

#: tc's *byte* rate units (iproute2 tc/tc_util.c), refused: tc reads "mbps" as
#: megabytes per second, while "8 Mbps" written by a person means megabits.
_BYTE_UNITS: dict[str, str] = {
    "bps": "bit",
    "kibps": "kibit",
    "kbps": "kbit",
    "mibps": "mibit",
    "mbps": "mbit",
    "gibps": "gibit",
    "gbps": "gbit",
}

#: tc's time units (tc/tc_util.c get_time), in seconds.
_TIME_UNITS: dict[str, float] = {
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "ms": 1e-3,
    "msec": 1e-3,
    "msecs": 1e-3,
    "us": 1e-6,
    "usec": 1e-6,
    "usecs": 1e-6,
    "ns": 1e-9,
    "nsec": 1e-9,
    "nsecs": 1e-9,
}

_NUMBER_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")


def parse_rate(rate: str | int) -> int:
    """A rate ("8mbit", "512kbit", "1gbit", "2mibit") in bits per second.

    Bit units only, case-insensitive: bit, kbit, mbit, gbit (powers of
    1000), kibit, mibit, gibit (powers of 1024).  A bare number or an
    ``int`` is bits per second.  tc's byte units (bps, kbps, mbps, ...) are
    refused: tc reads "mbps" as megabytes per second, so "8 Mbps" would be
    64 Mbit/s where the writer almost always meant 8.  Raises
    ``ValueError`` naming the value if it is not a positive rate.
    """
    if isinstance(rate, bool):
        raise ValueError(f"rate {rate!r} is not a rate")
    if isinstance(rate, int):
        bits = float(rate)
    elif isinstance(rate, str):
        match = _NUMBER_UNIT.fullmatch(rate)
        unit = match.group(2).lower() if match else None
        if match is not None and unit in _BYTE_UNITS:
            number, bit_unit = match.group(1), _BYTE_UNITS[unit]
            raise ValueError(
                f"rate {rate!r}: {match.group(2)!r} is ambiguous, tc reads it as bytes per second "
                f"({rate.strip()!r} would be {float(number) * 8:g}{bit_unit}); write bits per second, "
                f"e.g. '{number}{bit_unit}'"
            )
        if match is None or (unit and unit not in _RATE_UNITS):
            raise ValueError(
                f"rate {rate!r} is not a number with a bit unit (bit, kbit, mbit, gbit, kibit, mibit, gibit)"
            )
        bits = float(match.group(1)) * _RATE_UNITS.get(unit or "bit", 1)
    else:
        raise ValueError(f"rate {rate!r} is not a rate")
    if not math.isfinite(bits) or round(bits) < 8:
        raise ValueError(f"rate {rate!r} is below 1 byte per second")
    return round(bits)


def parse_duration(value: Duration) -> float:
    """A duration ("40ms", "1s", "250us", "1.5s") in seconds.

    Strings need a unit (s, ms, us, ns; tc's sec/msec/usec spellings are
    accepted too), because tc reads a bare number as microseconds while
    Python code means seconds.  An ``int`` or ``float`` is taken as seconds.
    Raises ``ValueError`` naming the value if it is not a duration >= 0.
    """
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _NUMBER_UNIT.fullmatch(value)
        if match is None or match.group(2).lower() not in _TIME_UNITS:
            raise ValueError(f"duration {value!r} is not a number with a unit (s, ms, us, ns)")
        seconds = float(match.group(1)) * _TIME_UNITS[match.group(2).lower()]
    else:
        raise ValueError(f"duration {value!r} is not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration {value!r} is not a duration >= 0")
    return seconds
