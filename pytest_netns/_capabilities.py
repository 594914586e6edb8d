"""What this machine can do, for the report header and ``doctor``."""

from __future__ import annotations

import os
import platform


def header_line() -> str:
    """One line: who we are and whether namespaces work here."""
    from ._kernel import Capabilities, unavailable_reason

    caps = Capabilities.current()
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    held = [name for name in ("CAP_NET_ADMIN", "CAP_SYS_ADMIN") if name not in caps.missing()]
    reason = unavailable_reason()
    state = "namespaces: available" if reason is None else f"namespaces: UNAVAILABLE ({reason})"
    return f"netns: {who}, {'+'.join(held) or 'no network capabilities'}, {state}, kernel {platform.release()}"
