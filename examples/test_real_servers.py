"""Real programs in namespaces: nginx, dnsmasq (DHCP and DNS), iperf3, curl.

Each test is skipped, with the reason, where the program is not installed
(``.ci/run`` installs them from Debian's packages without starting any
service: ``apt-get install nginx-light dnsmasq-base iperf3 curl``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed on this machine")
    return path


NGINX_CONF = """
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 10.0.0.2:8080;
        listen [fd00::2]:8080;
        location / {{ root {prefix}/www; }}
    }}
}}
"""


def test_nginx_serves_curl_over_both_families(netns_pair, tmp_path):
    nginx = need("nginx")
    curl = need("curl")
    a, b = netns_pair
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("served by nginx\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=tmp_path))
    b.popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
    a.wait_for_port("10.0.0.2", 8080)
    for url in ("http://10.0.0.2:8080/", "http://[fd00::2]:8080/"):
        assert a.run([curl, "-sS", "--max-time", "5", url]).stdout == "served by nginx\n"
    log = (tmp_path / "access.log").read_text()
    assert "10.0.0.1" in log and "fd00::1" in log


@pytest.fixture
def dnsmasq(netns_pair, tmp_path):
    """dnsmasq in b: DNS for *.test and DHCP on b's eth0 (10.0.0.50-60)."""
    program = need("dnsmasq")
    a, b = netns_pair
    server = b.popen([
        program, "--no-daemon", "--conf-file=/dev/null", "--user=root", "--group=root",
        "--interface=eth0", "--bind-interfaces", "--except-interface=lo",
        "--no-resolv", "--no-hosts", "--host-record=web.test,10.0.0.80,fd00::80",
        f"--dhcp-leasefile={tmp_path}/leases", f"--pid-file={tmp_path}/dnsmasq.pid",
        "--dhcp-range=10.0.0.50,10.0.0.60,255.255.255.0,1h", "--dhcp-authoritative",
        "--log-facility=-", "--log-dhcp",
    ])
    # Ready once it answers DNS on its address.
    deadline = time.monotonic() + 10
    while resolve(a, "web.test", "A") is None:
        assert server.poll() is None, "dnsmasq exited"
        assert time.monotonic() < deadline, "dnsmasq did not answer DNS within 10 s"
        time.sleep(0.05)
    return a, b


def resolve(ns, name: str, qtype: str) -> str | None:
    """One DNS query to 10.0.0.2 from inside ``ns``, with scapy building and parsing it."""
    from scapy.layers.dns import DNS, DNSQR

    with ns:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(0.5)
        sock.sendto(bytes(DNS(id=7, rd=1, qd=DNSQR(qname=name, qtype=qtype))), ("10.0.0.2", 53))
        try:
            reply = DNS(sock.recv(512))
        except OSError:
            return None
    answers = [reply.an[i] for i in range(reply.ancount)] if reply.ancount else []
    return str(answers[0].rdata) if answers else None


def test_dnsmasq_answers_dns(dnsmasq):
    a, _ = dnsmasq
    assert resolve(a, "web.test", "A") == "10.0.0.80"
    assert resolve(a, "web.test", "AAAA") == "fd00::80"


def test_dnsmasq_leases_an_address_over_dhcp(dnsmasq):
    pytest.importorskip("scapy")
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    a, _ = dnsmasq
    mac = a.mac("eth0")
    xid = 0x1234
    chaddr = bytes.fromhex(mac.replace(":", ""))

    def dhcp(kind: str, *options):
        return (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
                / UDP(sport=68, dport=67) / BOOTP(chaddr=chaddr, xid=xid, flags=0x8000)
                / DHCP(options=[("message-type", kind), *options, "end"]))

    def reply_of(kind: int):
        return lambda p: DHCP in p and p[BOOTP].xid == xid and ("message-type", kind) in p[DHCP].options

    with a.capture("eth0") as cap:
        a.sendp(dhcp("discover"), "eth0")
        offer = cap.wait(lfilter=reply_of(2), timeout=5)[0]  # DHCPOFFER
    offered = offer[BOOTP].yiaddr
    assert offered.startswith("10.0.0.") and 50 <= int(offered.split(".")[-1]) <= 60
    with a.capture("eth0") as cap:
        a.sendp(dhcp("request", ("requested_addr", offered), ("server_id", "10.0.0.2")), "eth0")
        ack = cap.wait(lfilter=reply_of(5), timeout=5)[0]  # DHCPACK
    assert ack[BOOTP].yiaddr == offered
    a.add_address("eth0", f"{offered}/24")
    assert a.ping("10.0.0.2")


def test_iperf3_measures_throughput_across_the_pair(netns_pair):
    iperf3 = need("iperf3")
    a, b = netns_pair
    b.popen([iperf3, "--server", "--bind", "10.0.0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # iperf3 serves one client at a time and takes any connection for one, so
    # no port probe: the client itself is retried until the server listens.
    deadline = time.monotonic() + 10
    while True:
        run = a.run([iperf3, "--client", "10.0.0.2", "--time", "1", "--json"], check=False)
        report = json.loads(run.stdout)
        if "error" not in report:
            break
        assert time.monotonic() < deadline, report["error"]
        time.sleep(0.05)
    received = report["end"]["sum_received"]
    print(f"iperf3 over the veth pair: {received['bits_per_second'] / 1e9:.2f} Gbit/s")
    assert received["bytes"] > 0
