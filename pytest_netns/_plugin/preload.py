"""scapy is imported before the first test that captures runs, not inside it.

Importing scapy costs ~0.4 s on the project's VM (0.6 s on slower
machines).  A capture without ``filter=`` listens before it needs scapy, so
it misses nothing while the import runs; but ``filter=`` compiles its BPF
with scapy first, and the first ``sniff``/``Capture.wait`` of a process
would spend the import inside the test's own timeouts.  So when a test is
set up whose module mentions ``sniff`` or ``capture`` (a name in the code of
a function or method found in the module, helpers imported into it
included), and scapy is not imported yet, it is imported then, once per
process, in that test's setup.  A test module that imports scapy itself
imported it at collection; one that never captures pays nothing.  The
other packet helpers (``send``, ``sendp``, ``sr1``) take scapy packets,
which the test built with scapy already imported.
"""

from __future__ import annotations

import sys
import types
import weakref
from collections.abc import Iterator

import pytest

#: What a test calls to capture (Namespace.sniff/capture, Segment.sniff/capture).
CAPTURING = frozenset({"sniff", "capture"})
_seen: weakref.WeakKeyDictionary[types.ModuleType, bool] = weakref.WeakKeyDictionary()  # whether it mentions them


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _functions(namespace: dict[str, object], depth: int = 0) -> Iterator[types.CodeType]:
    for value in namespace.values():
        code = getattr(value, "__code__", None)
        if isinstance(code, types.CodeType):
            yield from _codes(code)
        elif isinstance(value, type) and depth < 2:
            yield from _functions(dict(vars(value)), depth + 1)


def captures(module: types.ModuleType) -> bool:
    """Whether the code of ``module``'s functions and classes names ``sniff`` or ``capture`` (cached per module)."""
    found = _seen.get(module)
    if found is None:
        found = _seen[module] = any(CAPTURING & set(code.co_names) for code in _functions(vars(module)))
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if "scapy.all" in sys.modules:
        return
    module = getattr(item, "module", None)
    if isinstance(module, types.ModuleType) and captures(module):
        from ..packets.decode import load_scapy

        load_scapy()
