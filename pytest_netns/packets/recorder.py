"""Recording every interface of a namespace, cheaply, for the story of a failed test.

One ``AF_PACKET`` socket per namespace, made inside it and bound to every
interface (``ETH_P_ALL``, ifindex 0): the kernel queues a reference to
each packet, both directions, and nothing reads the queue while the test
runs.  Only when a test fails (or with ``--netns-pcap=always``) is the
queue read and written out as pcap files.  Costs measured per namespace
inside pytest: ~35 us to set up, ~35 us to release (the socket's release
is finished by a helper process, see ``_kernel.afpacket``), and a queued packet
reference per packet.  The benchmark's ``netns_pair`` goes from 2.54 to
2.67 ms (setup + teardown median) with recording on.

The bound is the socket's receive buffer (``SO_RCVBUFFORCE``): ``buffer``
bytes of kernel accounting per namespace, 4 MiB by default.  Measured on
a veth: 4 MiB hold ~10,000 minimum-size frames (ARP, ping, TCP control
segments: ~420 bytes each with the kernel's overhead), ~3,600 full
1,500-byte frames, or a few dozen 64 KiB segments of a bulk TCP
transfer.  When it is full the kernel keeps the *earliest* packets and
drops the later ones, counting them (``PACKET_STATISTICS``): the report
says how many were lost and from when.  A packet seen on loopback is kept
once (the incoming copy), as libpcap does.

pcap files are written by hand (a 24-byte header and a 16-byte record
header per packet): the writer must not import scapy, which costs ~0.6 s,
and the format is fixed.  One classic pcap file per interface, because the
link type is per file and ``tcpdump -r`` refuses pcapng files that mix
link types.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._kernel import afpacket as _afpacket
from .handle import handle_of

if TYPE_CHECKING:
    from .handle import NamespaceHandle as Namespace  # not ..namespace: packets sits below it

DEFAULT_BUFFER = 4 << 20
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
#: ARPHRD types whose frames start with an Ethernet header (lo has a fake one).
_ETHERNET_LIKE = {_afpacket.ARPHRD_ETHER, _afpacket.ARPHRD_LOOPBACK}
_PCAP_HEADER = struct.Struct("=IHHiIII")
_RECORD_HEADER = struct.Struct("=IIII")
PCAP_MAGIC_NS = 0xA1B23C4D  # nanosecond timestamps


class Recorder:
    """The recording of one namespace: a kernel queue, read on demand into ``frames``."""

    def __init__(self, ns: Namespace, label: str, *, buffer: int = DEFAULT_BUFFER) -> None:
        self.namespace = ns
        #: The name used in files and reports (unique within a test).
        self.label = label
        self.buffer = buffer
        self.started = time.time()
        self.frames: list[_afpacket.Frame] = []
        #: Packets the kernel dropped because the buffer was full.
        self.dropped = 0
        _afpacket.keep_timestamps_on(handle_of(ns).fd)
        sock = _afpacket.open_all_interfaces(handle_of(ns).fd, rcvbuf=buffer)
        self._sock: socket.socket | None = sock
        self._reader = _afpacket.Reader(sock)

    @property
    def closed(self) -> bool:
        return self._sock is None

    def collect(self) -> list[_afpacket.Frame]:
        """Move what the kernel queued into ``frames`` (kept in order); return ``frames``."""
        if self._sock is not None:
            self.frames.extend(self._reader.frames())
            self.dropped += _afpacket.statistics(self._sock)[1]
        return self.frames

    def close(self) -> None:
        """Stop recording (what was not collected is lost)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            _afpacket.close_later(sock)


def linktype(hatype: int) -> int:
    """The pcap link type for frames read from an interface of ARPHRD type ``hatype``."""
    return LINKTYPE_ETHERNET if hatype in _ETHERNET_LIKE else LINKTYPE_RAW


def write_pcap(path: str, frames: list[_afpacket.Frame]) -> None:
    """Write frames (all of one interface) as a classic pcap file with nanosecond timestamps."""
    kind = linktype(frames[0].hatype) if frames else LINKTYPE_ETHERNET
    chunks = [_PCAP_HEADER.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, _afpacket.MAX_FRAME, kind)]
    for frame in frames:
        seconds = int(frame.time)
        nanoseconds = min(round((frame.time - seconds) * 1e9), 999_999_999)
        size = len(frame.data)
        chunks.append(_RECORD_HEADER.pack(seconds, nanoseconds, size, size))
        chunks.append(frame.data)
    with open(path, "wb") as handle:
        handle.write(b"".join(chunks))


@dataclass(frozen=True)
class PcapFile:
    """One written file: where, which namespace and interface, how many packets."""

    path: str
    label: str
    ifname: str
    count: int


def write_recordings(recorders: list[Recorder], directory: str) -> list[PcapFile]:
    """One pcap file per interface that carried packets, named ``<namespace>-<interface>.pcap``."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for recorder in recorders:
        by_interface: dict[str, list[_afpacket.Frame]] = defaultdict(list)
        for frame in recorder.frames:
            by_interface[frame.ifname or "unknown"].append(frame)
        for ifname, frames in by_interface.items():
            path = os.path.join(directory, f"{safe_name(recorder.label)}-{safe_name(ifname)}.pcap")
            write_pcap(path, frames)
            written.append(PcapFile(path, recorder.label, ifname, len(frames)))
    return written


def safe_name(text: str) -> str:
    """``text`` usable as (part of) a file name."""
    cleaned = "".join(c if c.isalnum() or c in "._-[]=+" else "_" for c in text).strip(".")
    return cleaned[:100] or "_"
