"""Traffic shaping for test namespaces through rtnetlink (no ``tc`` binary).

Every function acts on the network namespace of the *calling thread*: it
opens pyroute2's ``IPRoute`` on that thread (its netlink socket is created
there, hence in that namespace), uses it and closes it before returning.

* :func:`rate_limit` / :func:`clear_qdisc`: a token bucket (``tbf``) as
  the root qdisc of an interface, and back to the default.
* :func:`netem_available` / :func:`netem_unavailable_reason`: whether the
  running kernel has ``sch_netem`` (probed in a throwaway namespace).
* :func:`netem`: delay, jitter, loss (and rate) with netem, when present.
* :func:`parse_rate` / :func:`parse_duration`: tc's units (``units.py``).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkDecodeError, NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWQDISC
from pyroute2.netlink.rtnl.tcmsg import common as tc_common
from pyroute2.netlink.rtnl.tcmsg import sched_netem, tcmsg

from ..errors import KernelError, NetnsError
from . import netns as _netns
from . import validate as _validate
from .netlink import NLM_F_CREATE, NLM_F_REPLACE, Request
from .rtnl import RtnlSocket
from .units import Duration as Duration
from .units import parse_duration as parse_duration
from .units import parse_rate as parse_rate

__all__ = [
    "clear_qdisc",
    "netem",
    "netem_available",
    "netem_unavailable_reason",
    "parse_duration",
    "parse_rate",
    "rate_limit",
]

_TC_H_ROOT = 0xFFFFFFFF
#: Seconds to wait for the kernel's answer to a request.
_RECV_TIMEOUT = 5.0

#: tbf's rate field is a u32 of bytes per second (above that the kernel
#: wants TCA_TBF_RATE64, which pyroute2 does not encode).
_MAX_RATE_BITS = (2**32 - 1) * 8
_ETH_HEADER = 14  # tbf counts whole frames: MTU + Ethernet header, no FCS
#: psched ticks per second: tbf's "buffer" (the burst) travels as a u32
#: number of ticks.
_TICKS_PER_SECOND = 1e6 * tc_common.tick_in_usec


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------


def _ifindex(ifname: str, doing: str) -> int:
    """Index of ``ifname`` in the calling thread's namespace (KernelError ENODEV if it has none)."""
    _validate.ifname(ifname)
    try:
        # The ioctl socket behind if_nametoindex is made on this thread.
        return socket.if_nametoindex(ifname)
    except OSError:
        raise KernelError(errno.ENODEV, doing, f"no interface {ifname!r} in this network namespace") from None


@contextlib.contextmanager
def _kernel_errors(doing: str) -> Iterator[None]:
    """Turn what pyroute2 and the socket raise into KernelError saying what was being done."""
    try:
        yield
    except NetnsError:
        raise
    except NetlinkError as exc:
        text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else ""
        raise KernelError(exc.code, doing, "" if text == os.strerror(exc.code) else text) from None
    except NetlinkDecodeError as exc:
        raise KernelError(errno.EPROTO, doing, f"undecodable answer: {exc}") from None
    except TimeoutError:
        raise KernelError(errno.ETIMEDOUT, doing, f"no answer from the kernel within {_RECV_TIMEOUT:g} s") from None
    except OSError as exc:
        raise KernelError(exc.errno or errno.EIO, doing, exc.strerror or "") from None


def _ipr() -> IPRoute:
    """An IPRoute whose socket lives in the calling thread's namespace.

    ``ext_ack`` makes kernel refusals carry their text ("Specified qdisc
    kind is unknown") instead of a bare errno.
    """
    return IPRoute(ext_ack=True)


def _route_socket() -> RtnlSocket:
    """An rtnetlink socket in the calling thread's namespace that waits at most ``_RECV_TIMEOUT`` for an answer."""
    return RtnlSocket(timeout=_RECV_TIMEOUT)


def _netem_request(index: int, options: dict[str, Any], doing: str) -> Request:
    """RTM_NEWQDISC (create or replace) making device ``index``'s root a netem.

    The tcmsg and its netem options are encoded by pyroute2 (``tcmsg``,
    ``sched_netem``); the bytes match what iproute2's ``tc qdisc replace ...
    netem`` sends, except that pyroute2 maps 25% loss to 0x3fffffff where
    tc sends 0x40000000.
    """
    msg = tcmsg()
    msg["index"] = index
    msg["handle"] = 0
    msg["parent"] = _TC_H_ROOT
    msg["attrs"] = [
        ["TCA_KIND", "netem"],
        ["TCA_OPTIONS", sched_netem.get_parameters(options)],
    ]
    msg.encode()
    return Request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE, bytes(msg.data)[16:], doing)


def _replace_root_netem(index: int, options: dict[str, Any], doing: str) -> None:
    """Send :func:`_netem_request` on an rtnetlink socket of this thread.

    Not through ``IPRoute.tc()``: pyroute2 0.9.7's request filter leaves a
    netem ``rate`` at the top level of the message as TCA_RATE (tbf's
    plugin strips it, netem's does not) and encoding then fails, and its
    synchronous ``nlm_request`` is broken.  A refusal, a socket error or no
    answer raises ``KernelError`` saying ``doing``.
    """
    request = _netem_request(index, options, doing)
    with _kernel_errors(doing), _route_socket() as sock:
        sock.execute([request])


# --------------------------------------------------------------------------
# Rate limiting with tbf
# --------------------------------------------------------------------------


def _frame_size(ipr: IPRoute, index: int) -> int:
    """Largest frame the device sends, as tbf counts it (MTU + header)."""
    mtu: int = ipr.get_links(index)[0].get_attr("IFLA_MTU")
    return mtu + _ETH_HEADER


def _min_burst(rate_bytes: int, frame: int) -> int:
    """Smallest burst that still lets a full frame through.

    tbf drops every packet longer than its burst, and the burst reaches
    the kernel as a transmission time that pyroute2 rounds down to whole
    microseconds and then to whole psched ticks (64 ns): allow both
    roundings on top of the frame.
    """
    rounding: float = rate_bytes * (1e-6 + 1 / _TICKS_PER_SECOND)
    return frame + math.ceil(rounding) + 1


def _default_burst(rate_bytes: int, frame: int) -> int:
    """10 ms worth of tokens, and never less than two full frames.

    10 ms keeps the number of timer wake-ups low at high rates.  The burst
    only shapes the first instants (and the moments after an idle spell):
    under load the long-run rate is the rate whatever the burst.
    """
    return max(2 * _min_burst(rate_bytes, frame), math.ceil(rate_bytes / 100))


def _queue_limit(rate_bytes: int, burst: int, latency: float, frame: int) -> int:
    """Queue size in bytes: ``latency`` worth of data plus the burst (tc's
    own formula), but at least eight full frames.

    Measured with bulk TCP (cubic, reno, bbr) from 256kbit to 1gbit:
    below ~8 frames a slow link drops too much for TCP to keep it busy,
    while a queue much deeper than ~50 ms lets slow start overshoot into
    loss bursts and retransmission timeouts (with bbr, a third of the
    bytes sent were retransmissions at 8mbit with a 100 ms queue).  With
    20 ms and the 8-frame floor the data reaching the receiver after the
    first second ran at 98-101% of the rate in every run.
    """
    return max(8 * frame, math.ceil(rate_bytes * latency) + burst)


def rate_limit(
    ifname: str,
    rate: str | int,
    *,
    burst: int | None = None,
    latency: Duration = "20ms",
) -> None:
    """Limit the egress rate of ``ifname`` with a token bucket (``tbf``).

    ``rate`` is a tc rate (``"8mbit"``, ``"512kbit"``) or bits per second;
    as in tc it counts whole frames (Ethernet header included), so TCP's
    payload rate over a 1500-byte MTU is 1448/1514 of it (~4% lower).
    ``burst`` (bytes) defaults to 10 ms of traffic, at least two full
    frames; it must hold one full frame (MTU + 14).  ``latency`` is how
    long data may queue: the queue holds ``rate * latency + burst`` bytes,
    at least eight full frames.  Calling it again replaces the limit;
    :func:`clear_qdisc` removes it.
    """
    bits = parse_rate(rate)
    if bits > _MAX_RATE_BITS:
        raise ValueError(f"rate {rate!r} is above tbf's 32-bit limit (34gbit)")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
        raise ValueError(f"burst {burst!r} is not a number of bytes")
    queue_time = parse_duration(latency)
    rate_bytes = bits // 8
    doing = f"limiting {ifname!r} to {bits} bit/s (tbf)"
    index = _ifindex(ifname, doing)
    with _kernel_errors(doing), _ipr() as ipr:
        frame = _frame_size(ipr, index)
        if burst is None:
            burst = _default_burst(rate_bytes, frame)
        elif burst < _min_burst(rate_bytes, frame):
            raise ValueError(
                f"burst {burst!r} is smaller than a full frame on {ifname!r} "
                f"(at least {_min_burst(rate_bytes, frame)} bytes at this rate)"
            )
        limit = _queue_limit(rate_bytes, burst, queue_time, frame)
        # pyroute2 takes an int rate as bytes/s and turns burst into tbf's
        # "buffer" (the burst's transmission time in psched ticks).
        ipr.tc("replace", "tbf", index, rate=rate_bytes, burst=burst, limit=limit)


def clear_qdisc(ifname: str) -> None:
    """Remove the root qdisc of ``ifname``, restoring the kernel's default.

    A device that already has its default qdisc is left as it is.
    """
    doing = f"removing the root qdisc of {ifname!r}"
    index = _ifindex(ifname, doing)
    with _kernel_errors(doing), _ipr() as ipr:
        try:
            ipr.tc("del", index=index, parent=_TC_H_ROOT)
        except NetlinkError as error:
            # The default root (noqueue on veth) "cannot be deleted":
            # the kernel answers ENOENT, which is what we wanted anyway.
            if error.code != errno.ENOENT:
                raise


# --------------------------------------------------------------------------
# netem
# --------------------------------------------------------------------------


T = TypeVar("T")


def _in_throwaway_netns(func: Callable[[], T]) -> T:
    """Run ``func()`` on a new thread inside a new, empty network namespace.

    The namespace dies with the thread, and the caller's thread never
    changes namespace.  Exceptions are re-raised in the caller.
    """
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            try:
                _netns.unshare(_netns.CLONE_NEWNET)
            except OSError as exc:
                raise KernelError(exc.errno or errno.EIO, "creating a throwaway network namespace (unshare)") from None
            outcome["value"] = func()
        except BaseException as error:  # handed over to the caller
            outcome["error"] = error

    thread = threading.Thread(target=body, name="netem-probe", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def _probe_netem() -> str | None:
    """Make ``lo``'s root qdisc a netem; the reason if the kernel refuses.

    Runs in a throwaway namespace, which takes the qdisc with it.
    """
    try:
        index = socket.if_nametoindex("lo")
        _replace_root_netem(index, _netem_options("1ms", None, None, None, 1000), "probing for netem")
    except KernelError as error:
        code = error.errno or errno.EIO
        name = errno.errorcode.get(code, str(code))
        text = error.detail or error.strerror
        if code in (errno.ENOENT, errno.EOPNOTSUPP):
            return f"the running kernel has no sch_netem (tc qdisc add netem: {name}: {text})"
        return f"netem could not be created (tc qdisc add netem: {name}: {text})"
    return None


def netem_unavailable_reason() -> str | None:
    """Why netem cannot be used here, or ``None`` when it can.

    Probes by creating a netem qdisc on the loopback device of a throwaway
    namespace (on a throwaway thread), so nothing the caller owns is
    touched; ~1 ms.  The kernel autoloads ``sch_netem`` if it is a module;
    a kernel built without it answers ENOENT ("Specified qdisc kind is
    unknown").
    """
    try:
        return _in_throwaway_netns(_probe_netem)
    except OSError as error:
        return f"cannot probe for netem: {error}"


def netem_available() -> bool:
    """Whether this kernel can apply netem (see netem_unavailable_reason)."""
    return netem_unavailable_reason() is None


def _netem_options(
    delay: Duration | None,
    jitter: Duration | None,
    loss: float | None,
    rate: str | int | None,
    limit: int,
    corrupt: float | None = None,
    reorder: float | None = None,
) -> dict[str, Any]:
    """Validate netem parameters and spell them as pyroute2's netem wants.

    pyroute2's ``sched_netem`` takes delay and jitter in microseconds
    (converted to psched ticks, a u32), loss, corruption and reordering as
    percentages, rate in bytes per second and limit in packets.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit {limit!r} is not a packet count >= 1")
    options: dict[str, Any] = {"limit": limit}
    delay_s = parse_duration(delay) if delay is not None else 0.0
    jitter_s = parse_duration(jitter) if jitter is not None else 0.0
    if jitter_s and not delay_s:
        raise ValueError(f"jitter {jitter!r} needs a delay")
    if jitter_s > delay_s:
        # netem would draw negative delays and clamp them to zero.
        raise ValueError(f"jitter {jitter!r} is larger than delay {delay!r}")
    for name, value, seconds in (("delay", delay, delay_s), ("jitter", jitter, jitter_s)):
        if seconds * 1e6 * tc_common.tick_in_usec >= 2**32:
            raise ValueError(f"{name} {value!r} is too long for netem (u32 ticks)")
        if seconds:
            options[name] = round(seconds * 1e6)
    for name, key, value in (
        ("loss", "loss", loss),
        ("corrupt", "prob_corrupt", corrupt),
        ("reorder", "prob_reorder", reorder),
    ):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value!r} is not a probability between 0 and 1")
            if value:
                options[key] = value * 100
    if reorder and not delay_s:
        raise ValueError(f"reorder {reorder!r} needs a delay (netem sends reordered packets at once, the rest late)")
    if rate is not None:
        bits = parse_rate(rate)
        if bits > _MAX_RATE_BITS:
            raise ValueError(f"rate {rate!r} is above netem's 32-bit limit")
        options["rate"] = bits // 8
    return options


def netem(
    ifname: str,
    *,
    delay: Duration | None = None,
    jitter: Duration | None = None,
    loss: float | None = None,
    rate: str | int | None = None,
    limit: int = 1000,
    corrupt: float | None = None,
    reorder: float | None = None,
) -> None:
    """Make ``ifname``'s root qdisc a netem: delay ± jitter, loss, rate, corruption, reordering.

    ``delay`` and ``jitter`` are durations ("40ms"); ``loss`` a
    probability between 0 and 1 for each packet; ``rate`` a tc rate (netem
    then shapes as well, since netem replaces any tbf from
    :func:`rate_limit`); ``limit`` the queue length in packets;
    ``corrupt`` the probability that a packet gets one random bit flipped;
    ``reorder`` the probability that a packet is sent at once instead of
    after the delay, overtaking the ones before it (it needs a delay).
    Check :func:`netem_available` first: without ``sch_netem`` the kernel
    refuses with ENOENT.  :func:`clear_qdisc` removes it.
    """
    options = _netem_options(delay, jitter, loss, rate, limit, corrupt, reorder)
    given = (
        ("delay", delay),
        ("jitter", jitter),
        ("loss", loss),
        ("rate", rate),
        ("corrupt", corrupt),
        ("reorder", reorder),
    )
    asked = ", ".join(f"{key}={value!r}" for key, value in given if value is not None)
    doing = f"making netem ({asked or 'no impairment'}) the root qdisc of {ifname!r}"
    _replace_root_netem(_ifindex(ifname, doing), options, doing)
