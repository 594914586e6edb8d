"""``impair()``: rate, delay, jitter, loss, duplication, corruption and reordering on a link or segment, for real.

Each impairment acts at a set of *points*, ``(namespace, interface, roles)``:
the two ends of a veth (every role), or for a segment the bridge ports
(rate, delay, loss) and the members' interfaces (rate, duplicate).  A packet
crosses the loss, delay and duplicate points of a link exactly once per
direction.  At each point:

* ``rate``: a token bucket (``tbf``) as the egress queue discipline, so each
  direction is shaped to the rate (tbf counts whole frames, as tc does).  On
  a segment both the member's interface (what it sends, with the local
  back-pressure a real NIC gives TCP) and its bridge port (what it
  receives) are shaped, as on a switch whose ports run at that rate;
* ``delay``/``jitter``: ``netem`` as the egress queue discipline (with the
  rate, if any, as netem's own rate), so each direction is delayed by
  ``delay``: a round trip takes twice as long.  Kernels without
  ``sch_netem`` (this project's machine among them) raise
  ``FeatureUnavailable`` (feature ``netem``, probed once per process when
  first asked for), which the pytest plugin turns into a skip, or a failure
  under ``--netns-require-features=netem``; a delay is never imitated with
  anything else;
* ``loss``: an nftables ``netdev`` ingress rule that drops each arriving
  frame with the probability, after the sender's device accepted it, so the
  sender never sees an error (ARP and neighbour discovery are lost too, as
  on a real lossy wire);
* ``duplicate``: nftables ``dup`` on the sender's postrouting hook (``ip``
  and ``ip6`` tables: the kernel has no ``dup`` for ``inet``), a copy of
  each unicast IP packet to its own next hop out of the same device, so the
  copy crosses the link as the original does.  No netem: on Linux 5.15 the
  netdev egress hook does not exist (5.16+), and a netdev ingress ``dup``
  can only send the copy back where it came from;
* ``corrupt``/``reorder``: netem, as delay is (``reorder`` needs a
  ``delay``: netem sends the reordered packets at once and delays the rest).

Impairments stack: a new one replaces what the link does until it is
reverted, and reverting it restores the one before (or a clean link).
Input is validated before anything is changed; a failure half-way puts the
points back as they were.
"""

from __future__ import annotations

import errno
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._kernel.handle import handle_of
from ..errors import FeatureUnavailable, KernelError

if TYPE_CHECKING:
    from ..namespace import Namespace

Point = tuple["Namespace", str, frozenset[str]]
#: What a point does: shape the rate, delay (netem: also corrupt, reorder), drop for loss, copy for duplicate.
ALL_ROLES = frozenset({"rate", "delay", "loss", "duplicate"})
#: A bridge port: no IP stack of its own to copy packets with.
PORT_ROLES = frozenset({"rate", "delay", "loss"})
#: A member's interface on a segment: what it sends is shaped and copied there.
MEMBER_ROLES = frozenset({"rate", "duplicate"})

#: tbf's rate is a u32 of bytes per second.
MAX_RATE_BITS = (2**32 - 1) * 8

_netem_reason: list[str | None] = []
_netem_lock = threading.Lock()


def netem_unavailable_reason() -> str | None:
    """Why netem cannot be used here (probed once per process), or None."""
    from .._kernel import tc as _tc

    with _netem_lock:
        if not _netem_reason:
            _netem_reason.append(_tc.netem_unavailable_reason())
        return _netem_reason[0]


@dataclass(frozen=True)
class Settings:
    """A validated impairment: rate in bit/s, delay and jitter in seconds, the others probabilities."""

    rate: int | None = None
    delay: float | None = None
    jitter: float | None = None
    loss: float | None = None
    duplicate: float | None = None
    corrupt: float | None = None
    reorder: float | None = None
    #: The values as the caller wrote them, for messages and ``repr``.
    asked: str = ""

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay or self.jitter or self.corrupt or self.reorder)


#: Probabilities, with what each one means in the error message.
_FRACTIONS = {
    "loss": "of packets are lost",
    "duplicate": "of packets arrive twice",
    "corrupt": "of packets get a flipped bit",
    "reorder": "of packets skip the delay and overtake",
}


def validate(
    *,
    rate: object = None,
    delay: object = None,
    jitter: object = None,
    loss: object = None,
    duplicate: object = None,
    corrupt: object = None,
    reorder: object = None,
) -> Settings:
    """Check every value (ValueError naming the bad one) before the kernel is touched."""
    from .._kernel import tc as _tc

    fractions = {"loss": loss, "duplicate": duplicate, "corrupt": corrupt, "reorder": reorder}
    if rate is None and delay is None and jitter is None and all(v is None for v in fractions.values()):
        raise ValueError("impair() needs at least one of rate=, delay=, jitter=, loss=, duplicate=, corrupt=, reorder=")
    bits = None
    if rate is not None:
        bits = _tc.parse_rate(rate)  # type: ignore[arg-type]
        if bits > MAX_RATE_BITS:
            raise ValueError(f"rate {rate!r} is above the 34gbit that tbf and netem can express")
    delay_s = _tc.parse_duration(delay) if delay is not None else None  # type: ignore[arg-type]
    jitter_s = _tc.parse_duration(jitter) if jitter is not None else None  # type: ignore[arg-type]
    if jitter_s:
        if not delay_s:
            raise ValueError(f"jitter {jitter!r} needs a delay (the delay varies by up to the jitter)")
        if jitter_s > delay_s:
            raise ValueError(
                f"jitter {jitter!r} is larger than delay {delay!r} (a packet cannot arrive before it was sent)"
            )
    for name, value, seconds in (("delay", delay, delay_s), ("jitter", jitter, jitter_s)):
        if seconds is not None and seconds > 60:
            raise ValueError(f"{name} {value!r} is longer than a minute; netem cannot express it")
    checked: dict[str, float | None] = {}
    for name, value in fractions.items():
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0 <= value <= 1
        ):
            raise ValueError(f"{name} {value!r} is not a fraction between 0 and 1 (0.1 means 10 % {_FRACTIONS[name]})")
        checked[name] = None if value is None else float(value)
    if reorder and not delay_s:
        raise ValueError(
            f"reorder {reorder!r} needs a delay: netem sends the reordered packets at once and delays the others"
        )
    given = (("rate", rate), ("delay", delay), ("jitter", jitter), *fractions.items())
    asked = ", ".join(f"{k}={v!r}" for k, v in given if v is not None)
    fraction = checked.get
    return Settings(
        bits,
        delay_s,
        jitter_s,
        fraction("loss"),
        fraction("duplicate"),
        fraction("corrupt"),
        fraction("reorder"),
        asked,
    )


def check_available(settings: Settings) -> None:
    """Raise FeatureUnavailable when the running kernel cannot do what ``settings`` asks."""
    if settings.needs_netem:
        reason = netem_unavailable_reason()
        if reason is not None:
            raise FeatureUnavailable(
                f"impair({settings.asked}): delay, jitter, corrupt and reorder need the kernel's netem queue "
                f"discipline (sch_netem), and {reason}; rate (tbf), loss and duplicate (nftables) work without it",
                feature="netem",
            )


def _apply_point(ns: Namespace, ifname: str, roles: frozenset[str], settings: Settings | None) -> None:
    """Make one point do exactly its part of ``settings`` (None: a clean link)."""
    from .._kernel import tc as _tc
    from . import rules as _rules

    what = f"{ns.name}:{ifname}"
    doing = f"impair({settings.asked}) on {what}" if settings is not None else f"clearing the impairment of {what}"
    netem = settings is not None and settings.needs_netem and "delay" in roles
    rate = settings.rate if settings is not None and "rate" in roles else None
    with handle_of(ns).entered():
        try:
            if netem:
                assert settings is not None
                _tc.netem(
                    ifname,
                    delay=settings.delay,
                    jitter=settings.jitter,
                    rate=rate,
                    corrupt=settings.corrupt,
                    reorder=settings.reorder,
                )
            elif rate is not None:
                _tc.rate_limit(ifname, rate)
            else:
                _tc.clear_qdisc(ifname)
        except KernelError as exc:
            if exc.errno == errno.ENODEV:
                raise _missing_interface(ns, ifname, doing, exc) from None
            if exc.errno in (errno.ENOENT, errno.EOPNOTSUPP) and settings is not None:
                kind = "netem" if netem else "tbf"
                raise FeatureUnavailable(
                    f"impair({settings.asked}) on {what}: the running kernel has no sch_{kind} ({exc})", feature=kind
                ) from None
            raise KernelError(exc.errno or errno.EIO, f"{doing}: {exc.doing}", exc.detail) from None
        if "loss" in roles:
            try:
                if settings is not None and settings.loss:
                    _rules.drop_ingress(ifname, settings.loss)
                else:
                    _rules.ingress_drop_table(ifname).remove()
            except KernelError as exc:
                if exc.errno == errno.ENODEV:
                    raise _missing_interface(ns, ifname, doing, exc) from None
                if exc.errno == errno.EOPNOTSUPP and settings is not None:
                    raise FeatureUnavailable(
                        f"impair({settings.asked}) on {what}: loss needs nftables netdev ingress chains "
                        f"(nf_tables with CONFIG_NF_TABLES_NETDEV), which the running kernel refused: {exc}",
                        feature="nft-ingress",
                    ) from None
                raise KernelError(exc.errno or errno.EIO, f"{doing}: {exc.doing}", exc.detail) from None
        if "duplicate" in roles:
            try:
                if settings is not None and settings.duplicate:
                    _rules.duplicate_egress(ifname, settings.duplicate)
                else:
                    for table in _rules.egress_duplicate_tables(ifname):
                        table.remove()
            except KernelError as exc:
                if exc.errno == errno.ENODEV:
                    raise _missing_interface(ns, ifname, doing, exc) from None
                if exc.errno in (errno.EOPNOTSUPP, errno.ENOENT) and settings is not None:
                    raise FeatureUnavailable(
                        f"impair({settings.asked}) on {what}: duplicate needs nftables dup for IPv4 and IPv6 "
                        f"(nft_dup_ipv4, nft_dup_ipv6) and rt, which the running kernel refused: {exc}",
                        feature="nft-dup",
                    ) from None
                raise KernelError(exc.errno or errno.EIO, f"{doing}: {exc.doing}", exc.detail) from None


def _missing_interface(ns: Namespace, ifname: str, doing: str, error: KernelError) -> KernelError:
    """ENODEV for ``ifname`` as the namespace words it (naming the interfaces it has), after ``doing``."""
    try:
        ns._index(ifname)
    except KernelError as missing:
        return KernelError(missing.errno or errno.ENODEV, f"{doing}: {missing.doing}", missing.detail)
    return KernelError(error.errno or errno.ENODEV, f"{doing}: {error.doing}", error.detail)  # it came back


@dataclass(eq=False)
class Impairment:
    """An active impairment of a link or segment.

    It is in force from the ``impair(...)`` call on.  Use it as a context
    manager to end it with the block, or call ``revert()``; otherwise it
    lasts until the topology is torn down.
    """

    settings: Settings
    _shaper: Shaper = field(repr=False)
    active: bool = True

    @property
    def rate(self) -> int | None:
        """The rate in bit/s (None: not limited)."""
        return self.settings.rate

    @property
    def delay(self) -> float | None:
        """The one-way delay in seconds, per direction."""
        return self.settings.delay

    @property
    def jitter(self) -> float | None:
        return self.settings.jitter

    @property
    def loss(self) -> float | None:
        return self.settings.loss

    @property
    def duplicate(self) -> float | None:
        return self.settings.duplicate

    @property
    def corrupt(self) -> float | None:
        return self.settings.corrupt

    @property
    def reorder(self) -> float | None:
        return self.settings.reorder

    def revert(self) -> None:
        """End this impairment (the one before it, if any, applies again). Idempotent."""
        if self.active:
            self._shaper.revert(self)

    def __enter__(self) -> Impairment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.revert()

    def __repr__(self) -> str:
        state = "active" if self.active else "reverted"
        return f"<Impairment {self.settings.asked} on {self._shaper.what} ({state})>"


class Shaper:
    """The impairments of one link or segment: a stack whose top is in force at every point."""

    def __init__(self, points: Callable[[], Sequence[Point]], what: str) -> None:
        self._points = points
        self.what = what
        self._stack: list[Impairment] = []

    def impair(self, **values: Any) -> Impairment:
        settings = validate(**values)
        check_available(settings)
        previous = self._stack[-1].settings if self._stack else None
        self._set(settings, fallback=previous)
        impairment = Impairment(settings, self)
        self._stack.append(impairment)
        return impairment

    @property
    def impairments(self) -> list[Impairment]:
        """The impairments not yet reverted, oldest first (the last one is in force)."""
        return list(self._stack)

    def refresh(self) -> None:
        """Apply the impairment in force again (after an MTU change: tbf's burst depends on it)."""
        if self._stack:
            top = self._stack[-1].settings
            self._set(top, fallback=top)

    def revert(self, impairment: Impairment) -> None:
        was_top = self._stack[-1] is impairment
        self._stack.remove(impairment)
        impairment.active = False
        if was_top:
            self._set(self._stack[-1].settings if self._stack else None, fallback=None)

    def _set(self, settings: Settings | None, *, fallback: Settings | None) -> None:
        done: list[Point] = []
        try:
            for ns, ifname, roles in self._points():
                if ns.closed:
                    continue
                _apply_point(ns, ifname, roles, settings)
                done.append((ns, ifname, roles))
        except BaseException:
            for ns, ifname, roles in done:  # put back what was there
                try:
                    _apply_point(ns, ifname, roles, fallback)
                except Exception:  # the original error is the one to report
                    pass
            raise
