"""``--netns-pcap``: record every namespace a test uses; when it fails, write pcaps and tell the story.

Every interface of every namespace a fixture makes for a test is recorded
(see ``packets.recorder`` for the bound and what is kept when it fills).  When
the test fails, in setup or in its body, the failure report gets three
sections: the pcap files written, a packet ladder of the last packets
(time, where it went, what it was) and the topology (namespaces,
interfaces, peers, addresses, MTUs, routes).  The same text is written
next to the pcap files (``packets.txt`` has every packet, ``topology.txt``).

Modes (``--netns-pcap``, env ``PYTEST_NETNS_PCAP``, ini ``netns_pcap``):
``failed`` (default) writes files for failed tests only, ``always`` for
every test that made namespaces (at its teardown), ``never`` records
nothing.  Files go to ``<artifacts dir>/<test id>/<namespace>-<interface>.pcap``;
the artifacts dir is ``--netns-artifacts-dir`` (env
``PYTEST_NETNS_ARTIFACTS_DIR``, ini ``netns_artifacts_dir``, relative to the
rootdir), by default ``netns-artifacts`` in pytest's base temporary
directory (``/tmp/pytest-of-<user>/pytest-<N>/``; pytest keeps the last
three runs).  The per-namespace bound is ini ``netns_pcap_buffer`` (env
``PYTEST_NETNS_PCAP_BUFFER``), like ``4M``.  A failure in teardown alone is
not covered in ``failed`` mode: the recording is dropped when the
namespaces are released, before teardown's outcome is known.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import warnings
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from . import settings as _settings

if TYPE_CHECKING:
    from ..namespace import Namespace
    from ..packets.recorder import Recorder

MODES = _settings.PCAP_CHOICES
#: How many rows of the packet ladder the failure report shows (packets.txt has all).
LADDER_ROWS = 30
#: packets.txt stops there (summarising a packet costs ~0.1 ms); the pcap files hold everything.
PACKETS_TXT_ROWS = 10_000
BUFFER_MIN, BUFFER_MAX = 64 << 10, 1 << 30


@dataclass(frozen=True)
class PcapSettings:
    mode: str
    directory: Path | None  # None: <basetemp>/netns-artifacts
    buffer: int


PCAP_SETTINGS = pytest.StashKey[PcapSettings]()
RECORDERS = pytest.StashKey[list["Recorder"]]()
#: The recorders of namespaces the test used but did not make (a module-scoped topology): closed with the test.
SHARED_RECORDERS = pytest.StashKey[list["Recorder"]]()
TOLD = pytest.StashKey[str]()  # the directory a failed test's story was written to
UNAVAILABLE = pytest.StashKey[bool]()  # recording failed once (warned)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netns")
    group.addoption(
        "--netns-pcap",
        choices=MODES,
        default=None,
        help="record every interface of the namespaces a test uses and write pcap files (plus a packet ladder "
        "and the topology in the report) for failed tests (failed, the default), for every test (always), or "
        "record nothing (never). Also: ini netns_pcap, env PYTEST_NETNS_PCAP.",
    )
    parser.addini("netns_pcap", default="failed", help="when to write pcap files: never, failed or always")
    group.addoption(
        "--netns-artifacts-dir",
        default=None,
        metavar="DIR",
        help="where pcap files and failure stories go, one directory per test (default: netns-artifacts in "
        "pytest's base temporary directory). Also: ini netns_artifacts_dir, env PYTEST_NETNS_ARTIFACTS_DIR.",
    )
    parser.addini(
        "netns_artifacts_dir", default="", help="directory (relative to the rootdir) for pcap files and failure stories"
    )
    parser.addini(
        "netns_pcap_buffer",
        default="4M",
        help="recording bound per namespace in bytes (K/M suffixes), default 4M; when full, the "
        "earliest packets are kept",
    )


def _choose(config: pytest.Config, option: str | None, env: str, ini: str) -> tuple[str, str]:
    value, source = _settings._pick(config, option, env, ini)
    return str(value), source


def parse_size(text: str, source: str) -> int:
    """``4M``, ``512K``, ``1048576``, ``2MiB`` -> bytes; UsageError naming ``source`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise pytest.UsageError(f"{source}: {text!r} is not a size like 4M, 512K or 1048576")
    size = int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[match[2].upper()]
    if not BUFFER_MIN <= size <= BUFFER_MAX:
        raise pytest.UsageError(f"{source}: {text!r} is outside 64K..1G")
    return size


def resolve(config: pytest.Config) -> PcapSettings:
    mode, source = _choose(config, "netns_pcap", "PYTEST_NETNS_PCAP", "netns_pcap")
    mode = mode.strip().lower()
    if mode not in MODES:
        raise pytest.UsageError(f"{source}: {mode!r} is not a valid mode (valid: {', '.join(MODES)})")
    where, source = _choose(config, "netns_artifacts_dir", "PYTEST_NETNS_ARTIFACTS_DIR", "netns_artifacts_dir")
    directory = None
    if where.strip():
        base = config.rootpath if source.startswith("ini") else config.invocation_params.dir
        directory = (base / where.strip()).resolve()
    size, source = _choose(config, None, "PYTEST_NETNS_PCAP_BUFFER", "netns_pcap_buffer")
    return PcapSettings(mode, directory, parse_size(size, source))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[PCAP_SETTINGS] = resolve(config)


# -- recording -------------------------------------------------------------------


@pytest.hookimpl
def pytest_netns_namespace_created(item: pytest.Item, namespace: Namespace) -> None:
    settings = item.config.stash.get(PCAP_SETTINGS, None)
    if settings is None or settings.mode == "never":
        return
    from .._kernel.handle import handle_of

    recorder = _record(item, namespace, settings)
    if recorder is not None:
        handle_of(namespace).add_cleanup(
            functools.partial(_stop, recorder, settings.mode == "always"),
            f"stopping the packet recorder of {namespace.name!r}",
        )


def record_shared(item: pytest.Item, namespaces: list[Namespace]) -> None:
    """Record, for ``item`` only, namespaces it uses that outlive it (a module- or session-scoped topology).

    Their recorders stop with the test (``pytest_runtest_makereport`` of its
    teardown), or with the namespace if that is torn down first.
    """
    settings = item.config.stash.get(PCAP_SETTINGS, None)
    if settings is None or settings.mode == "never":
        return
    for namespace in namespaces:
        if namespace.closed:
            continue
        recorder = _record(item, namespace, settings)
        if recorder is not None:
            item.stash.setdefault(SHARED_RECORDERS, []).append(recorder)
            _stop_with_namespace(namespace, recorder, settings.mode == "always")


#: The recorders each shared namespace holds now, stopped if it is torn down before the test ends.
_shared_live: weakref.WeakKeyDictionary[Namespace, list[Recorder]] = weakref.WeakKeyDictionary()


def _stop_with_namespace(namespace: Namespace, recorder: Recorder, keep: bool) -> None:
    """One cleanup per namespace (not one per test: a module's tests would pile them up) stops what is live."""
    from .._kernel.handle import handle_of

    live = _shared_live.get(namespace)
    if live is None:
        live = _shared_live[namespace] = []
        handle_of(namespace).add_cleanup(
            functools.partial(_stop_all, weakref.ref(namespace), keep),
            f"stopping the packet recorders of {namespace.name!r}",
        )
    live.append(recorder)


def _stop_all(ref: weakref.ref[Namespace], keep: bool) -> None:
    namespace = ref()
    for recorder in _shared_live.pop(namespace, []) if namespace is not None else []:
        _stop(recorder, keep)


def _record(item: pytest.Item, namespace: Namespace, settings: PcapSettings) -> Recorder | None:
    """A recorder of ``namespace`` for ``item``, labelled uniquely within the test; None where recording fails."""
    from ..packets.recorder import Recorder

    recorders = item.stash.setdefault(RECORDERS, [])
    labels = {recorder.label for recorder in recorders}
    label = namespace.name
    number = 2
    while label in labels:
        label, number = f"{namespace.name}.{number}", number + 1
    try:
        recorder = Recorder(namespace, label, buffer=settings.buffer)
    except OSError as exc:  # recording must never break a test: say so once and go on without it
        if not item.config.stash.get(UNAVAILABLE, False):
            item.config.stash[UNAVAILABLE] = True
            warnings.warn(
                pytest.PytestWarning(
                    f"--netns-pcap: cannot record {namespace.name!r} ({exc}); no pcap files will be written"
                ),
                stacklevel=1,
            )
        return None
    recorders.append(recorder)
    return recorder


def _stop(recorder: Recorder, keep: bool) -> None:
    if keep:
        recorder.collect()
    recorder.close()


# -- reporting --------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    recorders = item.stash.get(RECORDERS, None)
    if not recorders:
        return report
    try:
        _tell(item, report, recorders)
    except Exception as exc:  # the story must never hide the failure it explains
        report.sections.append(("netns: pcap files", f"could not write the recording: {type(exc).__name__}: {exc}"))
    if report.when == "teardown":
        # The session keeps every item: drop the recordings (up to the buffer size each) with the test.
        del item.stash[RECORDERS]
        if SHARED_RECORDERS in item.stash:
            for recorder in item.stash[SHARED_RECORDERS]:
                recorder.close()
                live = _shared_live.get(cast("Namespace", recorder.namespace), [])
                if recorder in live:
                    live.remove(recorder)
            del item.stash[SHARED_RECORDERS]
    return report


def _tell(item: pytest.Item, report: pytest.TestReport, recorders: list[Recorder]) -> None:
    from ..packets import recorder as _recorder

    settings = item.config.stash[PCAP_SETTINGS]
    failed = report.failed and not hasattr(report, "wasxfail")
    if report.when in ("setup", "call") and failed and TOLD not in item.stash:
        directory = item.stash[TOLD] = _fresh_directory(item, settings)
        for recorder in recorders:
            recorder.collect()
        files = _recorder.write_recordings(recorders, directory)
        report.sections.append(("netns: pcap files", _files_section(files, recorders, directory)))
        _story_sections(report, recorders, directory)
    elif report.when == "teardown" and settings.mode == "always":
        for recorder in item.stash.get(SHARED_RECORDERS, []):
            recorder.collect()  # the test's own were collected when their namespaces were released
        directory = item.stash.get(TOLD, None) or _fresh_directory(item, settings)
        _recorder.write_recordings(recorders, directory)


def _fresh_directory(item: pytest.Item, settings: PcapSettings) -> str:
    base = settings.directory
    if base is None:
        base = _basetemp(item.config) / "netns-artifacts"
    name = _recorder_safe(item.nodeid.replace("::", "__").replace("/", "_"))
    if len(name) > 90:
        name = name[:80] + "-" + hashlib.sha1(item.nodeid.encode()).hexdigest()[:8]
    path = base / name
    shutil.rmtree(path, ignore_errors=True)  # an earlier run of the same test (reruns)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _recorder_safe(text: str) -> str:
    from ..packets.recorder import safe_name

    return safe_name(text)


def _basetemp(config: pytest.Config) -> Path:
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        factory = pytest.TempPathFactory.from_config(config, _ispytest=True)
    return factory.getbasetemp()


def _files_section(files: list, recorders: list[Recorder], directory: str) -> str:  # type: ignore[type-arg]
    lines = [f"{directory}/"]
    if not files:
        lines.append("  (no packets were recorded)")
    for pcap in files:
        lines.append(f"  {os.path.basename(pcap.path):<40} {pcap.count:>6} packets  ({pcap.label}:{pcap.ifname})")
    start = min(recorder.started for recorder in recorders)
    for recorder in recorders:
        if recorder.dropped:
            since = f" from +{recorder.frames[-1].time - start:.6f} s" if recorder.frames else ""
            lines.append(
                f"  {recorder.label}: {recorder.dropped} later packets not recorded{since}: the "
                f"{recorder.buffer >> 10} KiB buffer was full (ini netns_pcap_buffer)"
            )
    lines.append("open with: wireshark FILE, tcpdump -nr FILE; packets.txt and topology.txt are next to them")
    return "\n".join(lines)


def _story_sections(report: pytest.TestReport, recorders: list[Recorder], directory: str) -> None:
    from . import story as _story

    rows = _story.ladder_rows(recorders)
    start = min(recorder.started for recorder in recorders)
    header = "time: seconds since the test's first namespace was made; a -> b: sent by a, received by b"
    with open(os.path.join(directory, "packets.txt"), "w") as handle:
        handle.write(header + "\n" + _story.render_ladder(rows, start, PACKETS_TXT_ROWS) + "\n")
    shown = min(len(rows), LADDER_ROWS)
    title = f"netns: last {shown} of {len(rows)} packets" if len(rows) > shown else f"netns: {len(rows)} packets"
    report.sections.append((title, header + "\n" + _story.render_ladder(rows, start, LADDER_ROWS)))
    # Recorders are made from Namespaces (pytest_netns_namespace_created); packets types them as its protocol.
    topology = _story.render_topology([(r.label, cast("Namespace", r.namespace)) for r in recorders])
    with open(os.path.join(directory, "topology.txt"), "w") as handle:
        handle.write(topology + "\n")
    report.sections.append(("netns: topology", topology))
