"""The one netlink transport (``_kernel/netlink.py``) and the bridge encoder, without a kernel to talk to.

A real socket is opened (rtnetlink needs no privilege to open) and its
``sock`` is replaced by a script of answers, so that chunking, framing,
extended acks and silence are exercised exactly; the kernel's side of the
same paths is covered by test_errors.py and test_nft_tc.py.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from pytest_netns import KernelError
from pytest_netns._kernel import netlink, rtnl
from pytest_netns._kernel.nft import NftError, NftSocket


def _error(seq: int, code: int, text: str = "", capped: bool = True) -> bytes:
    """An NLMSG_ERROR answering ``seq`` with ``-code`` (0: an ack) and, with ``text``, an extended ack."""
    request = struct.pack("=IHHII", 20, 16, 5, seq, 0) + bytes(4)  # what the kernel echoes back
    body = struct.pack("=i", -code) + (request[:16] if capped else request)
    flags = netlink.NLM_F_CAPPED if capped else 0
    if text:
        flags |= netlink.NLM_F_ACK_TLVS
        body += netlink.attr_str(netlink.NLMSGERR_ATTR_MSG, text)
    return struct.pack("=IHHII", 16 + len(body), netlink.NLMSG_ERROR, flags, seq, 0) + body


class Script:
    """Stands in for the kernel: ``answer(seqs)`` gives the reply to each write (a list of datagrams)."""

    def __init__(self, answer: Callable[[list[int]], list[bytes]]) -> None:
        self.answer = answer
        self.writes: list[list[int]] = []
        self.queue: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        seqs = [seq for _kind, _flags, seq, _offset, _end in netlink.messages(data)]
        self.writes.append(seqs)
        self.queue += self.answer(seqs)

    def recv(self, size: int) -> bytes:
        if not self.queue:
            raise TimeoutError("timed out")
        return self.queue.pop(0)

    def close(self) -> None:
        pass


def scripted(
    answer: Callable[[list[int]], list[bytes]], cls: type[netlink.NetlinkSocket] = rtnl.RtnlSocket
) -> tuple[netlink.NetlinkSocket, Script]:
    """A real socket of ``cls`` whose kernel side is ``answer`` (rtnetlink ones wait 1 s at most)."""
    sock = rtnl.RtnlSocket(timeout=1.0) if cls is rtnl.RtnlSocket else cls()
    sock.sock.close()
    script = Script(answer)
    sock.sock = script  # type: ignore[assignment]
    return sock, script


def _requests(count: int) -> list[netlink.Request]:
    return [rtnl.set_link(1, mtu=1500, doing=f"request {i}") for i in range(count)]


def test_requests_go_out_in_writes_of_128_and_every_ack_is_read() -> None:
    sock, script = scripted(lambda seqs: [b"".join(_error(seq, 0) for seq in seqs)])
    sock.execute(_requests(300))
    assert [len(write) for write in script.writes] == [128, 128, 44]


def test_the_first_refusal_is_raised_with_its_doing_and_the_kernels_text_after_all_acks() -> None:
    def answer(seqs: list[int]) -> list[bytes]:
        return [_error(seq, errno.EEXIST if i in (3, 5) else 0, "File exists here") for i, seq in enumerate(seqs)]

    sock, script = scripted(answer)
    with pytest.raises(KernelError) as info:
        sock.execute(_requests(8))
    assert (info.value.errno, info.value.doing, info.value.detail) == (errno.EEXIST, "request 3", "File exists here")
    assert script.queue == []  # the acks after the failure were read too


def test_ignored_errors_count_as_success() -> None:
    sock, _ = scripted(lambda seqs: [_error(seq, errno.ENODEV) for seq in seqs])
    sock.execute(_requests(2), ignore=[errno.ENODEV])


def test_extended_ack_after_an_uncapped_request_is_found() -> None:
    sock, _ = scripted(lambda seqs: [_error(seqs[0], errno.EINVAL, "bad attribute", capped=False)])
    with pytest.raises(KernelError, match="bad attribute"):
        sock.execute(_requests(1))


def test_silence_is_etimedout_naming_the_request_waited_for() -> None:
    sock, _ = scripted(lambda seqs: [_error(seqs[0], 0)])  # the second request is never answered
    with pytest.raises(KernelError) as info:
        sock.execute(_requests(2))
    assert (info.value.errno, info.value.doing) == (errno.ETIMEDOUT, "request 1")
    assert info.value.detail == "no answer from the kernel within 1 s"


def test_a_refused_batch_is_one_error_and_nothing_more_is_awaited() -> None:
    """nfnetlink without CAP_NET_ADMIN answers only the begin message (docs/kernel-facts.md)."""
    sock, script = scripted(lambda seqs: [_error(seqs[0], errno.EPERM)], NftSocket)
    begin = netlink.Request(0x10, 0, bytes(4), "batch")
    end = netlink.Request(0x11, 0, bytes(4), "batch end")
    with pytest.raises(NftError) as info:
        sock.execute(_requests(3), frame=(begin, end))
    assert (info.value.errno, info.value.request) == (errno.EPERM, "batch")
    assert [len(write) for write in script.writes] == [5]  # begin, 3 requests, end: one write


def test_a_framed_batch_is_never_chunked() -> None:
    sock, script = scripted(lambda seqs: [_error(seq, 0) for seq in seqs[1:-1]], NftSocket)
    frame = (netlink.Request(0x10, 0, bytes(4), "batch"), netlink.Request(0x11, 0, bytes(4), "batch end"))
    sock.execute(_requests(200), frame=frame)
    assert [len(write) for write in script.writes] == [202]


def test_a_dump_collects_every_part_until_done() -> None:
    def answer(seqs: list[int]) -> list[bytes]:
        part = struct.pack("=IHHII", 20, 16, netlink.NLM_F_MULTI, seqs[0], 0) + bytes(4)
        done = struct.pack("=IHHII", 20, netlink.NLMSG_DONE, netlink.NLM_F_MULTI, seqs[0], 0) + bytes(4)
        return [part + part, part + done]

    sock, _ = scripted(answer)
    assert len(sock.dump_raw(netlink.Request(18, 0, bytes(16), "listing"))) == 3


# -- the one bridge encoder ----------------------------------------------------------------------------------


def _decoded(request: netlink.Request) -> ifinfmsg:
    header = struct.pack("=IHHII", 16 + len(request.body), request.kind, 0, 0, 0)
    msg = ifinfmsg(header + request.body)
    msg.decode()
    return msg


def test_new_bridge_sets_what_each_model_asks_and_leaves_the_rest_to_the_kernel() -> None:
    switch = _decoded(
        rtnl.new_bridge(
            "br0",
            index=7,
            mtu=9000,
            promisc=True,
            mcast_snooping=False,
            nf_call_iptables=False,
            nf_call_ip6tables=False,
            nf_call_arptables=False,
        )
    )
    assert (switch["index"], switch["flags"] & 0x101, switch.get_attr("IFLA_MTU")) == (7, 0x101, 9000)
    data = switch.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert {name: data.get_attr(name) for name in ("IFLA_BR_STP_STATE", "IFLA_BR_FORWARD_DELAY")} == {
        "IFLA_BR_STP_STATE": 0,
        "IFLA_BR_FORWARD_DELAY": 0,
    }
    for name in ("IFLA_BR_MCAST_SNOOPING", "IFLA_BR_NF_CALL_IPTABLES", "IFLA_BR_NF_CALL_IP6TABLES"):
        assert data.get_attr(name) == 0, name
    assert data.get_attr("IFLA_BR_NF_CALL_ARPTABLES") == 0

    plain = _decoded(rtnl.new_bridge("cni0", index=8, up=False, nf_call_iptables=True))
    data = plain.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert plain["flags"] == 0 and plain.get_attr("IFLA_MTU") is None
    assert data.get_attr("IFLA_BR_NF_CALL_IPTABLES") == 1
    assert data.get_attr("IFLA_BR_MCAST_SNOOPING") is None  # the kernel's default


def test_set_bridge_port_turns_hairpin_on() -> None:
    port = _decoded(rtnl.set_bridge_port(5, hairpin=True, doing="hairpin"))
    slave = port.get_attr("IFLA_LINKINFO")
    assert port["index"] == 5
    assert slave.get_attr("IFLA_INFO_SLAVE_DATA") is not None
