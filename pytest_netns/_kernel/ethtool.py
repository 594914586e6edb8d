"""Device features (what ``ethtool -k``/``-K`` show and change), without an ethtool binary.

The ``SIOCETHTOOL`` ioctl acts in the network namespace of the socket it is
called on, and a netlink socket hands it on to the device layer: the
namespace's own rtnetlink socket serves, so no thread enters the namespace.
A feature's bit is its position among the kernel's feature strings
(``ETH_SS_FEATURES``), which are the kernel's, not a device's: they are read
once per process.

Offloads (``is_offload``) are the features that let a frame larger than the
MTU reach a packet socket: segmentation offloads (the stack hands the
device one packet of up to 64 KiB, which a veth passes on whole; without
them software GSO segments before the packet taps see it) and receive
aggregation (GRO, LRO).  Switching them all off is one ioctl per device
(~17 us).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import struct
import threading
from dataclasses import dataclass

from ..errors import KernelError

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_GFEATURES = 0x3A
ETHTOOL_SFEATURES = 0x3B
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32

_IFREQ = struct.Struct("16sP16x")  # struct ifreq: the name, then ifr_data (native layout, room to spare)
_CMD = struct.Struct("=II")  # ethtool_gfeatures/sfeatures: cmd, size (blocks of 32 features)
_SSET_INFO = struct.Struct("=IIQI")  # cmd, reserved, sset_mask, then one u32 per set asked for
_GSTRINGS = struct.Struct("=III")  # cmd, string_set, len
_GET_BLOCK = struct.Struct("=IIII")  # available, requested, active, never_changed
_SET_BLOCK = struct.Struct("=II")  # valid, requested

#: Receive aggregation: GRO (a veth does it only with NAPI: XDP, or GRO switched on), its variants, LRO.
RECEIVE_OFFLOADS = frozenset({"rx-gro", "rx-gro-list", "rx-udp-gro-forwarding", "rx-lro", "rx-gro-hw"})


def is_offload(name: str) -> bool:
    """Whether a feature lets frames larger than the MTU through: ``tx-*-segmentation``, ``tx-gso-list``, GRO, LRO."""
    segmentation = name.startswith("tx-") and name.endswith("-segmentation")
    return segmentation or name == "tx-gso-list" or name in RECEIVE_OFFLOADS


@dataclass(frozen=True)
class Table:
    """The kernel's feature strings in bit order, and how many 32-bit blocks its feature calls take."""

    names: tuple[str, ...]
    blocks: int
    #: ETHTOOL_SFEATURES' blocks that switch every offload off.
    offloads_off: bytes

    def blocks_for(self, wanted: dict[str, bool]) -> bytes:
        """ETHTOOL_SFEATURES' blocks (valid, requested) for ``{feature: on}``."""
        valid, requested = [0] * self.blocks, [0] * self.blocks
        for bit, name in enumerate(self.names[: 32 * self.blocks]):
            if name in wanted:
                valid[bit // 32] |= 1 << (bit % 32)
                if wanted[name]:
                    requested[bit // 32] |= 1 << (bit % 32)
        return b"".join(_SET_BLOCK.pack(v, r) for v, r in zip(valid, requested, strict=True))


_table: list[Table] = []
_table_lock = threading.Lock()


def _call(fd: int, ifname: str, data: ctypes.Array[ctypes.c_char], doing: str) -> int:
    ifreq = bytearray(_IFREQ.pack(ifname.encode(), ctypes.addressof(data)))
    try:
        answer: int = fcntl.ioctl(fd, SIOCETHTOOL, ifreq)
    except OSError as exc:
        raise KernelError(exc.errno or errno.EIO, doing) from None
    return answer


def table(fd: int, ifname: str) -> Table:
    """The feature table, read through ``ifname`` the first time, then kept."""
    with _table_lock:
        if not _table:
            _table.append(_read_table(fd, ifname))
        return _table[0]


def _read_table(fd: int, ifname: str) -> Table:
    doing = f"reading the kernel's device feature names (through {ifname})"
    info = ctypes.create_string_buffer(_SSET_INFO.pack(ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0))
    _call(fd, ifname, info, doing)
    _cmd, _reserved, mask, count = _SSET_INFO.unpack_from(info.raw)
    if not mask & (1 << ETH_SS_FEATURES):
        raise KernelError(errno.EOPNOTSUPP, doing, "the kernel lists no feature strings")
    strings = ctypes.create_string_buffer(
        _GSTRINGS.pack(ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count) + bytes(ETH_GSTRING_LEN * count)
    )
    _call(fd, ifname, strings, doing)
    raw = strings.raw[_GSTRINGS.size : _GSTRINGS.size + ETH_GSTRING_LEN * count]
    names = tuple(raw[i : i + ETH_GSTRING_LEN].split(b"\0", 1)[0].decode() for i in range(0, len(raw), ETH_GSTRING_LEN))
    # The calls take exactly the kernel's block count (6.18: 65 strings, the last one empty, in 2 blocks;
    # any other size is EINVAL): a GFEATURES for no blocks answers with it.
    size = ctypes.create_string_buffer(_CMD.pack(ETHTOOL_GFEATURES, 0))
    _call(fd, ifname, size, doing)
    blocks = _CMD.unpack_from(size.raw)[1]
    partial = Table(names, blocks, b"")
    return Table(names, blocks, partial.blocks_for({name: False for name in names if is_offload(name)}))


def features(fd: int, ifname: str) -> dict[str, bool]:
    """Which features of ``ifname`` are on (``ethtool -k``), in the namespace of socket ``fd``."""
    known = table(fd, ifname)
    data = ctypes.create_string_buffer(
        _CMD.pack(ETHTOOL_GFEATURES, known.blocks) + bytes(_GET_BLOCK.size * known.blocks)
    )
    _call(fd, ifname, data, f"reading the features of {ifname}")
    active = [_GET_BLOCK.unpack_from(data.raw, _CMD.size + _GET_BLOCK.size * i)[2] for i in range(known.blocks)]
    named = enumerate(known.names[: 32 * known.blocks])
    return {name: bool(active[bit // 32] >> (bit % 32) & 1) for bit, name in named if name}


def set_features(fd: int, ifname: str, wanted: dict[str, bool], doing: str) -> None:
    """Switch features of ``ifname`` on or off (``ethtool -K``); those the device cannot change stay as they are."""
    known = table(fd, ifname)
    unknown = sorted(set(wanted) - set(known.names))
    if unknown:
        raise ValueError(f"unknown device feature {', '.join(map(repr, unknown))} (the kernel has {known.names})")
    _set(fd, ifname, known, known.blocks_for(wanted), doing)


def offloads_off(fd: int, ifname: str, doing: str) -> None:
    """Every offload (``is_offload``) of ``ifname`` off, in one ioctl."""
    known = table(fd, ifname)
    _set(fd, ifname, known, known.offloads_off, doing)


def _set(fd: int, ifname: str, known: Table, blocks: bytes, doing: str) -> None:
    # A positive answer only says some asked-for features are fixed (ETHTOOL_F_UNSUPPORTED) or held by others.
    _call(fd, ifname, ctypes.create_string_buffer(_CMD.pack(ETHTOOL_SFEATURES, known.blocks) + blocks), doing)
