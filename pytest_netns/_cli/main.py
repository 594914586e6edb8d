"""``python -m pytest_netns`` (also ``pytest-netns``): doctor, list, cleanup.

- ``doctor``: what this machine can do (privileges, namespaces, user
  namespaces, veth, bridge, tbf, netem, nftables, br_netfilter, private
  mounts, libpcap, the kernel) in a table, with each feature's name (what
  ``--netns-require-features`` takes) and what each missing item disables.
  Every probe runs for real, unlike the report header.  Exit status 1 when
  the fixtures cannot work at all (no privileges, no namespaces, no veth).
- ``list``: the namespaces ``--netns-keep-on-failure`` kept.
- ``cleanup``: removes what runs left: kept namespaces (processes inside are
  killed), their metadata, half-made mount points.  Only what this plugin
  made is touched (see ``pytest_netns._net.kept``); namespaces of a pytest run
  that is still going are left alone unless ``--force``.  Namespaces of a
  crashed run need no cleanup: they are anonymous and die with their
  processes, which the run's watchdog kills.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TextIO


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="pytest-netns", description="pytest-netns: machine check and cleanup")
    commands = parser.add_subparsers(dest="command", required=True)
    doctor = commands.add_parser("doctor", help="what this machine can do, and what is disabled if not")
    doctor.add_argument("--json", action="store_true", help="print the probes as JSON")
    listing = commands.add_parser("list", help="namespaces kept by --netns-keep-on-failure")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    cleanup = commands.add_parser("cleanup", help="remove kept namespaces and anything else runs left")
    cleanup.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    cleanup.add_argument("--force", action="store_true", help="also remove namespaces of runs still going")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return _doctor(args.json, out)
    if args.command == "list":
        return _list(args.json, out)
    return _cleanup(args.dry_run, args.force, out)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")


# -- doctor --------------------------------------------------------------------------------------

ESSENTIAL = ("privileges", "network namespaces", "kernel", "veth")


def _doctor(as_json: bool, out: TextIO) -> int:
    from .._kernel.probes import FEATURES, doctor_probes

    probes = doctor_probes()
    essential_ok = all(p.ok for p in probes if p.name in ESSENTIAL)
    if as_json:
        json.dump({"usable": essential_ok, "probes": [asdict(p) for p in probes]}, out, indent=1)
        out.write("\n")
        return 0 if essential_ok else 1
    rows = [["CHECK", "FEATURE", "STATUS", "DETAIL", "IF MISSING, THIS IS DISABLED"]]
    for probe in probes:
        rows.append([probe.name, probe.feature or "-", probe.status, probe.detail, "" if probe.ok else probe.disables])
    _table(rows, out)
    out.write("\n")
    out.write(
        "A test that needs a missing FEATURE is skipped; --netns-require-features=NAME,... fails it instead "
        f"(names: {', '.join(FEATURES)}).\n"
    )
    if essential_ok:
        missing = [p.name for p in probes if not p.ok]
        out.write(
            f"The fixtures work here; missing: {', '.join(missing)}.\n"
            if missing
            else "The fixtures work here; nothing is missing.\n"
        )
    else:
        out.write("The fixtures cannot work here: see the MISSING lines above.\n")
    return 0 if essential_ok else 1


# -- list and cleanup ----------------------------------------------------------------------------


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _list(as_json: bool, out: TextIO) -> int:
    from .._net import kept as _kept

    entries = _kept.find()
    if as_json:
        data = [
            {
                "name": e.name,
                "state": e.state,
                "detail": e.detail,
                "path": str(_kept.NETNS_RUN_DIR / e.name),
                **({"info": asdict(e.info), "processes": _kept.processes_inside(e)} if e.info else {}),
            }
            for e in entries
        ]
        json.dump(data, out, indent=1)
        out.write("\n")
        return 0
    if not entries:
        out.write("No kept namespaces.\n")
        return 0
    rows = [["NAME", "STATE", "NAMESPACE", "TEST", "KEPT AT", "ENTER WITH"]]
    for entry in entries:
        info = entry.info
        if info is None:
            rows.append([entry.name, entry.state, "-", "-", "-", entry.detail])
            continue
        enter = f"ip netns exec {entry.name} <command>" if entry.state in ("kept", "run still going") else entry.detail
        rows.append(
            [entry.name, entry.state, f"{info.namespace} (net:[{info.inode}])", info.test, _when(info.created), enter]
        )
    _table(rows, out)
    return 0


def _cleanup(dry_run: bool, force: bool, out: TextIO) -> int:
    from .._net import kept as _kept

    status = 0
    entries = _kept.find()
    if not entries:
        out.write("Nothing to clean up.\n")
    for entry in entries:
        if not entry.ours:
            out.write(f"skipped {entry.name}: {entry.detail}\n")
            continue
        if entry.state == "run still going" and not force:
            out.write(f"skipped {entry.name}: {entry.detail} (--force removes it anyway)\n")
            continue
        if dry_run:
            out.write(f"would remove {entry.name} ({entry.state})\n")
            continue
        try:
            done = _kept.remove(entry)
        except OSError as exc:
            out.write(f"FAILED to remove {entry.name}: {exc}\n")
            status = 1
            continue
        what = f" ({'; '.join(done)})" if done else ""
        out.write(f"removed {entry.name} ({entry.state}){what}\n")
    return status
