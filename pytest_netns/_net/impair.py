"""``impair()``: rate, delay, jitter and loss on a link or segment, for real.

Each impairment acts at a set of *points*, ``(namespace, interface, roles)``:
the two ends of a veth (every role), or for a segment the bridge ports
(every role) and the members' interfaces (rate only).  A packet crosses the
loss and delay points of a link exactly once per direction.  At each point:

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
  on a real lossy wire).

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
#: What a point does: shape the rate, delay (netem), drop for loss.
ALL_ROLES = frozenset({"rate", "delay", "loss"})
RATE_ONLY = frozenset({"rate"})

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
    """A validated impairment: rate in bit/s, delay and jitter in seconds, loss a probability."""

    rate: int | None = None
    delay: float | None = None
    jitter: float | None = None
    loss: float | None = None
    #: The values as the caller wrote them, for messages and ``repr``.
    asked: str = ""

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay or self.jitter)


def validate(*, rate: object = None, delay: object = None, jitter: object = None, loss: object = None) -> Settings:
    """Check every value (ValueError naming the bad one) before the kernel is touched."""
    from .._kernel import tc as _tc

    if rate is None and delay is None and jitter is None and loss is None:
        raise ValueError("impair() needs at least one of rate=, delay=, jitter=, loss=")
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
    if loss is not None and (
        isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss) or not 0 <= loss <= 1
    ):
        raise ValueError(f"loss {loss!r} is not a fraction between 0 and 1 (0.1 means 10 % of packets are lost)")
    asked = ", ".join(
        f"{k}={v!r}" for k, v in (("rate", rate), ("delay", delay), ("jitter", jitter), ("loss", loss)) if v is not None
    )
    return Settings(bits, delay_s, jitter_s, float(loss) if loss is not None else None, asked)


def check_available(settings: Settings) -> None:
    """Raise FeatureUnavailable when the running kernel cannot do what ``settings`` asks."""
    if settings.needs_netem:
        reason = netem_unavailable_reason()
        if reason is not None:
            raise FeatureUnavailable(
                f"impair({settings.asked}): delay and jitter need the kernel's netem queue discipline "
                f"(sch_netem), and {reason}; rate (tbf) and loss (nftables) work without it",
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
                _tc.netem(ifname, delay=settings.delay, jitter=settings.jitter, rate=rate)
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
        if "loss" not in roles:
            return
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
