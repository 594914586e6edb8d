"""The shapes the benchmark builds, and how many tests measure each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """One network shape, measured as setup + teardown of one pytest test.

    ``fixture`` is what the generated test requests (a plugin fixture, or a
    ``bench_*`` recipe from ``bench._plugin_shapes`` / ``bench._handrolled``);
    ``needs`` is the plugin fixture that must exist for the plugin column.
    """

    key: str
    size: int
    fixture: str
    needs: str
    tests: int

    @property
    def label(self) -> str:
        return {
            "netns": "netns",
            "pair": "netns_pair",
            "bridge": f"netns_bridge, {self.size} members",
            "chain": f"chain of {self.size} routers",
            "nat": "netns_nat",
            "many": f"{self.size} namespaces at once",
            "noop": "no-op fixture",
            "traffic": "netns_pair, a datagram under `with`",
            "cluster": "cluster: 2 nodes, 4 pods, 1 service, DNS",
            "docker": "netns_docker, 2 containers on a user network",
        }[self.key]

    @property
    def plugin_only(self) -> bool:
        """The body uses the plugin's objects (``with ns:``): no hand-rolled or floor column."""
        return self.key in BODIES or self.key in PLUGIN_ONLY

    def test_module(self) -> str:
        """The generated test module: ``tests`` trivial tests requesting the fixture."""
        marks = []
        if self.key == "bridge":
            marks.append(f"pytest.mark.netns(size={self.size})")
        if self.key in ("chain", "many"):
            marks.append(f"pytest.mark.bench(size={self.size})")
        return (
            "import socket\n\nimport pytest\n\n"
            f"pytestmark = [{', '.join(marks)}]\n\n\n"
            f'@pytest.mark.parametrize("i", range({self.tests}))\n'
            f"def test_shape(i, {self.fixture}):\n" + BODIES.get(self.key, "    pass\n")
        )


#: Test bodies other than ``pass``.  ``traffic``: what most network tests do, sockets made inside
#: with ``with ns:`` and one datagram across (entering marks a namespace as possibly hosting
#: processes, which teardown then looks for).
BODIES = {
    "traffic": """\
    a, b = netns_pair
    with b:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("10.0.0.2", 9000))
        tx.sendto(b"ping", ("10.0.0.2", 9000))
        assert rx.recv(16) == b"ping"
""",
}


#: Shapes with no hand-rolled equivalent (the cluster's kube-proxy rules, DNS server, resolv.conf;
#: Docker's rules and embedded DNS).
PLUGIN_ONLY = {"cluster", "docker"}

#: The models issue 13 measures against ``netns_pair``, and the goal: at most this many times a
#: ``netns_pair`` test measured in the same rounds (each round runs both suites, in alternating order).
MODELS = {"cluster": 8.0, "docker": 4.0}

#: (key, size, fixture, plugin fixture needed, tests in the full run, in --quick, in --smoke)
_TABLE = [
    ("netns", 1, "netns", "netns", 500, 60, 3),
    ("pair", 2, "netns_pair", "netns_pair", 500, 60, 3),
    ("traffic", 2, "netns_pair", "netns_pair", 500, 60, 3),
    ("bridge", 3, "netns_bridge", "netns_bridge", 200, 30, 3),
    ("bridge", 100, "netns_bridge", "netns_bridge", 15, 4, 2),
    ("chain", 100, "bench_chain", "netns_topology", 15, 4, 2),
    ("nat", 3, "netns_nat", "netns_nat", 200, 30, 3),
    ("many", 1000, "bench_many", "netns_factory", 4, 2, 2),
    ("cluster", 4, "bench_cluster", "netns_cluster", 99, 30, 2),
    ("docker", 2, "bench_docker", "netns_docker", 99, 30, 2),
]
#: Smaller sizes for --smoke, so the smoke test stays fast.
_SMOKE_SIZE = {100: 5, 1000: 10}


def shapes(mode: str) -> list[Shape]:
    """The shapes for ``mode`` in ("full", "quick", "smoke")."""
    column = {"full": 4, "quick": 5, "smoke": 6}[mode]
    result = []
    for row in _TABLE:
        key, size, fixture, needs = row[:4]
        if mode == "smoke":
            size = _SMOKE_SIZE.get(size, size)
        result.append(Shape(key, size, fixture, needs, row[column]))  # type: ignore[arg-type]
    return result


def warmup(shape: Shape) -> int:
    """Leading tests left out of the statistics (imports, caches, the watchdog start)."""
    if shape.tests >= 20:
        return 5
    return 1 if shape.tests >= 2 else 0


def rounds(shape: Shape) -> int:
    """In how many rounds each column's tests run (alternating with the other columns)."""
    if shape.key in MODELS:  # measured against netns_pair round by round
        return 3 if shape.tests >= 9 else 1
    return 3 if shape.tests >= 100 else 1
