"""Options, ini values and the ``netns`` marker, resolved in one place.

Precedence: command line > environment (``PYTEST_NETNS_*``) > ini file;
the marker configures the topology of a single test (closest marker wins:
function over class over module).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Literal

import pytest

from ..presets.simple import NetworkSettings

MARKER_SIGNATURE = 'netns(mtu=1500, subnet="10.0.0.0/24", ipv6=True, size=3, offloads=False, cni="ptp")'
MARKER_HELP = (
    f"{MARKER_SIGNATURE}: configure the network of netns_pair and netns_bridge: "
    "interface MTU, IPv4 subnet (hosts get its first addresses in order), whether IPv6 "
    "addresses (fd00::/64) are added, the number of bridge members, and whether segmentation "
    "and receive offloads stay on (off: every captured frame fits the MTU); "
    "cni: how netns_cluster connects pods to their node (ptp or bridge). "
    "netns_pair reads mtu, subnet, ipv6, offloads; netns_bridge also size; netns_cluster cni: "
    "on a test, an argument none of its fixtures reads is a usage error."
)
PCAP_CHOICES = ("never", "failed", "always")


def _marker_arguments(
    *,
    mtu: int = 1500,
    subnet: str = "10.0.0.0/24",
    ipv6: bool = True,
    size: int = 3,
    offloads: bool = False,
    cni: str = "ptp",
) -> None:
    """The marker's signature; binding to it reports unknown arguments."""


#: The marker arguments each fixture reads; no other fixture reads the marker.
MARKER_READERS: dict[str, tuple[str, ...]] = {
    "netns_pair": ("mtu", "subnet", "ipv6", "offloads"),
    "netns_bridge": ("mtu", "subnet", "ipv6", "offloads", "size"),
    "netns_cluster": ("cni",),
}


def _where(item: pytest.Item) -> str:
    return f"@pytest.mark.{MARKER_SIGNATURE.split('(')[0]} on {item.nodeid}"


def _readers(argument: str) -> str:
    return ", ".join(fixture for fixture, arguments in MARKER_READERS.items() if argument in arguments)


def check_marker(item: pytest.Item) -> None:
    """The closest ``netns`` marker's arguments, checked against the fixtures ``item`` requests (UsageError).

    Positional and unknown arguments are errors wherever the marker is.  An
    argument none of the test's fixtures reads (``MARKER_READERS``; the test
    requests its arguments, ``usefixtures``, autouse fixtures and what they
    depend on) is an error when the marker is the test's own; a marker on a
    class or module configures tests that use different fixtures, so there
    each test ignores the arguments its fixtures do not read.
    """
    __tracebackhide__ = True
    found = next(item.iter_markers_with_node("netns"), None)
    if found is None:
        return
    node, marker = found
    where = _where(item)
    valid = ", ".join(inspect.signature(_marker_arguments).parameters)
    if marker.args:
        raise pytest.UsageError(f"{where}: takes keyword arguments only ({valid}), got positional {marker.args!r}")
    unknown = sorted(set(marker.kwargs) - set(inspect.signature(_marker_arguments).parameters))
    if unknown:
        raise pytest.UsageError(f"{where}: unknown argument {', '.join(map(repr, unknown))} (valid: {valid})")
    if node is not item:
        return
    requested = getattr(item, "fixturenames", ())
    readers = [fixture for fixture in MARKER_READERS if fixture in requested]
    read = {argument for fixture in readers for argument in MARKER_READERS[fixture]}
    unread = [argument for argument in marker.kwargs if argument not in read]
    if not unread:
        return
    named = ", ".join(f"{argument}= (read by {_readers(argument)})" for argument in unread)
    if not readers:
        raise pytest.UsageError(
            f"{where}: no fixture this test requests reads the marker, so {named} would be ignored "
            "(a fixture requested with request.getfixturevalue() does not count: request it as an argument)"
        )
    takes = "; ".join(f"{fixture} takes {', '.join(MARKER_READERS[fixture])}" for fixture in readers)
    raise pytest.UsageError(f"{where}: {named} does not apply to {', '.join(readers)} ({takes})")


def network_settings(item: pytest.Item, members: int | None = None, *, fixture: str | None = None) -> NetworkSettings:
    """The closest ``netns`` marker of ``item``, validated; UsageError names a bad argument.

    ``fixture`` takes only the arguments it reads (``MARKER_READERS``: an
    inherited marker may hold others); without it every network argument is
    checked.  ``members`` is how many hosts the subnet must hold (default:
    ``size``).
    """
    __tracebackhide__ = True
    check_marker(item)
    marker = item.get_closest_marker("netns")
    if marker is None:
        return NetworkSettings()
    wanted = MARKER_READERS[fixture] if fixture is not None else tuple(marker.kwargs)
    network = {key: value for key, value in marker.kwargs.items() if key in wanted and key != "cni"}
    try:
        if fixture is None:
            cluster_cni(item)
        return NetworkSettings.checked(**network, members=members)
    except ValueError as exc:
        raise pytest.UsageError(f"{_where(item)}: {exc}") from None


def cluster_cni(item: pytest.Item) -> Literal["ptp", "bridge"]:
    """The ``cni`` argument of the closest ``netns`` marker (default ``"ptp"``); a bad value is a ``ValueError``."""
    from ..presets.cluster.network import DEFAULT_CNI, check_cni

    marker = item.get_closest_marker("netns")
    cni = check_cni(marker.kwargs.get("cni", DEFAULT_CNI) if marker is not None else DEFAULT_CNI)
    return "bridge" if cni == "bridge" else "ptp"


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netns", "network namespaces (pytest-netns)")
    group.addoption(
        "--netns-require",
        action="store_true",
        default=None,
        help="fail (instead of skip) tests that need network namespaces when this machine cannot make them. "
        "Also: ini netns_require, env PYTEST_NETNS_REQUIRE=1.",
    )
    parser.addini(
        "netns_require",
        default="false",
        help="fail instead of skip when network namespaces are unavailable (true/false)",
    )
    group.addoption(
        "--netns-kill-grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="at teardown, how long a process started with Namespace.popen may take to exit after SIGTERM "
        "before it is killed (default 1.0). Also: ini netns_kill_grace, env PYTEST_NETNS_KILL_GRACE.",
    )
    parser.addini(
        "netns_kill_grace", default="1.0", help="seconds between SIGTERM and SIGKILL for processes left at teardown"
    )
    group.addoption(
        "--netns-require-features",
        default=None,
        metavar="FEATURES",
        help="comma list of features (the names `python -m pytest_netns doctor` shows, e.g. netem,libpcap,"
        "br_netfilter): a test that needs one this machine lacks fails, naming it, instead of being skipped. "
        "Also: ini netns_require_features, env PYTEST_NETNS_REQUIRE_FEATURES.",
    )
    parser.addini(
        "netns_require_features",
        default="",
        help="comma list of features whose absence fails the tests that need them instead of skipping them",
    )

    group.addoption(
        "--netns-rootless",
        action="store_true",
        default=None,
        help="without root: run the session inside a user + network namespace of its own (needs unprivileged "
        "user namespaces). Also: ini netns_rootless, env PYTEST_NETNS_ROOTLESS=1.",
    )
    parser.addini(
        "netns_rootless",
        default="false",
        help="run the session in its own user + network namespace when not root (true/false)",
    )
    group.addoption(
        "--netns-sandbox",
        action="store_true",
        default=None,
        help="before any test (and before xdist starts workers), move the whole session into a fresh network "
        "namespace with only lo up: outside the fixtures only loopback works, and no test packet reaches the "
        "machine's real network. Implied by --netns-rootless. Also: ini netns_sandbox, env PYTEST_NETNS_SANDBOX=1.",
    )
    parser.addini(
        "netns_sandbox",
        default="false",
        help="run the whole session in a fresh network namespace with only lo up (true/false)",
    )


@dataclass(frozen=True)
class RunSettings:
    """The run-wide options, resolved once at configure time."""

    require: bool
    kill_grace: float
    #: --netns-require-features: doctor's feature names, in the order given.
    require_features: tuple[str, ...] = ()
    rootless: bool = False
    #: --netns-sandbox, or implied by --netns-rootless.
    sandbox: bool = False
    #: Where the sandbox was asked for (for messages), e.g. "--netns-sandbox".
    sandbox_source: str = ""


def _pick(config: pytest.Config, option: str | None, env: str, ini: str) -> tuple[object, str]:
    """A run-wide value and where it came from: command line > environment > ini (the one precedence rule)."""
    value = config.getoption(option) if option else None
    if value is not None:
        return value, f"--{option.replace('_', '-')}"  # type: ignore[union-attr]
    if env in os.environ:
        return os.environ[env], f"environment variable {env}"
    return config.getini(ini), f"ini option {ini}"


def _as_bool(value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise pytest.UsageError(f"{source}: {value!r} is not a boolean (use 1/0, true/false, yes/no)")


def _features(value: object, source: str) -> tuple[str, ...]:
    """A comma list of doctor's feature names; UsageError names an unknown one and lists the valid ones."""
    from .._kernel.probes import FEATURES

    names = [name.strip() for name in str(value).split(",") if name.strip()]
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise pytest.UsageError(
            f"{source}: unknown feature {', '.join(map(repr, unknown))}; valid: {', '.join(FEATURES)}"
        )
    return tuple(dict.fromkeys(names))


def resolve(config: pytest.Config) -> RunSettings:
    require, source = _pick(config, "netns_require", "PYTEST_NETNS_REQUIRE", "netns_require")
    require = _as_bool(require, source)
    grace, source = _pick(config, "netns_kill_grace", "PYTEST_NETNS_KILL_GRACE", "netns_kill_grace")
    try:
        kill_grace = float(grace)  # type: ignore[arg-type]
        if kill_grace < 0 or kill_grace != kill_grace:
            raise ValueError
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{source}: {grace!r} is not a non-negative number of seconds") from None
    value, rootless_source = _pick(config, "netns_rootless", "PYTEST_NETNS_ROOTLESS", "netns_rootless")
    rootless = _as_bool(value, rootless_source)
    value, sandbox_source = _pick(config, "netns_sandbox", "PYTEST_NETNS_SANDBOX", "netns_sandbox")
    sandbox = _as_bool(value, sandbox_source)
    if rootless and not sandbox:
        sandbox, sandbox_source = True, rootless_source
    features, source = _pick(
        config, "netns_require_features", "PYTEST_NETNS_REQUIRE_FEATURES", "netns_require_features"
    )
    return RunSettings(
        require=require,
        kill_grace=kill_grace,
        require_features=_features(features, source),
        rootless=rootless,
        sandbox=sandbox,
        sandbox_source=sandbox_source if sandbox else "",
    )
