"""The shared bridge primitives (pytest_netns._net.bridge): port names, as every model gets them."""

from __future__ import annotations

from pytest_netns import Topology


def test_a_port_named_after_a_member_is_never_reused_as_a_fallback_name() -> None:
    """A member called "p1" takes that name; the next member, whose name is too long, gets the next free "p<n>"."""
    with Topology() as net:
        short, long = net.add("p1"), net.add("a-name-too-long-for-a-port")
        segment = net.segment([short, long])
        assert [segment.port(short), segment.port(long)] == ["p1", "p2"]
        assert sorted(segment.namespace.interfaces()) == ["br0", "lo", "p1", "p2"]
        assert short.ping(str(long.ip))
