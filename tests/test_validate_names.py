"""The one name validator (``_kernel.validate.check_name``) and its rules: no kernel needed."""

from __future__ import annotations

import pytest

from pytest_netns._kernel import validate
from pytest_netns._kernel.validate import (
    DNS1035_LABEL,
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    HOST,
    IFNAME,
    NAMESPACE,
    NFT,
    NameRule,
    check_name,
)

ACCEPTED: list[tuple[NameRule, str]] = [
    (NAMESPACE, "a"),
    (NAMESPACE, "x" * 64),
    (NAMESPACE, "with space:and colon"),
    (HOST, "client"),
    (HOST, "r1.site_2-b"),
    (HOST, "_x"),
    (HOST, "x" * 63),
    (IFNAME, "eth0"),
    (IFNAME, "x" * 15),
    (IFNAME, "é" * 7),  # 14 bytes
    (IFNAME, "..."),
    (NFT, "pytest_netns_nat"),
    (NFT, "x" * 64),
    (DNS1123_LABEL, "web-0"),
    (DNS1123_LABEL, "0web"),
    (DNS1123_LABEL, "x" * 63),
    (DNS1123_SUBDOMAIN, "web.default.svc"),
    (DNS1123_SUBDOMAIN, "0"),
    (DNS1123_SUBDOMAIN, ".".join(["x" * 63] * 3) + "." + "x" * 61),  # 253 characters, the most
    (DNS1035_LABEL, "web"),
    (DNS1035_LABEL, "w-1"),
]

REFUSED: list[tuple[NameRule, str]] = [
    (NAMESPACE, ""),
    (NAMESPACE, "a/b"),
    (NAMESPACE, "x" * 65),
    (HOST, ""),
    (HOST, "bad name"),
    (HOST, "-x"),
    (HOST, ".x"),
    (HOST, "x" * 64),
    (HOST, "a#b"),
    (IFNAME, ""),
    (IFNAME, "x" * 16),
    (IFNAME, "é" * 8),  # 8 characters, 16 bytes: the kernel counts bytes
    (IFNAME, "eth0:1"),
    (IFNAME, "a/b"),
    (IFNAME, "a b"),
    (IFNAME, "a\tb"),
    (IFNAME, "a\vb"),  # isspace() in the kernel too
    (IFNAME, "a\0b"),
    (IFNAME, "."),
    (IFNAME, ".."),
    (IFNAME, "\udc80"),  # a lone surrogate cannot be encoded for the kernel
    (NFT, "x" * 65),
    (NFT, "-x"),
    (NFT, "a b"),
    (DNS1123_LABEL, "Web"),
    (DNS1123_LABEL, "web-"),
    (DNS1123_LABEL, "a.b"),
    (DNS1123_LABEL, "x" * 64),
    (DNS1123_SUBDOMAIN, "a..b"),
    (DNS1123_SUBDOMAIN, "a.-b"),
    (DNS1123_SUBDOMAIN, ".a"),
    (DNS1123_SUBDOMAIN, "A.b"),
    (DNS1123_SUBDOMAIN, ".".join(["x" * 63] * 3) + "." + "x" * 62),  # 254 characters
    (DNS1123_SUBDOMAIN, "a.b\n"),
    (DNS1035_LABEL, "1web"),
    (DNS1035_LABEL, "web-"),
    (DNS1035_LABEL, "web.x"),
]


@pytest.mark.parametrize(("rule", "value"), ACCEPTED, ids=[f"{r.title}:{v[:20]!r}" for r, v in ACCEPTED])
def test_accepted(rule: NameRule, value: str) -> None:
    assert check_name(value, what="name", rule=rule) == value


@pytest.mark.parametrize(("rule", "value"), REFUSED, ids=[f"{r.title}:{v[:20]!r}" for r, v in REFUSED])
def test_refused_naming_the_value_and_the_rule(rule: NameRule, value: str) -> None:
    with pytest.raises(ValueError) as info:
        check_name(value, what="thing name", rule=rule)
    message = str(info.value)
    assert message.startswith(f"thing name {value!r} is not {rule.title} (")
    assert rule.text in message


@pytest.mark.parametrize("value", [None, 7, b"eth0", ["eth0"]])
def test_a_name_must_be_a_string(value: object) -> None:
    with pytest.raises(ValueError) as info:
        validate.ifname(value)
    assert str(info.value).startswith(f"interface name {value!r} is not a valid interface name (")


@pytest.mark.parametrize("value", ["123", "10.1", "1.2.3.4", "0x1", "0xa.0xb", "08"])
def test_hosts_file_names_that_a_resolver_reads_as_an_address_are_refused(value: str) -> None:
    """'0x1' is a valid host name by the letters, but getaddrinfo("0x1") answers 0.0.0.1 without a lookup."""
    assert check_name(value, what="name", rule=HOST) == value
    with pytest.raises(ValueError) as info:
        check_name(value, what="name", rule=HOST, hosts_file=True)
    assert str(info.value).startswith(f"name {value!r} reads as an IPv4 address")


@pytest.mark.parametrize("value", ["0x1g", "1e3", "web1", "a.1"])
def test_hosts_file_names_that_are_not_addresses_pass(value: str) -> None:
    assert check_name(value, what="name", rule=HOST, hosts_file=True) == value
