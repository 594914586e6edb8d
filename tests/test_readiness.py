"""The very first packet after setup is delivered: 1,000 setups in a row, IPv4 and IPv6.

A lost first ARP request or neighbour solicitation costs the kernel a 1 s
retransmit, so each datagram must arrive well within that (0.5 s here):
no retries, no sleeps.
"""

from __future__ import annotations

import socket

import pytest
from _servers import first_datagram_arrives

from pytest_netns._plugin.settings import NetworkSettings
from pytest_netns.namespace import close_all
from pytest_netns.presets.simple import build_pair

SETUPS = 1000


@pytest.mark.slow
def test_first_packet_delivered_in_every_one_of_1000_setups() -> None:
    lost = []
    for i in range(SETUPS):
        a, b = build_pair(NetworkSettings())
        try:
            if not first_datagram_arrives(a, b, "10.0.0.2", socket.AF_INET):
                lost.append((i, "IPv4"))
            if not first_datagram_arrives(b, a, "fd00::1", socket.AF_INET6):
                lost.append((i, "IPv6"))
        finally:
            close_all([a, b])
    assert lost == []
