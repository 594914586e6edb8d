"""Docker's networks; the code lives in ``pytest_netns.presets.docker``.

This module keeps ``import pytest_netns.docker`` (the 0.1 spelling) working.
"""

from __future__ import annotations

from .presets.docker import DOCKER_NETWORK, OUTSIDE_NETWORK, Container, DockerHost, Network, PublishedPort

__all__ = ["DOCKER_NETWORK", "OUTSIDE_NETWORK", "Container", "DockerHost", "Network", "PublishedPort"]
