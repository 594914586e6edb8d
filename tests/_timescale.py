"""The tests' own deadlines and head starts, scaled on a slow machine.

``dev/kernel-inner`` sets ``PYTEST_NETNS_TIMEOUT_SCALE`` inside the QEMU
VM, where TCG emulation makes everything 5-30x slower than natively.  Only
the tests read it (the fault harness, a head start given to a thread): the
package's own timeouts and behaviour never change with it.
"""

from __future__ import annotations

import os


def _timeout_scale() -> float:
    value = os.environ.get("PYTEST_NETNS_TIMEOUT_SCALE", "1")
    try:
        scale = float(value)
    except ValueError:
        scale = 0.0
    if not 1 <= scale <= 100:
        raise ValueError(f"PYTEST_NETNS_TIMEOUT_SCALE must be a number from 1 to 100, got {value!r}")
    return scale


#: 1 natively.
TIMEOUT_SCALE = _timeout_scale()


def scaled(seconds: float) -> float:
    """``seconds`` (a test's deadline or head start natively), times ``TIMEOUT_SCALE``."""
    return seconds * TIMEOUT_SCALE
