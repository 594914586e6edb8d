"""``python -m pytest_netns doctor|list|cleanup`` (installed as ``pytest-netns`` too)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pytest-netns`` command."""
    from ._cli.main import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
